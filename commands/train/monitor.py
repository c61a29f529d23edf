"""Following a run: what ``actorq train`` and ``actorq attach`` both do while it goes on.

A ``Watch`` holds the clients of a run's services, its state and its
evaluator. ``monitor()`` polls the services every ``poll_s``, writes a line to
metrics.jsonl, shows progress and stops at the target, a budget, a stall or a
failure; ``finish()`` runs the final evaluations and builds the ``RunSummary``.
The launcher's ``Run`` adds the processes it started; ``actorq attach`` counts
env steps as replay's inserts, since it polls no actor.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from actorq.clients import ActorClient, LearnerClient, QuantizerClient, ReplayClient
from actorq.retry import dependency_down
from actorq.rpc import channel
from actorq.v1 import actor_pb2, learner_pb2, replay_pb2
from commands.machine import run_machine
from commands.train import presets
from commands.train import summary as summaries
from commands.train.args import TrainArgs
from commands.train.evaluator import Evaluator
from commands.train.progress import Progress
from commands.train.regime import regime
from commands.train.state import RunState, StopCheck
from commands.train.summary import METRICS_FILE, EvalFailure, EvalRecord, RunSummary
from commands.train.tensorboard import RunBoard

T = TypeVar("T")
# The run's settings a summary repeats, under the same names.
RUN_SETTINGS = ("env", "algo", "precision", "actors", "seed", "target_return", "sustain")


def answer(call: Callable[[], T], down: dict[str, str] | None = None, name: str = "") -> T | None:
    """A status RPC's answer, or None when the service did not answer (then, with
    ``down``, what the service said is down behind it goes in down[name])."""
    try:
        return call()
    except grpc.RpcError as err:
        if down is not None and (behind := dependency_down(err)):
            down[name] = behind
        return None


def mean_or_none(values: list[float]) -> float | None:
    """The mean to 4 decimals, or None for no values."""
    return round(statistics.fmean(values), 4) if values else None


@dataclass
class Snapshot:
    """One poll of the services' status RPCs (None where a service did not answer)."""

    learner: learner_pb2.LearnerStatus | None = None
    replay: replay_pb2.ReplayStats | None = None
    # Per polled actor, in the order of Watch.actors.
    actors: list[actor_pb2.ActorStatus | None] = field(default_factory=list)
    # Service -> the dependency it said is down (the replay's Redis).
    down: dict[str, str] = field(default_factory=dict)

    @property
    def answering_actors(self) -> list[actor_pb2.ActorStatus]:
        return [a for a in self.actors if a is not None]


