"""Greedy evaluation of the served policy while a run goes on, and at its end.

While training runs, evaluation competes with the actors and the learner for
the same cores. Its share is bounded by a duty cycle (``pause_after``): after
an evaluation that took C CPU-seconds in B seconds, the evaluator pauses until
C is at most ``eval_cpu_share`` of the time since it began, and never less than
``eval_every_s``. The CPU time it took is counted (``cpu_s``) for the summary.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path

import grpc

from actorq.clients import FetchedModel, QuantizerClient
from actorq.envs import max_episode_return
from actorq.network import PRECISIONS
from actorq.retry import describe, worth_retrying
from actorq.rpc import channel
from commands.train.args import TrainArgs
from commands.train.policy import PolicyDir, eval_seed
from commands.train.state import RunState
from commands.train.summary import EvalFailure, EvalRecord, append_eval


def pause_after(cpu_s: float, busy_s: float, share: float, min_pause_s: float) -> float:
    """Seconds to pause after an evaluation that took ``cpu_s`` CPU-seconds in ``busy_s``
    seconds, so that it used at most ``share`` of one CPU over its time and the pause:
    cpu_s / (busy_s + pause) <= share; at least ``min_pause_s``."""
    return max(min_pause_s, cpu_s / share - busy_s)


# Tries at fetching one version in both precisions before evaluating without its twin.
PAIR_TRIES = 3


def fetch_pair(
    client: QuantizerClient, precision: str, newer_than: int, wait_s: float
) -> tuple[FetchedModel, dict[str, FetchedModel]] | None:
    """The newest artifact of precision newer than ``newer_than`` and its twins: the
    other precisions' artifacts of the same version (None: nothing newer came).

    The quantizer serves a version's artifacts together, but a newer version can be
    served between two fetches; the pair then moves to that newer version (up to
    PAIR_TRIES fetches of precision), so the version evaluated has its twin. Where none
    matched, the twins are {} and the newest artifact of precision is still returned.
    """
    fetched = client.fetch(precision, newer_than=newer_than, wait_s=wait_s)
    if fetched is None:
        return None
    for _ in range(PAIR_TRIES):
        version = int(fetched.artifact.version)
        others = {o: client.fetch(o, newer_than=version - 1) for o in PRECISIONS if o != precision}
        twins = {o: m for o, m in others.items() if m and int(m.artifact.version) == version}
        if len(twins) == len(others):
            return fetched, twins
        newest = max((int(m.artifact.version) for m in others.values() if m), default=version)
        again = client.fetch(precision, newer_than=newest - 1) if newest > version else None
        if again is None:  # no newer twin to move to: this version has none
            return fetched, twins
        fetched = again
    return fetched, {}


class Evaluator(threading.Thread):
    """Greedy episodes with the newest served artifact of the run's precision.

    Runs in the launcher process, its CPU share bounded by a duty cycle (see the
    module's docstring); its time counts in wall time like everything else.
    """

    def __init__(
        self,
        args: TrainArgs,
        quantizer_addr: str,
        state: RunState,
        out: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(name="evaluator", daemon=True)
        self.args = args
        self.state = state
        self.out = out
        self.stop_event = threading.Event()
        self._channel = channel(quantizer_addr, env=env)
        self._client = QuantizerClient(self._channel)
        self._bound = max_episode_return(args.env)
        self.error: str = ""
        # CPU seconds of this thread while training ran (fetches and episodes).
        self.cpu_s = 0.0
        # Other-precision artifacts of evaluated versions: (version, precision) -> model.
        self.twins: dict[tuple[int, str], FetchedModel] = {}
        # DIR/policy/: every evaluated artifact and its twin, the best kept apart.
        self.policies = PolicyDir(out, args.env, args.algo, args.precision, args.seed)
        self.seen_version = 0  # the newest version fetched while the run went on

    def evaluate_latest(
        self, precision: str, newer_than: int = 0, wait_s: float = 0.0, early_stop: bool = True
    ) -> EvalRecord | None:
        """Evaluate the newest artifact of a precision newer than ``newer_than``.

        Also keeps the other precision's artifact of the same version, so the
        version that reaches the target can be evaluated in both precisions.
        """
        pair = fetch_pair(self._client, precision, newer_than, wait_s)
        if pair is None:
            return None
        fetched, twins = pair
        version = int(fetched.artifact.version)
        self.seen_version = max(self.seen_version, version)
        if twins:
            # Keep only the newest: paper-size fp32 models are 34 MB each.
            self.twins = {(version, other): twin for other, twin in twins.items()}
        record = self.evaluate_model(fetched, precision, early_stop)
        self.policies.keep({**twins, precision: fetched}, {precision: record})
        return record

    def evaluate_model(self, fetched: FetchedModel, precision: str, early_stop: bool) -> EvalRecord:
        """Greedy episodes with one artifact; written to evals.jsonl."""
        from services.actor.evaluate import evaluate
        from services.actor.policy import OnnxPolicy

        with self.state.lock:
            env_steps = self.state.env_steps
        started, cpu_started = time.monotonic(), time.thread_time()
        version = int(fetched.artifact.version)
        policy = OnnxPolicy(fetched.data, version, precision)
        result = evaluate(
            policy,
            self.args.env,
            episodes=self.args.eval_episodes,
            seed=eval_seed(self.args.seed, version),
            target_return=self.args.target_return if early_stop else None,
            max_episode_return=self._bound if early_stop else None,
        )
        record = EvalRecord(
            t_s=round(self.state.elapsed(), 3),
            version=version,
            precision=precision,
            mean_return=float(result.mean),
            episodes=int(result.episodes_run),
            stopped_early=bool(result.stopped_early),
            env_steps=env_steps,
            duration_s=round(time.monotonic() - started, 3),
            cpu_s=round(time.thread_time() - cpu_started, 3),
        )
        append_eval(self.out, record)
        return record

    def run(self) -> None:
        version = 0
        cpu_started = time.thread_time()
        while not self.stop_event.is_set():
            started, cpu_before = time.monotonic(), time.thread_time()
            try:
                record = self.evaluate_latest(self.args.precision, newer_than=version, wait_s=2.0)
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.NOT_FOUND:
                    continue
                if self.stop_event.is_set():
                    return
                self.error = f"{err.code().name}: {err.details()}"
                self.stop_event.wait(1.0)
                continue
            finally:
                self.cpu_s = time.thread_time() - cpu_started
            if record is None:
                continue
            version = record.version
            self.state.add_eval(record, self.args.target_return, self.args.sustain)
            if self.state.sustained is not None:
                # The run's result is settled: another evaluation would only replace the
                # twin kept of the version that held the target (its final evaluation).
                return
            busy_s = time.monotonic() - started
            cpu_s = time.thread_time() - cpu_before
            self.stop_event.wait(
                pause_after(cpu_s, busy_s, self.args.eval_cpu_share, self.args.eval_every_s)
            )

    def stop(self) -> None:
        """Stop evaluating while training goes on and wait for the evaluation under way."""
        self.stop_event.set()
        self.join(timeout=120)

    def final_models(
        self, reached: EvalRecord | None, wait_s: float = 60.0
    ) -> dict[str, FetchedModel | EvalFailure]:
        """The artifacts the final evaluation runs, fetched while the quantizer still serves.

        With a target reached: the other precision's artifact of the version that
        reached it (already kept while evaluating). Otherwise: the newest served
        artifact of each precision, or why there is none.
        """
        if reached is not None:
            kept: dict[str, FetchedModel | EvalFailure] = {
                p: twin for (v, p), twin in self.twins.items() if v == reached.version
            }
            for p in PRECISIONS:
                if p != reached.precision and p not in kept:
                    kept[p] = EvalFailure(
                        f"no {p} artifact of version {reached.version} was fetched: the "
                        f"quantizer served a newer version each of {PAIR_TRIES} times it was "
                        f"asked, or builds no {p} artifact"
                    )
            return kept
        out: dict[str, FetchedModel | EvalFailure] = {}
        deadline = time.monotonic() + wait_s
        for precision in PRECISIONS:
            out[precision] = self._final_model(precision, deadline)
        return out

    def _final_model(self, precision: str, deadline: float) -> FetchedModel | EvalFailure:
        """The newest served artifact of a precision. A quantizer restarting, or
        restarted and so serving nothing until the learner's next publish (it had
        served a version before), is waited for until deadline."""
        while True:
            try:
                fetched = self._client.fetch(precision, wait_s=2.0 if self.seen_version else 0.0)
                if fetched is not None:
                    return fetched
                why = "nothing served"
            except grpc.RpcError as err:
                why = describe(err)
                lost = err.code() == grpc.StatusCode.NOT_FOUND and self.seen_version > 0
                if not (worth_retrying(err) or lost):
                    return EvalFailure(why)
            if time.monotonic() >= deadline:
                return EvalFailure(f"{why} (waited for the quantizer until the end)")
            time.sleep(0.5)

    def final_evals(
        self, reached: EvalRecord | None, models: Mapping[str, FetchedModel | EvalFailure]
    ) -> dict[str, EvalRecord | EvalFailure]:
        """Both precisions of one version, full episodes (see final_models)."""
        out: dict[str, EvalRecord | EvalFailure] = {}
        if reached is not None:
            out[reached.precision] = reached
        fetched_models: dict[str, FetchedModel] = {}
        for precision, fetched in models.items():
            if isinstance(fetched, EvalFailure):
                out[precision] = fetched
                continue
            out[precision] = self.evaluate_model(fetched, precision, early_stop=False)
            fetched_models[precision] = fetched
        records = {p: r for p, r in out.items() if isinstance(r, EvalRecord)}
        self.policies.keep(fetched_models, records)
        return out

    def close(self) -> None:
        self.stop_event.set()
        self._channel.close()
