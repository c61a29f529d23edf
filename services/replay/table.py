"""The replay table: what the servicer needs from one, and the in-memory one.

Everything a gRPC call needs happens in a table, in plain Python, so tests
drive it without a network: validate chunks, commit an Insert stream
atomically, wait on the rate limiter (giving up when the caller goes away),
sample a batch, keep the statistics.

``Table`` is the abstract base: the public calls and the checks every table
makes the same way (refusals before any wait, the give-up rules of a wait,
blocked time, refused-call counts, wake and close). A concrete table says how
a commit, a draw and the counters are done. ``ReplayTable`` composes a store,
a sampler and a rate limiter in this process under one
``threading.Condition``; ``redis_table.RedisTable`` keeps every piece of
state in Redis. ``factory.build_table`` builds the one a config names.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from services.replay.checks import (
    Chunk,
    check_batch_bytes,
    check_chunks_agree,
    check_insert,
    check_priorities,
)
from services.replay.errors import (
    BatchTooLargeError,
    TableClosedError,
    WaitAbandonedError,
    WaitTimeoutError,
)
from services.replay.rate_limiter import SampleToInsertRatio
from services.replay.resends import SenderLog, SenderMarks
from services.replay.sampler import Sampler
from services.replay.store import Signature, SignatureError, Store
from services.replay.waiting import BlockedTime, Patience

# Insert's chunks: validated already, or columns still to check.
Chunks = Sequence[Chunk | Mapping[str, np.ndarray | None]]


@dataclass
class SampledBatch:
    """A sampled batch: columns (copies), their int64 keys and float32 weights."""

    columns: dict[str, np.ndarray]
    keys: np.ndarray
    weights: np.ndarray


@dataclass(frozen=True)
class Committed:
    """What one Insert did: the size after it, transitions stored now, and those an
    earlier stream of the same sender had stored already (skipped, see ``resends``)."""

    size: int
    stored: int
    duplicates: int = 0


@dataclass
class TableStats:
    """Field for field the ``ReplayStats`` message, as plain Python."""

    size: int = 0
    capacity: int = 0
    inserted: int = 0
    sampled: int = 0
    evicted: int = 0
    insert_calls: int = 0
    sample_batches: int = 0
    samples_per_insert: float = 0.0
    min_size_to_sample: int = 0
    error_buffer: float = 0.0
    observed_samples_per_insert: float = 0.0
    insert_blocked_s: float = 0.0
    sample_blocked_s: float = 0.0
    inserted_by_actor: dict[str, int] = field(default_factory=dict)
    actor_last_seen_unix: dict[str, float] = field(default_factory=dict)
    store: str = ""
    rejected_calls: int = 0


class Table(ABC):
    """What the servicer needs from a table, and what every table does alike.

    Subclasses call ``__init__`` and implement ``_commit``, ``_draw``,
    ``update_priorities``, ``signature`` and ``_counts``; the refusals before a
    wait, the give-up rules of a wait (``_wait_slice``), blocked time, refused
    calls, ``wake`` and ``close`` are shared.
    """

    def __init__(
        self,
        limiter: SampleToInsertRatio,
        *,
        max_insert_transitions: int,
        capacity: int,
        max_batch_bytes: int | None,
        max_abs_reward: float | None = None,
    ) -> None:
        if max_insert_transitions < 1:
            raise ValueError(f"max_insert_transitions must be >= 1, got {max_insert_transitions}")
        self.limiter = limiter
        # One commit never exceeds the capacity: it would evict its own transitions.
        self.max_insert_transitions = min(max_insert_transitions, capacity)
        self.capacity = capacity
        self.max_batch_bytes = max_batch_bytes
        self.max_abs_reward = max_abs_reward
        # Re-entrant (Condition's default lock), so counting a refusal under it is fine.
        self._cond = threading.Condition()
        self._closed = False
        self._rejected = 0
        self._blocked = BlockedTime()

    # -- the calls the servicer makes ----------------------------------------

    def insert(
        self,
        chunks: Chunks,
        actor_id: str = "",
        *,
        should_continue: Callable[[], bool] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Commit every chunk of one Insert stream, or none; returns the size after
        (``insert_stream`` for chunks that carry resend marks)."""
        marks = SenderMarks(actor_id, 0, (0,) * len(chunks))
        return self.insert_stream(
            chunks, marks, should_continue=should_continue, timeout=timeout
        ).size

    def insert_stream(
        self,
        chunks: Chunks,
        marks: SenderMarks,
        *,
        should_continue: Callable[[], bool] | None = None,
        timeout: float | None = None,
    ) -> Committed:
        """Commit the chunks of one Insert stream not stored before (``resends``): all
        of them, or none.

        Validates all chunks first (InvalidChunkError, SignatureError,
        TooManyTransitionsError: nothing stored), then waits until the rate
        limiter admits an insert (a stream whose chunks were all stored before is
        acknowledged at once). Gives up with WaitAbandonedError when
        should_continue() turns false, WaitTimeoutError after timeout seconds,
        TableClosedError on shutdown; nothing is stored in those cases either.
        StoreUnavailableError when the store cannot be reached (nothing
        acknowledged).
        """
        try:
            valid, total = check_insert(chunks, self.max_insert_transitions, self.max_abs_reward)
        except ValueError:
            self.note_rejected()
            raise
        return self._commit(valid, total, marks, Patience.of(should_continue, timeout))

    def sample(
        self,
        batch_size: int,
        *,
        should_continue: Callable[[], bool] | None = None,
        timeout: float | None = None,
    ) -> SampledBatch:
        """One batch once the rate limiter allows it: ``sample_many(batch_size, 1)``.

        ValueError for a batch size that is < 1 or could deadlock the limiter
        (checked before waiting); BatchTooLargeError if the batch would not fit
        in max_batch_bytes; the same give-up errors as ``insert``.
        """
        (batch,) = self.sample_many(batch_size, 1, should_continue=should_continue, timeout=timeout)
        return batch

    def sample_many(
        self,
        batch_size: int,
        count: int,
        *,
        should_continue: Callable[[], bool] | None = None,
        timeout: float | None = None,
    ) -> list[SampledBatch]:
        """1 to count batches in one go: the first once ``can_sample(batch_size)``
        holds, then as many more as the limiter allows without waiting (what
        count separate ``sample`` calls in a row would draw). Same refusals as
        ``sample``."""
        if count < 1:
            raise ValueError(f"count must be at least 1 batch, got {count}")
        try:  # refused before any waiting or allocating: neither could make it possible
            self.limiter.check_batch(batch_size)
            check_batch_bytes(batch_size, None, self.max_batch_bytes)  # the smallest rows
        except ValueError:
            self.note_rejected()
            raise
        self._load_signature()
        self._check_batch_bytes(batch_size)
        return self._draw(batch_size, count, Patience.of(should_continue, timeout))

    @abstractmethod
    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> int:
        """Set priorities of live keys; returns how many were updated.

        PrioritiesNotSupportedError for uniform sampling; ValueError if keys
        are not int64 [M] or priorities not finite, non-negative float32 [M];
        a key given twice takes its last priority.
        """

    def stats(self) -> TableStats:
        """A snapshot of the statistics (blocked time includes waits still blocked)."""
        snap = self._counts()
        with self._cond:
            snap.rejected_calls = self._rejected
            blocked = self._blocked.totals()
        snap.insert_blocked_s, snap.sample_blocked_s = blocked["insert"], blocked["sample"]
        lim = self.limiter
        snap.capacity = self.capacity
        snap.samples_per_insert = lim.samples_per_insert
        snap.min_size_to_sample = lim.min_size_to_sample
        snap.error_buffer = lim.error_buffer
        if snap.inserted:
            snap.observed_samples_per_insert = snap.sampled / snap.inserted
        return snap

    def note_rejected(self) -> None:
        """Count a refused call (the servicer calls this for its own refusals too)."""
        with self._cond:
            self._rejected += 1

    def wake(self) -> None:
        """Wake every waiter so it re-checks its caller (used on RPC cancellation)."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Stop all waiting: blocked and later waits raise TableClosedError."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- what a concrete table provides ---------------------------------------

    @property
    @abstractmethod
    def signature(self) -> Signature | None:
        """The field layout fixed by the first insert (None before it)."""

    @abstractmethod
    def _commit(
        self, chunks: list[Chunk], total: int, marks: SenderMarks, patience: Patience
    ) -> Committed:
        """Store the validated chunks (total transitions) not stored before, once the
        limiter admits an insert."""

    def _load_signature(self) -> None:
        """Make ``signature`` what the store holds (the Redis table reads it from Redis
        on a fresh replica), so a batch is checked against it before any draw."""
        return None  # the memory table's store always knows its own

    @abstractmethod
    def _draw(self, batch_size: int, count: int, patience: Patience) -> list[SampledBatch]:
        """1 to count batches of a checked batch_size, waiting for the first."""

    def _counters(self) -> SampleToInsertRatio:
        """The limiter with the table's counters as they are now (the memory
        table's own; the Redis table reads the shared ones)."""
        return self.limiter

    @abstractmethod
    def _counts(self) -> TableStats:
        """The store's counters: size, inserted, sampled, evicted, calls, batches,
        per-actor numbers, store name."""

    # -- shared pieces ---------------------------------------------------------

    def _check_batch_bytes(self, batch_size: int) -> None:
        """BatchTooLargeError (a refused call) if batch_size rows would not fit in
        one message."""
        try:
            check_batch_bytes(batch_size, self.signature, self.max_batch_bytes)
        except BatchTooLargeError:
            self.note_rejected()
            raise

    def _wait_slice(self, kind: str, patience: Patience, started: float, slice_s: float) -> float:
        """How long to wait next (at most slice_s), or the error that ends the wait:
        TableClosedError, WaitAbandonedError, WaitTimeoutError (naming the
        limiter's counters as ``_counters()`` reads them)."""
        if self._closed:
            raise TableClosedError("the replay is shutting down")
        if patience.should_continue is not None and not patience.should_continue():
            raise WaitAbandonedError(f"{kind} abandoned by the caller")
        if patience.deadline is None:
            return slice_s
        remaining = patience.deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeoutError(
                f"{kind} waited {time.monotonic() - started:.1f} s for the rate "
                f"limiter ({self._counters().describe()}) and the deadline passed"
            )
        return min(slice_s, remaining)

    @contextlib.contextmanager
    def _blocked_time(self, kind: str) -> Iterator[Callable[[], float]]:
        """Count one call's waits (``insert`` or ``sample``) as blocked time.

        Call the yielded ``started()`` before each wait: the first call starts
        the clock (stats count it while it runs) and every call returns when it
        started; leaving the block stops it.
        """
        begun: list[tuple[int, float]] = []

        def started() -> float:
            if not begun:
                with self._cond:
                    begun.append(self._blocked.begin(kind))
            return begun[0][1]

        try:
            yield started
        finally:
            if begun:
                with self._cond:
                    self._blocked.end(begun[0][0])


