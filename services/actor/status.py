"""What the actor's threads share and report: their signals, the last unresolved
problem, and the step-time split.

Each reported piece has one writer thread at a time and is read by
``status()`` from any thread; a reading may be a step apart, never torn.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from actorq.v1 import actor_pb2


class LastError:
    """The actor's most recent unresolved problem (empty when none), shown in status.

    The step loop, the sender and the model updater each set it; the latest
    writer wins, and each clears only its own kind of problem once it is over.
    """

    def __init__(self) -> None:
        self.text = ""

    def set(self, text: str) -> None:
        """Report a problem (replaces the one shown)."""
        self.text = text

    def clear(self, prefix: str) -> None:
        """The problem shown is over if it starts with prefix (e.g. ``replay insert``)."""
        if self.text.startswith(prefix):
            self.text = ""


@dataclass(frozen=True)
class ActorSignals:
    """What the step loop, the sender and the model updater share."""

    # Stop stepping and polling for models (set by ActorRunner.stop).
    stop: threading.Event = field(default_factory=threading.Event)
    # The step loop has ended and handed over its last chunk.
    stepping_done: threading.Event = field(default_factory=threading.Event)
    # Where each thread reports its problems.
    errors: LastError = field(default_factory=LastError)


class StepTimes:
    """Seconds the step loop spent per part of a step, summed over ``steps`` steps.

    The step loop adds to the fields directly (it holds this object in a local
    on its hot path); ``breakdown`` turns the sums into mean microseconds.
    """

    def __init__(self) -> None:
        self.steps = 0
        self.env_s = 0.0
        self.inference_s = 0.0
        # Encoding and queueing full chunks (waiting on a full queue included).
        self.send_s = 0.0
        # Wall time from step to step, so "other" is everything not counted above.
        self.total_s = 0.0

    def breakdown(self) -> actor_pb2.StepBreakdown:
        """Mean microseconds per step: env, inference, send, and the rest."""
        n = self.steps
        per_step_us = 1e6 / n if n else 0.0
        env_us = self.env_s * per_step_us
        inference_us = self.inference_s * per_step_us
        send_us = self.send_s * per_step_us
        other_us = max(0.0, self.total_s * per_step_us - env_us - inference_us - send_us)
        return actor_pb2.StepBreakdown(
            env_us=env_us, inference_us=inference_us, send_us=send_us, other_us=other_us
        )