class Watch:
    """The clients, state and evaluator of a run whose services are at known addresses."""

    # Where to look when the run stalls ('': nowhere in particular).
    logs_hint = ""

    def __init__(
        self,
        args: TrainArgs,
        out: Path,
        addresses: Mapping[str, str],
        actors: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``addresses``: replay, quantizer and learner; ``actors``: label -> address of the
        actors to poll (none: env steps must come from elsewhere, see ``env_steps``);
        ``env``: where channels read their token and TLS settings (default: ours)."""
        self.args = args
        self.out = out
        self.addresses = dict(addresses)
        # Taken now, before train.pin_learner narrows this process to the others' CPUs.
        self.machine = run_machine()
        self.state = RunState()
        self.progress = Progress(args.quiet)
        names = {**self.addresses, **(actors or {})}
        self._channels = {name: channel(address, env=env) for name, address in names.items()}
        self.replay = ReplayClient(self._channels["replay"])
        self.learner = LearnerClient(self._channels["learner"])
        self.quantizer = QuantizerClient(self._channels["quantizer"])
        self.actors = {name: ActorClient(self._channels[name]) for name in actors or {}}
        self.evaluator = Evaluator(args, self.addresses["quantizer"], self.state, out, env)
        self.last = Snapshot()
        self._stop = StopCheck(args)
        self.board = RunBoard(out)  # DIR/tb/: the same scalars for TensorBoard

    # ------------------------------------------------------------ one poll

    def poll(self) -> Snapshot:
        """Every service's status now."""
        down: dict[str, str] = {}
        return Snapshot(
            learner=answer(self.learner.status),
            replay=answer(self.replay.stats, down, "replay"),
            actors=self.poll_actors(),
            down=down,
        )

    def env_steps(self, snap: Snapshot) -> int | None:
        """The run's env steps by this poll: the actors' own counts."""
        return sum(a.env_steps for a in snap.answering_actors)

    def dead_service(self) -> tuple[str, str]:
        """(stop reason, what to print) when a service is gone; ('', '') otherwise."""
        return "", ""

    def failed_service(self, snap: Snapshot) -> str:
        """A reason to stop when a service reports its loop failed (it may still serve)."""
        if snap.learner is not None and snap.learner.state == "failed":
            return f"learner failed: {snap.learner.error}"
        for name, status in zip(self.actors, snap.actors, strict=True):
            if status is not None and status.state == "failed":
                return f"{name} failed: {status.error}"
        return ""

    def record(self, snap: Snapshot) -> dict[str, Any]:
        """Fold one poll into the run state; returns its metrics.jsonl row."""
        state, learner = self.state, snap.learner
        steps = self.env_steps(snap)
        sps = sum(a.env_steps_per_s for a in snap.answering_actors) if self.actors else None
        with state.lock:
            if steps is not None:
                state.env_steps = max(state.env_steps, steps)
            if learner is not None:
                state.learner_steps = learner.learner_steps
                state.actor_counts.append(learner.active_actors)
            latest = state.evals[-1] if state.evals else None
        if sps:
            state.sps_samples.append(sps)
        self.last = snap
        return {
            "t_s": round(state.elapsed(), 3),
            "env_steps": state.env_steps,
            "env_steps_per_s": round(sps, 1) if sps is not None else None,
            "learner_steps": state.learner_steps,
            "learner_steps_per_s": round(learner.learner_steps_per_s, 1) if learner else None,
            "loss": learner.loss if learner else None,
            "model_version": learner.published_version if learner else None,
            "replay_size": snap.replay.size if snap.replay else None,
            # Actors replay heard from recently, as the learner counts them.
            "active_actors": learner.active_actors if learner else None,
            "eval_return": latest.mean_return if latest else None,
            "eval_version": latest.version if latest else None,
            "eval_episodes": latest.episodes if latest else None,
            # The training episode return: the actors' means over the episodes they finished.
            "train_return": mean_or_none(
                [a.mean_episode_return for a in snap.answering_actors if a.episodes > 0]
            ),
            "epsilon": mean_or_none([a.epsilon for a in snap.answering_actors]),
            "actor_versions": [a.model_version if a else None for a in snap.actors],
            "down": dict(snap.down),
        }

    def step(self, metrics: Any) -> tuple[str, str]:
        """One poll: (stop reason, what to print), or ('', '') to go on."""
        dead = self.dead_service()
        if dead[0]:
            return dead
        snap = self.poll()
        failed = self.failed_service(snap)
        if failed:
            return failed, f"stopping: {failed}"
        row = self.record(snap)
        metrics.write(json.dumps(row) + "\n")
        metrics.flush()
        with self.state.lock:
            evals = list(self.state.evals)
        self.board.poll(row, evals)
        self.progress.update(self.args, row, self.state.elapsed(), evals)
        with self.state.lock:
            held = self.state.sustained
        reason = self._stop.reason(self.state, held)
        if reason.startswith("stalled"):
            return reason, f"stopping: {reason}{self.logs_hint}"
        return reason, ""

    def wait_stepping(self, timeout_s: float) -> float:
        """Poll the actors until one has stepped; the seconds from the command's start to
        that (``state.startup_s``). RuntimeError when a service dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while not any(s is not None and s.env_steps > 0 for s in self.poll_actors()):
            reason, message = self.dead_service()
            if reason:
                raise RuntimeError(message)
            if time.monotonic() > deadline:
                raise RuntimeError(f"no actor stepped within {timeout_s:.0f}s{self.logs_hint}")
            # Short: the wait is the start-up time the user sees; a status call is cheap.
            time.sleep(0.05)
        self.state.startup_s = round(self.state.elapsed(), 3)
        return self.state.startup_s

    def poll_actors(self) -> list[actor_pb2.ActorStatus | None]:
        """Every polled actor's status now (None where it did not answer)."""
        return [answer(c.status) for c in self.actors.values()]

    # ------------------------------------------------------------ the run

    def monitor(self) -> None:
        """Poll until the target, a budget, a stall or a failure ends the run
        (``state.stop_reason`` says which). Ctrl-C reaches the caller."""
        with open(self.out / METRICS_FILE, "a") as metrics:
            while not self.state.stop_reason:
                time.sleep(self.args.poll_s)
                self.state.stop_reason, message = self.step(metrics)
                if message:
                    self.progress.done()
                    print(message, file=sys.stderr)
        self.progress.done()

    def stop_serving(self) -> None:
        """Called once the final models are fetched, before they are evaluated."""

    def finish(self) -> RunSummary:
        """Stop evaluating, run the final evaluations, and summarize the run.

        The final models are fetched while the quantizer still serves; then
        ``stop_serving`` runs, so that the final evaluation (in this process,
        on models already fetched) is not counted in the services' energy.
        """
        state = self.state
        wall_s = state.elapsed()
        self.evaluator.stop()
        models = answer(self.quantizer.list_models)
        # The evaluation that ended the run (the target held) is the final one of its
        # precision; without it, the newest served policies are evaluated.
        final_models = self.evaluator.final_models(state.sustained)
        self.close()
        self.stop_serving()
        final = self.evaluator.final_evals(state.sustained, final_models)
        for rec in final.values():
            if isinstance(rec, EvalRecord) and rec is not state.sustained:
                self.board.evaluation(rec, "final")
        self.board.close()
        return self.summarize(models, final, wall_s)

    def bare_summary(self) -> RunSummary:
        """What any summary of this run says, whatever it measured."""
        return RunSummary(
            **{name: getattr(self.args, name) for name in RUN_SETTINGS},
            stop_reason=self.state.stop_reason,
            preset=presets.applied(self.args.algo, self.args.env, self.args.preset),
            run_dir=str(self.out),
            services=dict(self.addresses),
        )

    def summary_so_far(self) -> RunSummary:
        """What the run measured until it was stopped early (Ctrl-C, a failure): steps,
        evaluations, throughput; no final evaluation."""
        return self.summarize(None, {}, self.state.elapsed())

    def summarize(
        self, models: Any, final: Mapping[str, EvalRecord | EvalFailure], wall_s: float
    ) -> RunSummary:
        """The run's summary from its state, the last poll and the final evaluations."""
        state, learner = self.state, self.last.learner
        actors = self.last.answering_actors
        return dataclasses.replace(
            self.bare_summary(),
            env_steps=state.env_steps,
            learner_steps=learner.learner_steps if learner else state.learner_steps,
            wall_s=round(wall_s, 3),
            healthy_s=state.healthy_s,
            startup_s=state.startup_s,
            startup_cpu_s=state.startup_cpu_s,
            startup_cpu=dict(state.startup_cpu),
            eval_cpu_s=round(self.evaluator.cpu_s, 3),
            eval_cpu_share=round(self.evaluator.cpu_s / wall_s, 4) if wall_s > 0 else None,
            **summaries.eval_figures(final, state.evals, state.reached, state.sustained),
            **summaries.model_figures(models),
            **(summaries.actor_figures(actors) if self.actors else {}),
            observed_env_steps_per_s=summaries.median_or_none(state.sps_samples),
            learner_steps_per_s=round(learner.learner_steps_per_s, 1) if learner else None,
            active_actors=summaries.active_actor_figures(state.actor_counts),
            regime=regime(actors, learner, self.cpu_shares(), self.cpus),
            machine=self.machine,
            learner_device=learner.device if learner else "",
        )

    # The processes' CPU shares: none known here (attached to services run elsewhere).
    cpus: int | None = None

    def cpu_shares(self) -> dict[str, float]:
        """Process label -> share of all CPUs over the run ({}: not measured)."""
        return {}

    def close(self) -> None:
        """Close every channel (the evaluator's too); idempotent."""
        self.evaluator.close()
        for ch in self._channels.values():
            ch.close()
