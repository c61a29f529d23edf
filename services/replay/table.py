"""The replay table: a store, a sampler and a rate limiter under one lock.

Everything a gRPC call needs happens here in plain Python, so tests drive it
without a network: validate chunks, commit an Insert stream atomically, wait
on the rate limiter (giving up when the caller goes away), sample a batch,
keep the statistics. One ``threading.Condition`` guards all state; a commit,
a sample, a cancelled caller (``wake``) or shutdown (``close``) wakes waiters,
which also re-check their caller every ``wait_slice_s``.

``ReplayTable`` is the in-process table (memory store). ``Table`` is what the
servicer needs from any table; ``redis_table.RedisTable`` is the other one,
keeping every piece of state in Redis. ``build_table`` picks by the config.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

import numpy as np

from services.replay.config import ReplayConfig
from services.replay.rate_limiter import SampleToInsertRatio
from services.replay.sampler import PrioritizedSampler, Sampler, UniformSampler
from services.replay.store import (
    FIELDS,
    MemoryStore,
    Signature,
    SignatureError,
    Store,
    is_redis_url,
)

__all__ = [
    "BatchTooLargeError",
    "Chunk",
    "InvalidChunkError",
    "ReplayTable",
    "SampledBatch",
    "SignatureError",
    "StoreUnavailableError",
    "Table",
    "TableClosedError",
    "TableMismatchError",
    "TableStats",
    "TooManyTransitionsError",
    "WaitAbandonedError",
    "WaitTimeoutError",
    "build_table",
    "validate_chunk",
]

_FLOAT_FIELDS = ("obs", "reward", "discount", "next_obs")


class InvalidChunkError(ValueError):
    """A transition chunk that cannot be stored, with the field and the reason."""


class TooManyTransitionsError(ValueError):
    """An Insert carrying more transitions than max_insert_transitions."""


class BatchTooLargeError(ValueError):
    """A batch whose bytes would not fit in one gRPC message."""


class TableClosedError(RuntimeError):
    """The table is shutting down; waiting has stopped."""


class StoreUnavailableError(RuntimeError):
    """The store (Redis) cannot be reached now; the call changed nothing it acknowledged."""


class TableMismatchError(RuntimeError):
    """The shared table in Redis was created with other settings than this replica's."""


class WaitAbandonedError(Exception):
    """The caller went away (cancelled RPC) while waiting on the rate limiter."""


class WaitTimeoutError(TimeoutError):
    """The caller's deadline passed while waiting on the rate limiter."""


@dataclass(frozen=True)
class Chunk:
    """A validated chunk: N >= 1 transitions, columnar, checked dtypes and values."""

    columns: Mapping[str, np.ndarray]
    size: int


@dataclass
class SampledBatch:
    """A sampled batch: columns (copies), their int64 keys and float32 weights."""

    columns: dict[str, np.ndarray]
    keys: np.ndarray
    weights: np.ndarray


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


def validate_chunk(columns: Mapping[str, np.ndarray | None], index: int = 0) -> Chunk:
    """Check one chunk; InvalidChunkError naming chunk index, field and problem.

    Rules: all five fields present; each has the same leading N >= 1;
    obs/next_obs float32 with equal shapes; reward/discount float32 [N];
    action int64 [N] (discrete) or float32 [N, A] (continuous); float values
    finite; discount in [0, 1].
    """
    where = f"chunk {index}: "
    missing = [name for name in FIELDS if columns.get(name) is None]
    if missing:
        raise InvalidChunkError(
            f"{where}{', '.join(missing)} missing; every chunk needs {', '.join(FIELDS)}"
        )
    cols = {name: cast(np.ndarray, columns[name]) for name in FIELDS}
    obs = cols["obs"]
    if obs.ndim < 1 or obs.shape[0] < 1:
        raise InvalidChunkError(
            f"{where}obs has shape {list(obs.shape)}; a chunk needs at least one "
            "transition (leading dimension N >= 1)"
        )
    n = int(obs.shape[0])
    for name in FIELDS[1:]:
        arr = cols[name]
        if arr.ndim < 1 or arr.shape[0] != n:
            raise InvalidChunkError(
                f"{where}{name} has shape {list(arr.shape)} but obs has {n} rows; "
                "all five tensors need the same leading dimension N"
            )
    for name in _FLOAT_FIELDS:
        if cols[name].dtype != np.float32:
            raise InvalidChunkError(f"{where}{name} is {cols[name].dtype.name}, expected float32")
    if cols["next_obs"].shape != obs.shape:
        raise InvalidChunkError(
            f"{where}next_obs has shape {list(cols['next_obs'].shape)}, but obs has "
            f"{list(obs.shape)}; they must match"
        )
    for name in ("reward", "discount"):
        if cols[name].ndim != 1:
            raise InvalidChunkError(
                f"{where}{name} has shape {list(cols[name].shape)}, expected [{n}]"
            )
    action = cols["action"]
    discrete = action.dtype == np.int64 and action.ndim == 1
    continuous = action.dtype == np.float32 and action.ndim == 2 and action.shape[1] >= 1
    if not (discrete or continuous):
        raise InvalidChunkError(
            f"{where}action is {action.dtype.name} with shape {list(action.shape)}; expected "
            f"int64 [{n}] (discrete) or float32 [{n}, A] (continuous)"
        )
    for name in (*_FLOAT_FIELDS, "action") if continuous else _FLOAT_FIELDS:
        finite = np.isfinite(cols[name])
        if not finite.all():
            row = int(np.argwhere(~finite)[0][0])
            raise InvalidChunkError(f"{where}{name} contains NaN or infinity (row {row})")
    discount = cols["discount"]
    outside = (discount < 0) | (discount > 1)
    if outside.any():
        row = int(np.argmax(outside))
        raise InvalidChunkError(
            f"{where}discount must be in [0, 1], row {row} is {float(discount[row]):g}"
        )
    return Chunk(cols, n)


