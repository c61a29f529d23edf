"""A Redis replica's copy of the table's priorities, to draw prioritized batches from.

The sum tree over the priorities is not stored in Redis: each replica builds
it from the leaves (``load``) and moves it forward one logged change at a
time (``apply``); see ``redis_lua`` for why a draw from it is exact. The
table sends the keys drawn here with the tree's version to Redis, which
serves them only if the table is still at that version.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.replay.sampler import SumTree, proportional_draw


@dataclass(frozen=True)
class MirrorDraw:
    """Keys and importance weights drawn at one version of the table's priorities."""

    epoch: bytes
    version: int
    keys: np.ndarray
    weights: np.ndarray


class PriorityMirror:
    """The sum tree of a table's priorities at a known (epoch, version); thread-safe."""

    def __init__(self, capacity: int, importance_exponent: float) -> None:
        self.capacity = capacity
        self.importance_exponent = importance_exponent
        self.tree = SumTree(capacity)
        self.epoch: bytes | None = None  # None: not loaded yet
        self.version = 0
        self.end_key = 0
        self.size = 0
        self._lock = threading.Lock()

    def draw(self, u: np.ndarray) -> MirrorDraw | None:
        """Keys for uniform numbers u (one row a batch), None before the first ``load``.

        An empty table gives placeholder keys: the script will say wait (or stale).
        """
        with self._lock:
            if self.epoch is None:
                return None
            if self.size > 0:
                first_key = self.end_key - self.size
                beta = self.importance_exponent
                drawn = [proportional_draw(self.tree, row, first_key, self.size, beta) for row in u]
                keys = np.concatenate([k for k, _ in drawn])
                weights = np.concatenate([w for _, w in drawn])
            else:
                keys = np.zeros(u.size, np.int64)
                weights = np.ones(u.size, np.float32)
            return MirrorDraw(self.epoch, self.version, keys, weights)

    def load(self, epoch: bytes, version: int, end_key: int, size: int, leaves: bytes) -> None:
        """Take the table's state as SNAPSHOT returned it."""
        values = np.zeros(self.capacity, dtype=np.float64)
        got = np.frombuffer(leaves, dtype="<f8")[: self.capacity]
        values[: got.size] = got
        with self._lock:
            self.tree.load(values)
            self.epoch, self.version, self.end_key, self.size = epoch, version, end_key, size

    def apply(self, version: int, change: Sequence[bytes]) -> bool:
        """Apply change number ``version`` if it is the next (True if applied before);
        False for a gap: changes are missing, reload."""
        with self._lock:
            if self.epoch is not None and version <= self.version:
                return True  # another thread of this replica applied it already
            if self.epoch is None or version != self.version + 1:
                return False
            fields = dict(zip(change[::2], change[1::2], strict=True))
            if fields[b"kind"] == b"insert":
                (leaf,) = struct.unpack("<d", fields[b"leaf"])
                self.tree.set_run(int(fields[b"slot"]), int(fields[b"count"]), leaf)
                self.end_key, self.size = int(fields[b"end_key"]), int(fields[b"size"])
            else:
                slots = np.frombuffer(fields[b"slots"], dtype="<f8").astype(np.int64)
                self.tree.set(slots, np.frombuffer(fields[b"leaves"], dtype="<f8"))
            self.version = version
            return True
