"""What a run's monitor knows, and when the run should stop."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from commands.train.args import TrainArgs
from commands.train.summary import EvalRecord


def process_started() -> float:
    """When this process started, on the ``time.monotonic`` clock (Linux: from
    /proc/self/stat, so the interpreter's start and every import count; elsewhere: now)."""
    now = time.monotonic()
    try:
        with open("/proc/self/stat") as f:
            # Field 22, starttime, in clock ticks since boot; the name (field 2) may hold spaces.
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return now
    return now - max(0.0, age)


@dataclass
class RunState:
    """Progress of one run; the monitor's polls and the evaluator update it."""

    # The command's start: every time of the run (to the target, to the first env step)
    # counts from it, imports and service start-up included.
    t0: float = field(default_factory=process_started)
    env_steps: int = 0
    learner_steps: int = 0
    evals: list[EvalRecord] = field(default_factory=list)
    # The first evaluation whose full episodes reached the target (the first crossing).
    reached: EvalRecord | None = None
    # The evaluation that completed the first streak of `sustain` full evaluations at or
    # above the target (the same as `reached` for a streak of one): the run's stop.
    sustained: EvalRecord | None = None
    stop_reason: str = ""
    # Polled sums of the actors' env steps/s (while they stepped).
    sps_samples: list[float] = field(default_factory=list)
    # The learner's count of active actors at each poll it answered.
    actor_counts: list[int] = field(default_factory=list)
    # Seconds from the command's start to all services healthy, and to the first env step.
    healthy_s: float | None = None
    startup_s: float | None = None
    # CPU seconds every process of the run (the launcher too) had used by then: what
    # start-up costs whatever else the machine runs.
    startup_cpu_s: float | None = None
    # The same by process (each service's label, and "launcher").
    startup_cpu: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.t0

    def add_eval(self, record: EvalRecord, target: float | None, sustain: int = 1) -> None:
        """Record an evaluation; the first that reached the target with every episode run
        is the first crossing, the first that ends ``sustain`` such evaluations in a row
        is the run's result."""
        with self.lock:
            self.evals.append(record)
            if target is None:
                return
            if self.reached is None and reaches(record, target):
                self.reached = record
            if self.sustained is None:
                self.sustained = held_target(self.evals, target, sustain)


def reaches(record: EvalRecord, target: float) -> bool:
    """Whether one evaluation ran every episode and its mean is at or above the target
    (an evaluation stopped early saw the target out of reach)."""
    return not record.stopped_early and record.mean_return >= target


def held_target(evals: Sequence[EvalRecord], target: float, sustain: int) -> EvalRecord | None:
    """The last evaluation when the last ``sustain`` evaluations all reach the target
    (``reaches``), else None. One below it, or stopped early, breaks the streak."""
    if sustain < 1:
        raise ValueError(f"sustain {sustain}: need at least one evaluation")
    last = evals[-sustain:]
    if len(last) == sustain and all(reaches(e, target) for e in last):
        return last[-1]
    return None


class StopCheck:
    """Why a monitored run should stop now, if it should: target, stall, or budget.

    Remembers when env or learner steps last moved.
    """

    def __init__(self, args: TrainArgs) -> None:
        self.args = args
        self._mark = (-1, -1)
        self._since = time.monotonic()

    def reason(self, state: RunState, held: EvalRecord | None) -> str:
        """The stop reason, or '' to go on; ``held``: the evaluation that held the target
        as long as the stop rule asks (``RunState.sustained``)."""
        args = self.args
        if held is not None:
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
