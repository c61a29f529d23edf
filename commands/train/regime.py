"""Which side bounded a run, and what that means for int8 actors.

Three readings, all taken while the run goes on:

- the actors' share of step time spent handing transitions to a replay that
  holds them back (``send`` in their step breakdown: the samples-per-insert
  limit waiting for the learner) - high when the *learner* bounds the run;
- the learner's share of its loop time spent waiting for sampled batches
  (``sample_wait_s / loop_s`` in its status, warm-up excluded) - high when the
  *actors* bound the run;
- each process's share of the machine's CPUs (``/proc/PID/stat``), which says
  whether the cores were saturated, i.e. both sides fought for CPU.

Int8 inference makes an actor step cheaper. That shortens training only where
actors bound the run, or where the cores are saturated (cheaper actors leave
CPU to the learner); where the learner bounds it, faster actors only wait more.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# One side bounds the run when the other waits at least this share of its time,
# and at least twice the share it waits itself; the cores are "saturated" when
# the run's processes use this share of them.
WAITING = 0.25
DOMINANCE = 2.0
SATURATED = 0.85

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int, children: bool = False) -> float | None:
    """User + system CPU seconds a process has used (None when it is gone or not Linux);
    with ``children``, those of its children it waited for too."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command name: state is field 3; utime, stime, cutime, cstime are 14-17.
    return sum(int(v) for v in fields[11 : 15 if children else 13]) / _TICKS


class CpuMeter:
    """CPU shares of a run's processes between the first and the last reading."""

    def __init__(self, cpus: int) -> None:
        self.cpus = max(1, cpus)
        # Keyed by (label, pid): a restarted process counts its CPU time from zero again.
        self._first: dict[tuple[str, int], float] = {}
        self._last: dict[tuple[str, int], float] = {}
        self._t0: float | None = None
        self._t1 = 0.0

    def read(self, pids: Mapping[str, int]) -> None:
        """Take a reading of every process (label -> pid); a gone process keeps its last."""
        now = time.monotonic()
        for label, pid in pids.items():
            seconds = cpu_seconds(pid)
            if seconds is None:
                continue
            if (label, pid) not in self._first:
                # A restarted process: every CPU second since its start is the run's.
                restarted = any(known == label for known, _ in self._first)
                self._first[(label, pid)] = 0.0 if restarted else seconds
            self._last[(label, pid)] = seconds
        if self._t0 is None:
            self._t0 = now
        self._t1 = now

    def shares(self) -> dict[str, float]:
        """label -> its share of all CPUs over the readings (0..1), every process that
        ran under the label together; {} before two readings."""
        if self._t0 is None or self._t1 <= self._t0:
            return {}
        capacity = (self._t1 - self._t0) * self.cpus
        used: dict[str, float] = {}
        for (label, pid), first in self._first.items():
            used[label] = used.get(label, 0.0) + self._last[(label, pid)] - first
        return {label: round(seconds / capacity, 4) for label, seconds in used.items()}


@dataclass
class Regime:
    """Where a run's time went and which side bounded it (summary.json ``regime``)."""

    # Share of the actors' step time spent waiting on replay (their send), weighted by steps.
    actor_wait_share: float | None = None
    # Share of the learner's loop time (after the first batch) spent waiting for batches.
    learner_wait_share: float | None = None
    # Share of the learner's loop time inside update steps.
    learner_update_share: float | None = None
    # Seconds from the learner's loop start to its first sampled batch (replay filling).
    learner_warmup_s: float | None = None
    # Per process group: share of all the machine's CPUs over the run (0..1).
    cpu_share: dict[str, float] = field(default_factory=dict)
    cpus: int | None = None
    # "learner", "actors", "cpu" (saturated cores) or "mixed"; "" when unmeasured.
    bound: str = ""
    sentence: str = ""


def _group(label: str) -> str:
    return "actors" if label.startswith("actor") else label


def classify(
    actor_wait: float | None, learner_wait: float | None, cpu_total: float | None
) -> tuple[str, str]:
    """(bound, one sentence for the report) from the two waiting shares and the CPU use."""
    if actor_wait is None or learner_wait is None:
        return "", "Which side bounded the run was not measured (no actor or learner timings)."
    waits = f"actors waited {actor_wait:.0%} of their step time on replay, the learner "
    waits += f"{learner_wait:.0%} of its loop time for data"
    if actor_wait >= WAITING and actor_wait >= DOMINANCE * learner_wait:
        return "learner", (
            f"Learner-bound: {waits}. Faster (int8) actors would only wait longer here; int8 "
            "can save CPU and energy but cannot shorten this run unless the learner gets faster."
        )
    if learner_wait >= WAITING and learner_wait >= DOMINANCE * actor_wait:
        return "actors", (
            f"Actor-bound: {waits}. Faster actors feed the learner sooner: this is the regime "
            "where int8 actors shorten training."
        )
    if cpu_total is not None and cpu_total >= SATURATED:
        return "cpu", (
            f"CPU-bound: {waits}, and the run's processes used {cpu_total:.0%} of the "
            "machine's CPUs. Both sides compete for cores, so cheaper int8 inference leaves "
            "more CPU to the learner: int8 can shorten this run in proportion to the CPU its "
            "actors save."
        )
    return "mixed", f"Mixed: {waits}; neither side clearly bounded the run."


def regime(
    actors: Sequence[Any], learner: Any | None, cpu: Mapping[str, float], cpus: int | None
) -> Regime:
    """The run's regime from its actors' and learner's last statuses and its CPU shares."""
    steps = sum(a.env_steps for a in actors)
    actor_wait = None
    if steps:
        send = sum(a.breakdown.send_us * a.env_steps for a in actors)
        total = sum(
            (b.env_us + b.inference_us + b.send_us + b.other_us) * a.env_steps
            for a in actors
            if (b := a.breakdown)
        )
        actor_wait = round(send / total, 4) if total > 0 else None
    learner_wait = update = warmup = None
    if learner is not None and learner.loop_s > 0:
        learner_wait = round(min(1.0, learner.sample_wait_s / learner.loop_s), 4)
        update = round(min(1.0, learner.update_s / learner.loop_s), 4)
        warmup = round(learner.warmup_s, 3)
    grouped: dict[str, float] = {}
    for label, share in cpu.items():
        grouped[_group(label)] = round(grouped.get(_group(label), 0.0) + share, 4)
    total_cpu = round(sum(grouped.values()), 4) if grouped else None
    if total_cpu is not None:
        grouped["total"] = total_cpu
    bound, sentence = classify(actor_wait, learner_wait, total_cpu)
    return Regime(
        actor_wait_share=actor_wait,
        learner_wait_share=learner_wait,
        learner_update_share=update,
        learner_warmup_s=warmup,
        cpu_share=grouped,
        cpus=cpus,
        bound=bound,
        sentence=sentence,
    )
