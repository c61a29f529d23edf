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
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from actorq.clients import LearnerClient, QuantizerClient, ReplayClient
from actorq.config import ConfigError, read_file
from actorq.rpc import channel, wait_healthy
from commands.train import run as launcher

log = logging.getLogger("actorq.attach")


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


def follow(args: launcher.TrainArgs, addrs: Addresses) -> dict[str, Any]:
    """Evaluate and monitor until target or budget; returns the summary (also written)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.jsonl", "evals.jsonl", "summary.json"):
        (out / stale).unlink(missing_ok=True)
    wait_services(addrs, args.startup_timeout_s)
    state = launcher.RunState()
    progress = launcher.Progress(args.quiet)
    evaluator = launcher.Evaluator(args, addrs.quantizer, state, out)
    channels = [channel(addrs.replay), channel(addrs.learner), channel(addrs.quantizer)]
    replay_c, learner_c = ReplayClient(channels[0]), LearnerClient(channels[1])
    quant_c = QuantizerClient(channels[2])
    # Replay's count when we attached: a long-running table may predate this run.
    r0 = launcher._status(replay_c.stats)
    inserted0 = r0.inserted if r0 is not None else 0
    actor_counts: list[int] = []
    last: dict[str, Any] = {}
    stop = launcher.StopCheck(args)
    evaluator.start()
    try:
        with open(out / "metrics.jsonl", "a") as metrics_file:
            while True:
                time.sleep(args.poll_s)
                l_stat = launcher._status(learner_c.status)
                r_stat = launcher._status(replay_c.stats)
                with state.lock:
                    if r_stat is not None:
                        state.env_steps = max(state.env_steps, r_stat.inserted - inserted0)
                    if l_stat is not None:
                        state.learner_steps = l_stat.learner_steps
                    latest = state.evals[-1] if state.evals else None
                    reached = state.reached
                active = l_stat.active_actors if l_stat is not None else None
                if active is not None:
                    actor_counts.append(active)
                row = {
                    "t_s": round(state.elapsed(), 3),
                    "env_steps": state.env_steps,
                    "learner_steps": state.learner_steps,
                    "learner_steps_per_s": round(l_stat.learner_steps_per_s, 1) if l_stat else None,
                    "loss": l_stat.loss if l_stat else None,
                    "model_version": l_stat.published_version if l_stat else None,
                    "active_actors": active,
                    "replay_size": r_stat.size if r_stat else None,
                    "eval_return": latest.mean_return if latest else None,
                    "eval_version": latest.version if latest else None,
                }
                metrics_file.write(json.dumps(row) + "\n")
                metrics_file.flush()
                last = {"learner": l_stat, "replay": r_stat}
                ev = f"{latest.mean_return:6.1f} (v{latest.version})" if latest else "  -   "
                progress.show(
                    launcher.budget_bar(args, state.env_steps, state.elapsed())
                    + f"[{row['t_s']:7.1f}s] actors {active if active is not None else '?'} | "
                    f"env {state.env_steps:>9,} | learner {state.learner_steps:>8,} | "
                    f"model v{row['model_version'] or 0} | eval {ev}"
                )
                if l_stat is not None and l_stat.state == "failed":
                    state.stop_reason = f"learner failed: {l_stat.error}"
                    break
                state.stop_reason = stop.reason(state, reached) or ""
                if state.stop_reason:
                    break
    except KeyboardInterrupt:
        state.stop_reason = "interrupted"
    progress.done()
    wall_s = state.elapsed()
    evaluator.stop_event.set()
    evaluator.join(timeout=120)
    models = launcher._status(quant_c.list_models)
    final_evals = launcher._final_evals(
        evaluator, state.reached, launcher._final_models(evaluator, state.reached)
    )
    evaluator.close()
    for ch in channels:
        ch.close()
    summary = _summary(args, state, last, models, final_evals, wall_s, actor_counts, addrs)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _summary(
    args: launcher.TrainArgs,
    state: launcher.RunState,
    last: dict[str, Any],
    models: Any,
    final_evals: dict[str, Any],
    wall_s: float,
    actor_counts: list[int],
    addrs: Addresses,
) -> dict[str, Any]:
    learner = last.get("learner")
    reached = state.reached
    artifacts = {a.precision: a for a in models.artifacts} if models is not None else {}
    int8 = artifacts.get("int8")
    return {
        "env": args.env,
        "algo": args.algo,
        "precision": args.precision,
        "mode": "attached",
        "services": asdict(addrs),
        "actors": max(actor_counts) if actor_counts else None,
        "active_actors": {
            "min": min(actor_counts) if actor_counts else None,
            "max": max(actor_counts) if actor_counts else None,
            "last": actor_counts[-1] if actor_counts else None,
        },
        "seed": args.seed,
        "target_return": args.target_return,
        "reached_target": reached is not None,
        "time_to_target_s": reached.t_s if reached else None,
        "env_steps_to_target": reached.env_steps if reached else None,
        "stop_reason": state.stop_reason,
        # Transitions replay took in since we attached: one per actor env step.
        "env_steps": state.env_steps,
        "learner_steps": learner.learner_steps if learner else state.learner_steps,
        "learner_steps_per_s": round(learner.learner_steps_per_s, 1) if learner else None,
        "wall_s": round(wall_s, 3),
        "eval": {p: r.get("mean_return") for p, r in final_evals.items()},
        "eval_detail": {
            "final": final_evals,
            "history": [asdict(e) for e in state.evals],
            "target_eval": asdict(reached) if reached else None,
        },
        "model_versions": {p: int(a.version) for p, a in artifacts.items()},
        "model_bytes": {p: int(a.size_bytes) for p, a in artifacts.items()},
        "quantization": {
            "method": int8.quantization.method if int8 else None,
            "max_abs_err": int8.quantization.max_abs_err if int8 else None,
            "action_agreement": int8.quantization.action_agreement if int8 else None,
        },
        "energy_kwh": None,
        "emissions_kg": None,
        "carbon": {
            "status": "unavailable",
            "reason": "attached to services in other containers; none is tracked from here",
        },
        "run_dir": str(args.out),
    }


def parse_args(argv: Sequence[str]) -> tuple[launcher.TrainArgs, Addresses, bool]:
    p = argparse.ArgumentParser(prog="actorq attach", description=__doc__.split("\n\n")[0])
    p.add_argument("--replay-address", required=True, help="host:port of replay")
    p.add_argument("--quantizer-address", required=True, help="host:port of the quantizer")
    p.add_argument("--learner-address", required=True, help="host:port of the learner")
    p.add_argument("--config", default=None, help="config file; its train: section sets defaults")
    p.add_argument("--env", default=None, help="env id the services run (default: config)")
    p.add_argument("--algo", default=None, choices=launcher.ALGOS)
    p.add_argument("--precision", default=None, choices=launcher.PRECISIONS)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--target-return", type=float, default=None)
    p.add_argument("--max-env-steps", type=int, default=None, help="budget (0: none)")
    p.add_argument("--max-seconds", type=float, default=None, help="wall-clock budget (0: none)")
    p.add_argument("--eval-episodes", type=int, default=None)
    p.add_argument("--startup-timeout-s", type=float, default=None)
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--no-report", action="store_true", help="do not write report.md and plots")
    p.add_argument("--quiet", action="store_true")
    ns = p.parse_args(list(argv))
    train = (read_file(ns.config).get("train") or {}) if ns.config else {}
    known = {f for f in launcher.TrainArgs.__dataclass_fields__}
    values = {k: v for k, v in train.items() if k in known}
    for key in (
        "env", "algo", "precision", "seed", "target_return", "max_env_steps", "max_seconds",
        "eval_episodes", "startup_timeout_s",
    ):  # fmt: skip
        if getattr(ns, key) is not None:
            values[key] = getattr(ns, key)
    if not values.get("env"):
        raise ConfigError("no env: give --env or train: env: in --config")
    values.update(out=ns.out, quiet=ns.quiet, carbon_tracking=False)
    values.setdefault("eval_episodes", 20)
    values.setdefault("eval_every_s", 5.0)
    addrs = Addresses(ns.replay_address, ns.quantizer_address, ns.learner_address)
    return launcher.TrainArgs(**values), addrs, not ns.no_report


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

        report_mod.main([str(args.out), "--out", str(args.out)])
    print(launcher._result_line(summary))
    return 0 if summary["stop_reason"] in ("target_reached", "max_env_steps", "max_seconds") else 1
