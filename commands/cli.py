"""ActorQ: train with int8-quantized actors and a full-precision learner, then evaluate
and export the trained policy."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from actorq.config import ConfigError
from commands import carbon, procs

SERVICES = ("replay", "quantizer", "learner", "actor")
BENCHES = ("actor", "learner", "replay", "fuzz", "faults")
# The other commands: each module's main(argv) -> exit code, imported only when run
# (`actorq serve` imports no command).
COMMANDS = {
    "train": "commands.train.run",
    "attach": "commands.attach",
    "report": "commands.report",
    "eval": "commands.eval",
    "export": "commands.export",
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
    try:
        pinned = procs.pin_from_env()
    except ConfigError as err:
        print(f"actorq serve {service}: error: {err}", file=sys.stderr)
        return 2
    if pinned:
        print(f"actorq serve {service}: {pinned}", file=sys.stderr)
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


# One line per command for `actorq --help`.
SUMMARIES = {
    "train": "train on this machine: every service as a process, evaluated as it learns",
    "eval": "greedy episodes with a trained policy (onnxruntime only; --video)",
    "export": "copy a run's best policy (.onnx + model card) to deploy",
    "report": "plots and tables of bench (or train) runs",
    "bench": "fp32-vs-int8 scenarios and micro-benchmarks (actor, learner, replay, fuzz)",
    "serve": "run one service: replay, quantizer, learner or actor (what a container runs)",
    "attach": "follow, evaluate and summarize services started elsewhere",
    "health": "exit 0 if the gRPC service at HOST:PORT is SERVING",
    "presets": "the per-env settings `actorq train` picks by env id",
}


def serve_help() -> str:
    """``actorq serve --help``: the services, and where each one's settings are listed."""
    return (
        f"usage: actorq serve {{{','.join(SERVICES)}}} [settings]\n\n"
        "Run one ActorQ service in this process until SIGTERM/SIGINT.\n"
        "`actorq serve NAME --help` lists that service's settings (flags, ACTORQ_* variables,\n"
        "or keys of its section in --config FILE / ACTORQ_CONFIG)."
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-V"]):
        from actorq import __version__

        print(f"actorq {__version__}")
        return 0
    commands = "\n".join(f"  {name:<8} {line}" for name, line in SUMMARIES.items())
    parser = argparse.ArgumentParser(
        prog="actorq",
        description=__doc__,
        epilog=f"commands:\n{commands}\n\n`actorq COMMAND --help` for a command's flags; "
        "`actorq --version`.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command",
        choices=[
            "train",
            "serve",
            "attach",
            "health",
            "bench",
            "report",
            "eval",
            "export",
            "presets",
        ],
        help="what to run",
    )
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "serve":
        if not rest or rest[0] in ("-h", "--help"):
            print(serve_help())
            return 0 if rest else 2
        if rest[0] not in SERVICES:
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
