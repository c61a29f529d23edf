"""`actorq attach`: follow a run whose services were started by someone else.

What the ``coordinator`` of ``docker-compose.yml`` runs (and what a Kubernetes
Job could run): the services are already up (compose, a cluster), found by
address; this process waits for their health, evaluates the newest served
policy of the run's precision greedily as `actorq train` does, shows progress
(with the number of actors the learner heard from, which changes as actors are
scaled), stops at the target or budget, and writes to the run directory:

    DIR/summary.json   the run's results (env steps = transitions replay took in)
    DIR/metrics.jsonl  one JSON line of progress per poll
    DIR/evals.jsonl    every greedy evaluation
    DIR/report.md      `actorq report DIR` (tables and plots), unless --no-report

It starts and stops nothing: the services keep serving after it exits (with
compose, `docker compose up --exit-code-from coordinator` stops them too).
Energy is not measured here: each container would need its own tracker.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from actorq.config import ConfigError
from actorq.rpc import wait_healthy
from commands.train.args import TrainArgs, add_flags, load_train_args
from commands.train.monitor import Snapshot, Watch, answer
from commands.train.progress import result_line
from commands.train.summary import CarbonSummary, EvalFailure, EvalRecord, RunSummary, clear_results

log = logging.getLogger("actorq.attach")

# The `actorq train` settings that mean something for services started elsewhere.
FLAGS = (
    "env", "algo", "precision", "seed", "target_return", "max_env_steps", "max_seconds",
    "sustain", "eval_episodes", "startup_timeout_s", "config", "quiet",
)  # fmt: skip


@dataclass
class Addresses:
    """Where the running services listen (service names in compose or Kubernetes)."""

    replay: str
    quantizer: str
    learner: str


def wait_services(addrs: Addresses, timeout_s: float) -> None:
    """Wait for each service's health check; RuntimeError naming the one that never answered."""
    for name, address in asdict(addrs).items():
        try:
            wait_healthy(address, timeout_s)
        except TimeoutError as err:
            raise RuntimeError(f"{name}: {err}") from None


class Attached(Watch):
    """A run whose services someone else started. No actor is polled (replicas come and
    go): env steps are the transitions replay took in since attaching, one per actor
    env step, and the actor count is the learner's."""

    def __init__(self, args: TrainArgs, addrs: Addresses) -> None:
        super().__init__(args, Path(args.out), asdict(addrs))
        # Replay's count when we attached: a long-running table may predate this run.
        first = answer(self.replay.stats)
        self._inserted0 = first.inserted if first is not None else 0

    def env_steps(self, snap: Snapshot) -> int | None:
        return snap.replay.inserted - self._inserted0 if snap.replay is not None else None

    def summarize(
        self, models: Any, final: Mapping[str, EvalRecord | EvalFailure], wall_s: float
    ) -> RunSummary:
        summary = super().summarize(models, final, wall_s)
        counts = self.state.actor_counts
        summary.mode = "attached"
        summary.actors = max(counts) if counts else None
        summary.carbon = CarbonSummary(
            status="unavailable",
            reason="attached to services in other containers; none is tracked from here",
        )
        return summary


def follow(args: TrainArgs, addrs: Addresses) -> RunSummary:
    """Evaluate and monitor until target or budget; returns the summary (also written)."""
    out = Path(args.out)
    clear_results(out)
    wait_services(addrs, args.startup_timeout_s)
    watch = Attached(args, addrs)
    watch.evaluator.start()
    try:
        watch.monitor()
    except KeyboardInterrupt:
        watch.state.stop_reason = "interrupted"
        watch.progress.done()
    summary = watch.finish()
    summary.write(out)
    return summary


def parse_args(argv: Sequence[str]) -> tuple[TrainArgs, Addresses, bool]:
    """(settings, service addresses, whether to write the report)."""
    p = argparse.ArgumentParser(prog="actorq attach", description=__doc__.split("\n\n")[0])
    p.add_argument("--replay-address", required=True, help="host:port of replay")
    p.add_argument("--quantizer-address", required=True, help="host:port of the quantizer")
    p.add_argument("--learner-address", required=True, help="host:port of the learner")
    add_flags(p, FLAGS)
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--no-report", action="store_true", help="do not write report.md and plots")
    ns = vars(p.parse_args(list(argv)))
    addrs = Addresses(
        ns.pop("replay_address"), ns.pop("quantizer_address"), ns.pop("learner_address")
    )
    report = not ns.pop("no_report")
    return load_train_args({**ns, "carbon_tracking": False}), addrs, report


def main(argv: Sequence[str]) -> int:
    """``actorq attach ...``: exit 0 when the target or a budget ended the run."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s attach %(levelname)s %(message)s"
    )
    try:
        args, addrs, report = parse_args(argv)
        summary = follow(args, addrs)
    except ConfigError as err:
        print(f"actorq attach: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"actorq attach failed: {err}", file=sys.stderr)
        return 1
    if report:
        from commands import report as report_mod

        report_mod.main([args.out, "--out", args.out])
    print(result_line(summary))
    return 0 if summary.ended_as_planned else 1
