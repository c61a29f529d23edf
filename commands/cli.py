"""The ``actorq`` command line: ``actorq train ...``, ``actorq serve SERVICE ...`` and
``actorq health HOST:PORT`` (the containers' healthcheck)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from actorq.config import ConfigError
from commands import carbon, procs

SERVICES = ("replay", "quantizer", "learner", "actor")
BENCHES = ("actor", "learner", "replay", "fuzz")
# The other commands: each module's main(argv) -> exit code, imported only when run
# (`actorq serve` imports no command).
COMMANDS = {
    "train": "commands.train.run",
    "attach": "commands.attach",
    "report": "commands.report",
    "presets": "commands.train.presets",
}


def serve(service: str, argv: Sequence[str]) -> int:
    """Run one service in this process until SIGTERM/SIGINT.

    When the launcher set ACTORQ_CARBON_DIR, codecarbon tracks the process
    to its end from a tracker started on a thread before the service is
    imported: its own seconds of set-up overlap the service's start instead of
    delaying it (start-up time is the first thing a user sees).
    """
    procs.die_with_parent_from_env()
    tracker = carbon.start_from_env()
    try:
        module = importlib.import_module(f"services.{service}.server")
        module.main(list(argv))
    except ConfigError as err:  # e.g. token or TLS settings: one sentence, no traceback
        print(f"actorq serve {service}: error: {err}", file=sys.stderr)
        return 2
    finally:
        if tracker is not None:
            tracker.stop()
    return 0


def health(argv: Sequence[str]) -> int:
    """``actorq health HOST:PORT``: exit 0 if the gRPC health service answers SERVING.

    What the compose healthchecks run (Kubernetes probes speak gRPC health
    natively). Uses TLS when ACTORQ_TLS_CA is set, like every ActorQ client.
    """
    from actorq.rpc import wait_healthy

    parser = argparse.ArgumentParser(prog="actorq health", description=health.__doc__)
    parser.add_argument("address", help="host:port of an ActorQ service")
    parser.add_argument("--service", default="", help="service name to check ('': the server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for SERVING")
    ns = parser.parse_args(list(argv))
    try:
        wait_healthy(ns.address, ns.timeout, service=ns.service)
    except TimeoutError as err:
        print(f"actorq health: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="actorq", description=__doc__)
    parser.add_argument(
        "command",
        choices=["train", "serve", "attach", "health", "bench", "report", "presets"],
        help="what to run",
    )
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "serve":
        if not rest or rest[0] not in SERVICES:
            parser.error(f"actorq serve needs one of {', '.join(SERVICES)}")
        return serve(rest[0], rest[1:])
    if command == "health":
        return health(rest)
    if command == "bench":
        # `actorq bench actor|replay ...` or `actorq bench --scenario NAME ...`.
        bench = rest[0] if rest and rest[0] in BENCHES else "e2e"
        module = importlib.import_module(f"commands.bench.{bench}")
        return int(module.main(rest[1:] if bench != "e2e" else rest) or 0)
    if command in COMMANDS:
        module = importlib.import_module(COMMANDS[command])
        return int(module.main(rest) or 0)
    parser.error(f"unknown command {command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
