"""What a run's monitor knows, and when the run should stop."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from commands.train.args import TrainArgs
from commands.train.summary import EvalRecord


@dataclass
class RunState:
    """Progress of one run; the monitor's polls and the evaluator update it."""

    t0: float = field(default_factory=time.monotonic)
    env_steps: int = 0
    learner_steps: int = 0
    evals: list[EvalRecord] = field(default_factory=list)
    # The first evaluation whose full episodes reached the target.
    reached: EvalRecord | None = None
    stop_reason: str = ""
    # Polled sums of the actors' env steps/s (while they stepped).
    sps_samples: list[float] = field(default_factory=list)
    # The learner's count of active actors at each poll it answered.
    actor_counts: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.t0

    def add_eval(self, record: EvalRecord, target: float | None) -> None:
        """Record an evaluation; the first that reached the target with every episode run
        is the run's result."""
        with self.lock:
            self.evals.append(record)
            if (
                target is not None
                and self.reached is None
                and not record.stopped_early
                and record.mean_return >= target
            ):
                self.reached = record


class StopCheck:
    """Why a monitored run should stop now, if it should: target, stall, or budget.

    Remembers when env or learner steps last moved.
    """

    def __init__(self, args: TrainArgs) -> None:
        self.args = args
        self._mark = (-1, -1)
        self._since = time.monotonic()

    def reason(self, state: RunState, reached: EvalRecord | None) -> str:
        """The stop reason, or '' to go on."""
        args = self.args
        if reached is not None:
            return "target_reached"
        mark, now = (state.env_steps, state.learner_steps), time.monotonic()
        if mark != self._mark:
            self._mark, self._since = mark, now
        elif args.stall_timeout_s and now - self._since > args.stall_timeout_s:
            return f"stalled: no env or learner steps for {args.stall_timeout_s:g}s"
        if args.max_seconds and state.elapsed() >= args.max_seconds:
            return "max_seconds"
        if args.max_env_steps and state.env_steps >= args.max_env_steps:
            return "max_env_steps"
        return ""
