"""The actor's sender: queued chunks to replay as Insert streams, nothing acknowledged lost.

A chunk leaves the actor only once the replay acknowledged it, or refused it
for good (which is logged and counted as dropped). How each failure is met:

- RESOURCE_EXHAUSTED for several chunks: the Insert was too big; send half as
  many chunks per Insert from now on (a single refused chunk is dropped);
- INVALID_ARGUMENT, UNIMPLEMENTED: the replay will refuse these chunks whatever
  we do; drop them loudly and keep acting rather than stall for ever;
- DEADLINE_EXCEEDED while acting: held back by the replay's rate limiter for a
  whole deadline, which is backpressure, not an outage: try again at once;
- UNAVAILABLE while flushing at shutdown: the replay is gone (often stopping
  too), so waiting out the flush deadline would only delay the exit;
- anything else: an outage; hold the chunks and retry with backoff
  (``actorq.retry``) until the replay answers, logging once when it starts
  and once when it ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Protocol

import grpc

from actorq.retry import Backoff, Outage, describe
from actorq.v1 import replay_pb2
from services.actor.chunks import ChunkQueue, QueuedChunk
from services.actor.config import ActorConfig
from services.actor.status import ActorSignals

log = logging.getLogger(__name__)

# Replay answers that retrying the same chunks cannot fix.
_REFUSED_CODES = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED)
# An outage's warning starts with this (and LastError's text, cleared when it ends).
_OUTAGE = "replay insert"


class TransitionSink(Protocol):
    """Where chunks go (``actorq.clients.ReplayClient`` in the service)."""

    def insert_protos(
        self, chunks: Sequence[replay_pb2.TransitionChunk], timeout: float | None = None
    ) -> replay_pb2.InsertResponse: ...


class ChunkSender:
    """Sends what the step loop queued, on a thread of its own, until stopped and flushed.

    It keeps sending while the actor steps; once the step loop has stopped and
    handed over its last chunk, ``flush`` sends what is left for a bounded
    time. Counters are written by the sender thread only.
    """

    def __init__(
        self, sink: TransitionSink, queue: ChunkQueue, cfg: ActorConfig, signals: ActorSignals
    ) -> None:
        self._sink, self._queue, self._signals = sink, queue, signals
        self._errors = signals.errors
        self._insert_timeout_s = cfg.insert_timeout_s
        # Halved whenever the replay refuses an Insert as too big.
        self._per_insert = cfg.max_chunks_per_insert
        self._backoff = Backoff()
        # The end of an Insert outage has always been logged as "replay reachable again".
        self._outage = Outage(
            log, _OUTAGE, recovery="replay reachable again after {failures} failed inserts"
        )
        self._flush_deadline: float | None = None  # set by flush(): give up after it
        self._gave_up = False  # the replay went away while flushing
        self.transitions_sent = 0
        self.transitions_dropped = 0
        self.failures = 0  # failed Insert calls of any kind
        self.rpc_s = 0.0  # seconds spent inside Insert calls
        # Chunks taken from the queue but not yet acknowledged.
        self.in_flight = 0
        self._thread = threading.Thread(target=self._run, name=f"{cfg.name}-sender", daemon=True)

    def start(self) -> None:
        """Start sending on the sender's thread."""
        self._thread.start()

    def flush(self, flush_s: float) -> None:
        """Keep sending for up to flush_s seconds after the step loop stopped, then end.

        What could not be sent is back in the queue (``ChunkQueue.drain`` counts it).
        """
        self._flush_deadline = time.monotonic() + flush_s
        if self._thread.is_alive():
            self._thread.join(flush_s + 1.0)

    def _run(self) -> None:
        # Taken from the queue but not yet acknowledged, oldest first.
        pending: list[QueuedChunk] = []
        while True:
            if not pending:
                pending = self._queue.take(self._per_insert, 0.2)
                if not pending:
                    if self._stopped() and not len(self._queue):
                        return  # stopping, and everything handed over was sent
                    continue
            self.in_flight = len(pending)
            timeout = self._timeout()
            if timeout is None or self._gave_up:
                for chunk, count in pending:
                    self._queue.put_final(chunk, count)
                self.in_flight = 0
                return  # the runner's stop() counts and logs what is left
            batch = pending[: self._per_insert]
            if self._send(batch, timeout):
                pending = pending[len(batch) :]
                self.in_flight = len(pending)

    def _stopped(self) -> bool:
        """Stopping, and the step loop has handed over its last chunk."""
        return self._signals.stop.is_set() and self._signals.stepping_done.is_set()

    def _timeout(self) -> float | None:
        """The next Insert's deadline: the configured one, cut to the flush time left
        (None once that is spent)."""
        if self._flush_deadline is None:
            return self._insert_timeout_s
        remaining = self._flush_deadline - time.monotonic()
        return min(self._insert_timeout_s, remaining) if remaining > 0 else None

    def _send(self, batch: list[QueuedChunk], timeout: float) -> bool:
        """One Insert of batch; True once the batch is settled (stored or refused for good)."""
        started = time.perf_counter()
        try:
            self._sink.insert_protos([chunk for chunk, _ in batch], timeout=timeout)
        except grpc.RpcError as err:
            self.rpc_s += time.perf_counter() - started
            self.failures += 1
            return self._failed(batch, err)
        self.rpc_s += time.perf_counter() - started
        self.transitions_sent += sum(count for _, count in batch)
        if self._outage.recovered():
            self._backoff.reset()
            self._errors.clear(_OUTAGE)
        return True

    def _failed(self, batch: list[QueuedChunk], err: grpc.RpcError) -> bool:
        """Meet one failed Insert (see the module docstring); True if batch is settled."""
        code = err.code()
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and len(batch) > 1:
            self._per_insert = max(1, len(batch) // 2)
            log.warning(
                "replay refused %d chunks in one Insert (%s); sending %d per Insert",
                len(batch),
                err.details(),
                self._per_insert,
            )
            return False
        if code in _REFUSED_CODES or code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            lost = sum(count for _, count in batch)
            self.transitions_dropped += lost
            self._errors.set(f"replay refused {lost} transitions: {describe(err)}")
            log.error("%s", self._errors.text)
            return True
        flushing = self._flush_deadline is not None
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and not flushing:
            return False  # backpressure: nothing was stored, try again
        self._errors.set(f"{_OUTAGE} failed: {describe(err)}")
        if code == grpc.StatusCode.UNAVAILABLE and flushing:
            self._gave_up = True
            return False
        self._outage.failed(
            describe(err),
            f"holding {self.in_flight} chunks and retrying with backoff until it answers",
        )
        self._wait(self._backoff.next())
        return False

    def _wait(self, seconds: float) -> None:
        """Sleep a backoff, never past the flush deadline."""
        if self._flush_deadline is not None:
            seconds = min(seconds, max(0.0, self._flush_deadline - time.monotonic()))
        time.sleep(seconds)