def check_insert(
    chunks: Sequence[Chunk | Mapping[str, np.ndarray | None]], max_insert_transitions: int
) -> tuple[list[Chunk], int]:
    """Validated chunks of one Insert and their transition count.

    InvalidChunkError (a bad chunk, or none), TooManyTransitionsError.
    """
    valid = [c if isinstance(c, Chunk) else validate_chunk(c, i) for i, c in enumerate(chunks)]
    if not valid:
        raise InvalidChunkError("the Insert carried no chunks; send at least one")
    total = sum(c.size for c in valid)
    if total > max_insert_transitions:
        raise TooManyTransitionsError(
            f"the Insert carries {total} transitions, more than max_insert_transitions "
            f"{max_insert_transitions}; split it into several Insert calls"
        )
    return valid, total


def check_chunks_agree(chunks: Sequence[Chunk], signature: Signature | None) -> Signature:
    """The signature the chunks share (the table's, or the first chunk's); SignatureError."""
    signature = signature or Signature.of(chunks[0].columns)
    for i, chunk in enumerate(chunks):
        signature.check(chunk.columns, f"chunk {i}: ")
    return signature


def check_priorities(keys: np.ndarray, priorities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated priority update with duplicate keys removed (the last one wins).

    ValueError if keys are not int64 [M] or priorities not finite,
    non-negative float32 [M].
    """
    if keys.dtype != np.int64 or keys.ndim != 1:
        raise ValueError(f"keys is {keys.dtype.name} {list(keys.shape)}, expected int64 [M]")
    if priorities.dtype != np.float32 or priorities.shape != keys.shape:
        raise ValueError(
            f"priorities is {priorities.dtype.name} {list(priorities.shape)}, expected "
            f"float32 {list(keys.shape)} (one per key)"
        )
    if not (np.isfinite(priorities).all() and (priorities >= 0).all()):
        raise ValueError("priorities must be finite and >= 0")
    # np.unique keeps the first occurrence: take it on the reversed arrays.
    unique, last = np.unique(keys[::-1], return_index=True)
    return unique, priorities[::-1][last]


class Table(Protocol):
    """What the servicer needs from a table; ``ReplayTable`` and ``RedisTable`` subclass
    it for the parts both share (``sample``, the checks before a draw)."""

    max_insert_transitions: int
    limiter: SampleToInsertRatio

    def insert(
        self,
        chunks: Sequence[Chunk | Mapping[str, np.ndarray | None]],
        actor_id: str = "",
        *,
        should_continue: Callable[[], bool] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Commit all chunks or none; returns the size after."""
        ...

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
        """1 to count batches in one go: the first once the limiter allows it, then as
        many more as it allows right away, as if sampled one after the other."""
        ...

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> int:
        """Set priorities of live keys; returns how many were updated."""
        ...

    def _check_sample(self, batch_size: int, count: int) -> None:
        """Refuse, before any waiting, a draw no wait could make possible (ValueError;
        a bad batch size counts as a rejected call)."""
        if count < 1:
            raise ValueError(f"count must be at least 1 batch, got {count}")
        try:
            self.limiter.check_batch(batch_size)
            self._check_batch_bytes(batch_size)
        except ValueError:
            self.note_rejected()
            raise

    def _check_batch_bytes(self, batch_size: int) -> None:
        """BatchTooLargeError if batch_size rows would not fit in one message."""
        ...

    def stats(self) -> TableStats:
        """A snapshot of the statistics."""
        ...

    def note_rejected(self) -> None:
        """Count a refused call."""
        ...

    def wake(self) -> None:
        """Wake waiters so they re-check their callers."""
        ...

    def close(self) -> None:
        """Stop all waiting (shutdown)."""
        ...


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
        wait_slice_s: float = 0.1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_insert_transitions < 1:
            raise ValueError(f"max_insert_transitions must be >= 1, got {max_insert_transitions}")
        self.store = store
        self.sampler = sampler
        self.limiter = limiter
        # One commit never exceeds the capacity: it would evict its own transitions.
        self.max_insert_transitions = min(max_insert_transitions, store.capacity)
        self.max_batch_bytes = max_batch_bytes
        self._wait_slice_s = wait_slice_s
        self._clock = clock
        self._cond = threading.Condition()
        self._closed = False
        self._stats = TableStats(
            capacity=store.capacity,
            samples_per_insert=limiter.samples_per_insert,
            min_size_to_sample=limiter.min_size_to_sample,
            error_buffer=limiter.error_buffer,
            store=store.name,
        )
        # Waits in progress: id -> (kind, start), so stats include time still blocked.
        self._pending: dict[int, tuple[str, float]] = {}
        self._next_wait_id = 0

    # -- inserts -------------------------------------------------------------

    def insert(
        self,
        chunks: Sequence[Chunk | Mapping[str, np.ndarray | None]],
        actor_id: str = "",
        *,
        should_continue: Callable[[], bool] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Commit every chunk of one Insert stream, or none; returns the size after.

        Validates all chunks first (InvalidChunkError, SignatureError,
        TooManyTransitionsError: nothing stored), then waits until the rate
        limiter admits an insert. Gives up with WaitAbandonedError when
        should_continue() turns false, WaitTimeoutError after timeout seconds,
        TableClosedError on shutdown; nothing is stored in those cases either.
        """
        try:
            valid, total = check_insert(chunks, self.max_insert_transitions)
        except ValueError:
            self.note_rejected()
            raise
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            try:
                self._check_signature(valid)  # fail fast, before any waiting
                self._wait(lambda: self.limiter.can_insert(1), "insert", should_continue, deadline)
                # The signature may have been fixed by another insert while this one waited.
                self._check_signature(valid)
            except SignatureError:
                self._stats.rejected_calls += 1
                raise
            oldest = self.store.end_key - self.store.size
            first_key, evicted = self.store.add([c.columns for c in valid])
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
            stats.actor_last_seen_unix[actor_id] = self._clock()
            self._cond.notify_all()
            return self.store.size

    def _check_signature(self, chunks: Sequence[Chunk]) -> None:
        check_chunks_agree(chunks, self.store.signature)

    # -- samples -------------------------------------------------------------

    def sample_many(
        self,
        batch_size: int,
        count: int,
        *,
        should_continue: Callable[[], bool] | None = None,
        timeout: float | None = None,
    ) -> list[SampledBatch]:
        """1 to count batches: the first once ``can_sample(batch_size)`` holds, then
        as many more as the limiter allows without waiting (what count separate
        ``sample`` calls in a row would draw). Same refusals as ``sample``."""
        self._check_sample(batch_size, count)
        deadline = None if timeout is None else time.monotonic() + timeout
        batches: list[SampledBatch] = []
        with self._cond:
            self._wait(
                lambda: self.limiter.can_sample(batch_size), "sample", should_continue, deadline
            )
            try:
                self._check_batch_bytes(batch_size)
            except BatchTooLargeError:
                self._stats.rejected_calls += 1
                raise
            while len(batches) < count and (not batches or self.limiter.can_sample(batch_size)):
                end = self.store.end_key
                keys, weights = self.sampler.sample(batch_size, end - self.store.size, end)
                batches.append(SampledBatch(self.store.gather(keys), keys, weights))
                self.limiter.sample(batch_size)
                self._stats.sampled += batch_size
                self._stats.sample_batches += 1
            self._cond.notify_all()
        return batches

    def _check_batch_bytes(self, batch_size: int) -> None:
        check_batch_bytes(batch_size, self.store.signature, self.max_batch_bytes)

    # -- priorities ----------------------------------------------------------

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> int:
        """Hand priorities to the sampler (PrioritiesNotSupportedError for uniform).

        ValueError if keys are not int64 [M] or priorities not finite,
        non-negative float32 [M]; a key given twice takes its last priority.
        """
        keys, priorities = check_priorities(keys, priorities)
        with self._cond:
            return self.sampler.update_priorities(keys, priorities)

    # -- waiting, stats, lifecycle --------------------------------------------

    def _wait(
        self,
        ready: Callable[[], bool],
        kind: str,
        should_continue: Callable[[], bool] | None,
        deadline: float | None,
    ) -> None:
        """Under the lock: block until ready(), recording the blocked time."""
        if ready():
            return
        wait_id = self._next_wait_id
        self._next_wait_id += 1
        start = time.monotonic()
        self._pending[wait_id] = (kind, start)
        try:
            while not ready():
                if self._closed:
                    raise TableClosedError("the replay is shutting down")
                if should_continue is not None and not should_continue():
                    raise WaitAbandonedError(f"{kind} abandoned by the caller")
                slice_s = self._wait_slice_s
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise WaitTimeoutError(
                            f"{kind} waited {time.monotonic() - start:.1f} s for the rate "
                            f"limiter ({self._limiter_state()}) and the deadline passed"
                        )
                    slice_s = min(slice_s, remaining)
                self._cond.wait(slice_s)
        finally:
            del self._pending[wait_id]
            blocked = time.monotonic() - start
            if kind == "insert":
                self._stats.insert_blocked_s += blocked
            else:
                self._stats.sample_blocked_s += blocked

    def _limiter_state(self) -> str:
        lim = self.limiter
        return (
            f"size {lim.size}, min_size_to_sample {lim.min_size_to_sample}, "
            f"inserts {lim.inserts}, samples {lim.samples}"
        )

    def note_rejected(self) -> None:
        """Count a refused call (the servicer calls this for its own refusals too)."""
        with self._cond:
            self._stats.rejected_calls += 1

    def stats(self) -> TableStats:
        """A consistent snapshot of the statistics (including waits still blocked)."""
        with self._cond:
            snap = dataclasses.replace(
                self._stats,
                size=self.store.size,
                inserted_by_actor=dict(self._stats.inserted_by_actor),
                actor_last_seen_unix=dict(self._stats.actor_last_seen_unix),
            )
            now = time.monotonic()
            for kind, start in self._pending.values():
                if kind == "insert":
                    snap.insert_blocked_s += now - start
                else:
                    snap.sample_blocked_s += now - start
        if snap.inserted:
            snap.observed_samples_per_insert = snap.sampled / snap.inserted
        return snap

    @property
    def size(self) -> int:
        """Transitions held now."""
        with self._cond:
            return self.store.size

    def wake(self) -> None:
        """Wake every waiter so it re-checks its caller (used on RPC cancellation)."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Stop all waiting: blocked and later waits raise TableClosedError."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def check_batch_bytes(
    batch_size: int, signature: Signature | None, max_batch_bytes: int | None
) -> None:
    """BatchTooLargeError if batch_size transitions would not fit in max_batch_bytes."""
    if max_batch_bytes is None or signature is None:
        return
    per = signature.transition_bytes
    if batch_size * per > max_batch_bytes:
        raise BatchTooLargeError(
            f"batch_size {batch_size} x {per} bytes per transition exceeds the "
            f"{max_batch_bytes} bytes a batch may take; use batch_size <= "
            f"{max(1, max_batch_bytes // per)}"
        )


def make_sampler(cfg: ReplayConfig) -> Sampler:
    """The in-process sampler the config names."""
    if cfg.sampler == "prioritized":
        return PrioritizedSampler(
            cfg.capacity, cfg.seed, cfg.priority_exponent, cfg.importance_exponent
        )
    return UniformSampler(cfg.seed)


def make_limiter(cfg: ReplayConfig) -> SampleToInsertRatio:
    """The rate limiter the config describes."""
    return SampleToInsertRatio(cfg.samples_per_insert, cfg.min_size_to_sample, cfg.error_buffer)


def build_table(cfg: ReplayConfig, max_batch_bytes: int | None = None) -> Table:
    """The table a config describes: in memory, or in Redis for a redis:// store."""
    if is_redis_url(cfg.store):
        from services.replay.redis_table import RedisTable  # needs redis-py

        return RedisTable.from_config(cfg, max_batch_bytes=max_batch_bytes)
    return ReplayTable(
        MemoryStore(cfg.capacity),
        make_sampler(cfg),
        make_limiter(cfg),
        max_insert_transitions=cfg.max_insert_transitions,
        max_batch_bytes=max_batch_bytes,
    )
