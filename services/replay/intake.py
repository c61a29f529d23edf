"""One Insert stream on its way in: bounded in bytes, checked chunk by chunk, committed
only after its marker.

gRPC hands the servicer a stream's messages one by one; ``InsertIntake`` keeps
what the table will commit and refuses, at the message that breaks a rule and
before keeping it:

- more bytes than ``max_insert_bytes`` in one stream (``InsertTooLargeError``:
  RESOURCE_EXHAUSTED, the sender splits its Inserts) or than all open streams
  may hold together (``BufferFullError``: RESOURCE_EXHAUSTED marked busy, the
  sender backs off and resends);
- more transitions than ``max_insert_transitions`` (``TooManyTransitionsError``);
- a chunk that does not decode or validate, a message after the commit marker,
  a marker that carries data, chunks of more than one sender (ValueError:
  INVALID_ARGUMENT).

A stream is complete only once its commit marker arrived (``complete``): one
cut short by a broken or oversized message or a dropped connection ends
without it, and nothing of it is stored.
"""

from __future__ import annotations

import threading

import numpy as np

from actorq import tensor
from actorq.v1 import replay_pb2
from services.replay.checks import Chunk, validate_chunk
from services.replay.errors import InvalidChunkError, TooManyTransitionsError
from services.replay.resends import SenderMarks, check_marks
from services.replay.store import FIELDS


class InsertTooLargeError(ValueError):
    """An Insert stream carrying more bytes than max_insert_bytes."""


class BufferFullError(RuntimeError):
    """The open Insert streams hold max_buffered_insert_bytes together: busy, retry."""


class InsertBudget:
    """Bytes every open Insert stream buffers together, bounded (thread-safe)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.in_use = 0
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> bool:
        """Reserve nbytes; False (nothing reserved) if that would pass the bound."""
        with self._lock:
            if self.in_use + nbytes > self.max_bytes:
                return False
            self.in_use += nbytes
            return True

    def give_back(self, nbytes: int) -> None:
        with self._lock:
            self.in_use -= nbytes


def decode_chunk(
    msg: replay_pb2.TransitionChunk, index: int, max_abs_reward: float | None = None
) -> Chunk:
    """Decode and validate one TransitionChunk; InvalidChunkError names the tensor."""
    columns: dict[str, np.ndarray | None] = {}
    for name in FIELDS:
        if not msg.HasField(name):
            columns[name] = None
            continue
        try:
            columns[name] = tensor.from_proto(getattr(msg, name))
        except tensor.TensorError as err:
            raise InvalidChunkError(f"chunk {index}: {name}: {err}") from err
    return validate_chunk(columns, index, max_abs_reward)


class InsertIntake:
    """Collects one Insert stream (see the module doc); ``release`` when done with it."""

    def __init__(
        self,
        budget: InsertBudget,
        max_bytes: int,
        max_transitions: int,
        max_abs_reward: float | None = None,
    ) -> None:
        self._budget = budget
        self._max_bytes = max_bytes
        self._max_transitions = max_transitions
        self._max_abs_reward = max_abs_reward
        self.chunks: list[Chunk] = []
        self.transitions = 0
        self.nbytes = 0
        self.complete = False
        self._actor_ids: list[str] = []
        self._sessions: list[int] = []
        self._sequences: list[int] = []

    def add(self, msg: replay_pb2.TransitionChunk) -> None:
        """Take the stream's next message (a chunk, or the closing commit marker)."""
        index = len(self.chunks)
        if self.complete:
            raise InvalidChunkError(
                "a message came after the commit marker; the marker closes the stream"
            )
        if msg.commit:
            if any(msg.HasField(name) for name in FIELDS):
                raise InvalidChunkError(
                    f"chunk {index} carries the commit marker and data; the marker is a "
                    "message of its own after the last chunk"
                )
            self.complete = True
            return
        size = msg.ByteSize()
        if self.nbytes + size > self._max_bytes:
            raise InsertTooLargeError(
                f"the Insert stream carries more than max_insert_bytes {self._max_bytes} "
                f"bytes (at least {self.nbytes + size} by chunk {index}); split it into "
                "several Insert calls"
            )
        if not self._budget.take(size):
            raise BufferFullError(
                f"open Insert streams hold {self._budget.in_use} of the "
                f"{self._budget.max_bytes} bytes they may buffer together; back off and resend"
            )
        self.nbytes += size
        chunk = decode_chunk(msg, index, self._max_abs_reward)
        if self.transitions + chunk.size > self._max_transitions:
            raise TooManyTransitionsError(
                f"the Insert stream carries more than max_insert_transitions "
                f"{self._max_transitions} transitions (at least {self.transitions + chunk.size} "
                f"by chunk {index}); split it into several Insert calls"
            )
        self.chunks.append(chunk)
        self.transitions += chunk.size
        self._actor_ids.append(msg.actor_id)
        self._sessions.append(msg.session)
        self._sequences.append(msg.sequence)

    def marks(self) -> SenderMarks:
        """Who sent the chunks and their sequences (InvalidChunkError if inconsistent)."""
        return check_marks(self._actor_ids, self._sessions, self._sequences)

    def release(self) -> None:
        """Give the buffered bytes back to the shared budget (once the commit is done)."""
        self._budget.give_back(self.nbytes)
        self.nbytes = 0