class ReplayTable(Table):
    """Store + sampler + rate limiter, thread-safe, with statistics.

    **How a multi-transition commit meets the per-transition limiter.** An
    Insert stream of K transitions is admitted when the limiter would admit
    *one* insert (``can_insert(1)``, exactly Reverb's ``AwaitCanInsert``),
    then all K are counted. The commit may thus push the diff past
    ``max_diff`` by at most ``(K - 1) * samples_per_insert``
    (K <= max_insert_transitions); further inserts then wait until sampling
    has brought it back. The long-run ratio is unchanged; only the band is
    widened transiently by one commit.

    Why not wait for ``can_insert(K)``? Then a commit waits while
    ``diff > max_diff - K * spi``; a sample of B waits while
    ``diff < min_diff + B``; both wait forever once
    ``2 * error_buffer < K * spi + B``, which large commits reach easily
    (64 transitions at spi 16 already need error_buffer >= 544). Admitting on
    one insert keeps the deadlock-free condition independent of K:
    ``2 * error_buffer >= spi + B`` (see ``SampleToInsertRatio.max_sample_batch``);
    batches above that are refused up front in ``sample``.
    """

    def __init__(
        self,
        store: Store,
        sampler: Sampler,
        limiter: SampleToInsertRatio,
        *,
        max_insert_transitions: int,
        max_batch_bytes: int | None = None,
        max_abs_reward: float | None = None,
        wait_slice_s: float = 0.1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            limiter,
            max_insert_transitions=max_insert_transitions,
            capacity=store.capacity,
            max_batch_bytes=max_batch_bytes,
            max_abs_reward=max_abs_reward,
        )
        self.store = store
        self.sampler = sampler
        self._wait_slice_s = wait_slice_s
        self._clock = clock
        self._stats = TableStats(store=store.name)  # the counters a commit or draw moves
        self._senders = SenderLog()

    @property
    def signature(self) -> Signature | None:
        return self.store.signature

    @property
    def size(self) -> int:
        """Transitions held now."""
        with self._cond:
            return self.store.size

    def _commit(
        self, chunks: list[Chunk], total: int, marks: SenderMarks, patience: Patience
    ) -> Committed:
        with self._cond:
            try:
                check_chunks_agree(chunks, self.store.signature)  # fail fast, before waiting
                if self._senders.first_new(marks) == len(chunks):  # a resend, all stored
                    return Committed(self.store.size, 0, total)
                self._wait(lambda: self.limiter.can_insert(1), "insert", patience)
                # The signature may have been fixed by another insert while this one waited.
                check_chunks_agree(chunks, self.store.signature)
            except SignatureError:
                self.note_rejected()
                raise
            skip = self._senders.first_new(marks)  # again: the sender may have resent meanwhile
            fresh = chunks[skip:]
            duplicates = total - sum(c.size for c in fresh)
            if not fresh:
                return Committed(self.store.size, 0, duplicates)
            stored = total - duplicates
            self._store(fresh, stored, marks)
            self._senders.record(marks)
            self._cond.notify_all()
            return Committed(self.store.size, stored, duplicates)

    def _store(
        self, chunks: list[Chunk], total: int, marks: SenderMarks, now: float | None = None
    ) -> None:
        """Under the lock: add chunks (total transitions) of marks' sender, seen at now
        (the clock's time by default), to the store, sampler, limiter and counters
        (``journaled`` writes them down first)."""
        actor_id = marks.actor_id
        oldest = self.store.end_key - self.store.size
        first_key, evicted = self.store.add([c.columns for c in chunks])
        self.limiter.insert(total)
        if evicted:
            self.limiter.delete(evicted)
            self.sampler.on_evict(oldest, evicted)
        self.sampler.on_insert(first_key, total)
        stats = self._stats
        stats.inserted += total
        stats.evicted += evicted
        stats.insert_calls += 1
        stats.inserted_by_actor[actor_id] = stats.inserted_by_actor.get(actor_id, 0) + total
        stats.actor_last_seen_unix[actor_id] = self._clock() if now is None else now

    def _draw(self, batch_size: int, count: int, patience: Patience) -> list[SampledBatch]:
        batches: list[SampledBatch] = []
        lim = self.limiter
        with self._cond:
            self._wait(lambda: lim.can_sample(batch_size), "sample", patience)
            self._check_batch_bytes(batch_size)  # the first insert may have come meanwhile
            while len(batches) < count and (not batches or lim.can_sample(batch_size)):
                end = self.store.end_key
                keys, weights = self.sampler.sample(batch_size, end - self.store.size, end)
                batches.append(SampledBatch(self.store.gather(keys), keys, weights))
                lim.sample(batch_size)
                self._stats.sampled += batch_size
                self._stats.sample_batches += 1
            self._cond.notify_all()
        return batches

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> int:
        """Hand priorities to the sampler (PrioritiesNotSupportedError for uniform)."""
        keys, priorities = check_priorities(keys, priorities)
        with self._cond:
            return self.sampler.update_priorities(keys, priorities)

    def _wait(self, ready: Callable[[], bool], kind: str, patience: Patience) -> None:
        """Under the lock: block until ready(), recording the blocked time."""
        if ready():
            return
        with self._blocked_time(kind) as started:
            while not ready():
                self._cond.wait(self._wait_slice(kind, patience, started(), self._wait_slice_s))

    def _counts(self) -> TableStats:
        with self._cond:
            return dataclasses.replace(
                self._stats,
                size=self.store.size,
                inserted_by_actor=dict(self._stats.inserted_by_actor),
                actor_last_seen_unix=dict(self._stats.actor_last_seen_unix),
            )
