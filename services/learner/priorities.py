"""The priority writer: sends each update's new priorities (|TD error| + eps) to
the replay on its own thread.

Updates wait in a bounded queue; one UpdatePriorities call carries everything
waiting, a key sampled twice meanwhile sent once with its newest priority, and
the writer rests ``SEND_INTERVAL_S`` between calls so that one call carries many updates.
When the replay falls behind by more than ``max_pending`` priorities, the
oldest updates are dropped and counted: a stale priority only makes sampling
less sharp, while waiting would stall learning. A replay that samples
uniformly refuses the first call (FAILED_PRECONDITION) and the writer stops
sending. An unreachable replay is retried with backoff and logged once per outage.
"""

from __future__ import annotations

import collections
import logging

import grpc
import numpy as np

from actorq.clients import ReplayClient
from actorq.workers import BackgroundSender

log = logging.getLogger(__name__)

# The writer rests this long after each call, so one call carries the updates
# made meanwhile: with small networks the learner makes hundreds of updates a
# second, and a call (and a wake-up of this thread) per update costs the learner
# and the replay as much CPU as the updates themselves (bench learner, DQN acme).
# Priorities reach the replay at most this much later.
SEND_INTERVAL_S = 0.02

# One update's (keys, priorities), or what several merged into one call.
Priorities = tuple[np.ndarray, np.ndarray]


class PriorityWriter(BackgroundSender[Priorities]):
    """Sends new priorities to the replay on its own thread; ``submit`` never blocks."""

    def __init__(
        self,
        client: ReplayClient,
        max_pending: int = 65_536,
        timeout_s: float = 10.0,
        min_interval_s: float = SEND_INTERVAL_S,
    ) -> None:
        super().__init__("priority-writer", log, "sending priorities to replay", min_interval_s)
        self._client = client
        self.max_pending = max_pending
        self.timeout_s = timeout_s
        self.sent = 0  # priorities the replay accepted (live or not by then)
        self.dropped = 0  # priorities dropped because the replay fell behind
        self.enabled = True  # False once the replay said it samples uniformly
        # Oldest first; each entry one update's (keys, priorities).
        self._pending: collections.deque[Priorities] = collections.deque()
        self._pending_count = 0

    def submit(self, keys: np.ndarray, priorities: np.ndarray) -> None:
        """Queue priorities for keys; drops (and counts) the oldest waiting past max_pending."""
        with self._cond:
            if not self.enabled:
                return
            self._add((keys, priorities), newest=True)
            self._wake()

    @property
    def pending(self) -> int:
        """Priorities waiting to be sent."""
        with self._cond:
            return self._pending_count

    def _add(self, work: Priorities, newest: bool) -> None:
        """Under the lock: add an update (newest, or back at the old end after a failed
        send), then drop the oldest until the bound holds."""
        if newest:
            self._pending.append(work)
        else:
            self._pending.appendleft(work)
        self._pending_count += len(work[0])
        while self._pending_count > self.max_pending:
            old_keys, _ = self._pending.popleft()
            self._pending_count -= len(old_keys)
            self.dropped += len(old_keys)

    def _clear(self) -> None:
        self._pending.clear()
        self._pending_count = 0

    # -- BackgroundSender hooks ----------------------------------------------------

    def _has_work(self) -> bool:
        return bool(self._pending) and self.enabled

    def _take(self) -> Priorities:
        """Everything waiting, one priority per key (the newest)."""
        keys = np.concatenate([k for k, _ in self._pending])
        priorities = np.concatenate([p for _, p in self._pending])
        self._clear()
        # np.unique keeps the first of equal keys: reverse so that is the newest.
        keys, first = np.unique(keys[::-1], return_index=True)
        return keys, priorities[::-1][first]

    def _send(self, work: Priorities) -> None:
        keys, priorities = work
        try:
            self._client.update_priorities(keys, priorities, timeout=self.timeout_s)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            # An answer, not a failure: this replay keeps no priorities.
            log.info("the replay samples uniformly (%s); not sending priorities", err.details())
            with self._cond:
                self.enabled = False
                self._clear()
            return
        self.sent += len(keys)

    def _requeue(self, work: Priorities) -> None:
        self._add(work, newest=False)  # older than anything submitted meanwhile

    def _failed(self, work: Priorities, err: grpc.RpcError) -> bool:
        retry = super()._failed(work, err)
        if not retry:
            with self._cond:
                self.dropped += len(work[0])
        return retry
