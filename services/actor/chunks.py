"""Transition chunks: built row by row on the step loop, queued for the sender.

``ChunkBuilder`` owns preallocated columns and encodes a full chunk once;
``ChunkQueue`` is the bounded hand-over between the step loop and the
sender, whose bound is the actor's backpressure: a replay that holds inserts
back (rate limiter, outage) fills it, and a full queue makes the step loop wait.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from actorq import tensor
from actorq.envs import EnvInfo
from actorq.v1 import replay_pb2
from services.actor.nstep import Transition

# An encoded chunk and how many transitions it holds.
QueuedChunk = tuple[replay_pb2.TransitionChunk, int]


def chunk_row_bytes(info: EnvInfo) -> int:
    """Wire bytes of one transition: obs + next_obs (float32) dominate; the action
    is int64 (discrete) or float32 [action_dim]; reward and discount float32."""
    action_bytes = 4 * info.action_dim if info.continuous else 8
    return 2 * 4 * info.obs_dim + action_bytes + 4 + 4


class ChunkQueue:
    """A bounded FIFO of encoded chunks between the step loop and the sender.

    ``put`` waits while full (backpressure); ``put_final`` ignores the bound so
    the step loop can always hand over its last chunk when it stops, and the
    sender can give back what it could not deliver.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[QueuedChunk] = deque()
        self._cond = threading.Condition()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, chunk: replay_pb2.TransitionChunk, count: int, stop: threading.Event) -> bool:
        """Enqueue, waiting while full; False (not enqueued) if stop is set first."""
        with self._cond:
            while len(self._items) >= self.maxsize:
                if stop.is_set():
                    return False
                self._cond.wait(0.1)
            self._items.append((chunk, count))
            self._cond.notify_all()
            return True

    def put_final(self, chunk: replay_pb2.TransitionChunk, count: int) -> None:
        """Enqueue regardless of the bound (at shutdown)."""
        with self._cond:
            self._items.append((chunk, count))
            self._cond.notify_all()

    def take(self, max_items: int, timeout: float) -> list[QueuedChunk]:
        """Up to max_items chunks, waiting up to timeout for the first one."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            out: list[QueuedChunk] = []
            while self._items and len(out) < max_items:
                out.append(self._items.popleft())
            if out:
                self._cond.notify_all()
            return out

    def drain(self) -> int:
        """Empty the queue; the number of transitions it held (never sent)."""
        with self._cond:
            count = sum(n for _chunk, n in self._items)
            self._items.clear()
            self._cond.notify_all()
            return count


class ChunkBuilder:
    """Preallocated columnar rows of one TransitionChunk, filled one transition at a time.

    Actions are int64 [size] for discrete envs (action_dim 0) and float32
    [size, action_dim] for continuous ones, the two layouts replay accepts.
    """

    def __init__(self, size: int, obs_dim: int, actor_id: str, action_dim: int = 0) -> None:
        self.size = size
        self.actor_id = actor_id
        self.obs = np.zeros((size, obs_dim), np.float32)
        self.next_obs = np.zeros((size, obs_dim), np.float32)
        self.action = (
            np.zeros((size, action_dim), np.float32) if action_dim else np.zeros(size, np.int64)
        )
        self.reward = np.zeros(size, np.float32)
        self.discount = np.zeros(size, np.float32)
        self.rows = 0
        # Oldest policy version in the chunk (staleness is counted from it).
        self.policy_version = 0

    def __len__(self) -> int:
        return self.rows

    def add(self, tr: Transition, policy_version: int) -> bool:
        """Write one row; True when the chunk is full (call ``take``)."""
        i = self.rows
        if i == 0:
            self.policy_version = policy_version
        self.obs[i] = tr.obs
        self.action[i] = tr.action
        self.reward[i] = tr.reward
        self.discount[i] = tr.discount
        self.next_obs[i] = tr.next_obs
        self.rows = i + 1
        return self.rows == self.size

    def take(self) -> QueuedChunk:
        """The filled rows encoded as a chunk (a copy), and their count; empties the builder."""
        n = self.rows
        chunk = replay_pb2.TransitionChunk(
            obs=tensor.to_proto(self.obs[:n], "obs"),
            action=tensor.to_proto(self.action[:n], "action"),
            reward=tensor.to_proto(self.reward[:n], "reward"),
            discount=tensor.to_proto(self.discount[:n], "discount"),
            next_obs=tensor.to_proto(self.next_obs[:n], "next_obs"),
            actor_id=self.actor_id,
            policy_version=self.policy_version,
        )
        self.rows = 0
        return chunk, n
