"""How a replay call waits on the rate limiter: its patience, and the blocked time counted.

Both tables (memory, Redis) use these the same way (``table.Table``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


class BlockedTime:
    """Seconds inserts and samples spent waiting on the rate limiter, counting the
    waits still in progress. Not locked: its table calls it under the table's lock."""

    def __init__(self) -> None:
        self._done = {"insert": 0.0, "sample": 0.0}
        self._pending: dict[int, tuple[str, float]] = {}
        self._next_id = 0

    def begin(self, kind: str) -> tuple[int, float]:
        """Start a wait of kind ``insert`` or ``sample``: (its id, its start)."""
        wait_id, started = self._next_id, time.monotonic()
        self._next_id += 1
        self._pending[wait_id] = (kind, started)
        return wait_id, started

    def end(self, wait_id: int) -> None:
        kind, started = self._pending.pop(wait_id)
        self._done[kind] += time.monotonic() - started

    def totals(self) -> dict[str, float]:
        """Blocked seconds by kind, waits in progress up to now included."""
        out = dict(self._done)
        now = time.monotonic()
        for kind, started in self._pending.values():
            out[kind] += now - started
        return out


@dataclass(frozen=True)
class Patience:
    """How long a caller waits on the rate limiter: while ``should_continue()``
    holds (the RPC is alive) and until ``deadline`` (monotonic; None: no limit)."""

    should_continue: Callable[[], bool] | None = None
    deadline: float | None = None

    @classmethod
    def of(cls, should_continue: Callable[[], bool] | None, timeout: float | None) -> Patience:
        """For a caller that gives up when should_continue() turns false or after timeout s."""
        return cls(should_continue, None if timeout is None else time.monotonic() + timeout)
