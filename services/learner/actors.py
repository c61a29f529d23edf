"""How many actors the learner has heard from, read from replay's per-actor insert counts.

Actors come and go (``docker compose up --scale actor=N``, ``kubectl scale``)
without telling anyone: they only insert into replay. An actor counts as
active while its inserted-transition count in replay's stats keeps changing;
one whose count has not changed for ``window_s`` (of the learner's own clock,
so replay's clock does not matter) no longer counts.

The first reading is only a baseline: replay remembers every actor that ever
inserted (in Redis, across restarts of everything else), so a learner that
starts or restarts mid-run cannot tell from one reading which of them still
run; counting them all overcounted after every learner restart until the
window ran out. An actor id that appears in a later reading did insert since
the previous one. A count that falls (a memory replay restarted empty) is a
change too: the actor inserted into the new replay.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

import grpc

log = logging.getLogger(__name__)


class ActorCounter:
    """Counts actors whose per-actor insert count changed within the last window_s."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be positive seconds, got {window_s}")
        self.window_s = window_s
        self._clock = clock
        self._counts: dict[str, int] = {}
        self._grew_at: dict[str, float] = {}
        self._baseline = False  # whether the first reading was taken
        self._lock = threading.Lock()

    def observe(self, inserted_by_actor: Mapping[str, int]) -> None:
        """Record one reading of replay's ``inserted_by_actor``."""
        now = self._clock()
        with self._lock:
            for actor_id, count in inserted_by_actor.items():
                if self._baseline and count != self._counts.get(actor_id, 0):
                    self._grew_at[actor_id] = now
                self._counts[actor_id] = count
            self._baseline = True

    def active(self) -> list[str]:
        """Ids of the actors heard from within the window, sorted."""
        cutoff = self._clock() - self.window_s
        with self._lock:
            return sorted(a for a, t in self._grew_at.items() if t >= cutoff)


class ActorWatch(threading.Thread):
    """Polls replay's stats every poll_s into an ActorCounter (daemon thread)."""

    def __init__(
        self,
        read_stats: Callable[[], Mapping[str, int]],
        window_s: float,
        poll_s: float = 1.0,
    ) -> None:
        super().__init__(name="actor-watch", daemon=True)
        self.counter = ActorCounter(window_s)
        self._read = read_stats
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._last_count = -1

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.counter.observe(self._read())
            except grpc.RpcError as err:  # replay restarting: keep the last view
                log.debug("actor watch: replay stats failed: %s", err.code().name)
            count = len(self.counter.active())
            if count != self._last_count:
                log.info("actors heard from in the last %gs: %d", self.counter.window_s, count)
                self._last_count = count
            self._stop.wait(self._poll_s)

    def count(self) -> int:
        """Actors heard from within the window."""
        return len(self.counter.active())

    def stop(self) -> None:
        self._stop.set()
