"""Where transitions live: the ``Store`` seam, its in-memory ring buffer, store URLs.

A store holds up to ``capacity`` transitions under consecutive int64 keys
(item ids): the live keys are always ``[end_key - size, end_key)``, oldest
first, and a full store evicts the oldest (FIFO) to make room. It knows
nothing about rate limits or sampling order; the table composes those.

The field layout (per-transition shape and dtype of obs, action, reward,
discount, next_obs) is the store's ``Signature``, fixed by the first insert.
The Redis store (``redis_table``) keeps a transition as one packed row of
``Signature.transition_bytes`` bytes: each field's bytes in FIELDS order.

``store`` in the config is ``memory`` or a Redis URL; ``check_store`` and
``actorq.config.redact_url`` read it without importing redis (a memory-only install needs
no Redis client).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import numpy as np

from actorq.config import ConfigError, is_redis_url, redact_url

FIELDS = ("obs", "action", "reward", "discount", "next_obs")

Columns = Mapping[str, np.ndarray]


class SignatureError(ValueError):
    """A chunk whose per-transition shapes or dtypes differ from the table's."""


@dataclass(frozen=True)
class Signature:
    """Per-transition dtype and shape of each field (the leading N dropped)."""

    fields: tuple[tuple[str, np.dtype, tuple[int, ...]], ...]

    @classmethod
    def of(cls, columns: Columns) -> Signature:
        """The signature of a chunk of columns with a shared leading dimension."""
        return cls(
            tuple((name, columns[name].dtype, tuple(columns[name].shape[1:])) for name in FIELDS)
        )

    @classmethod
    def for_spaces(cls, obs_dim: int, action_dim: int) -> Signature:
        """The layout actors send for flat observations of obs_dim and discrete actions
        (action_dim 0: int64 []) or continuous ones (float32 [action_dim])."""
        f32 = np.dtype(np.float32)
        action = (np.dtype(np.int64), ()) if action_dim == 0 else (f32, (action_dim,))
        return cls(
            (
                ("obs", f32, (obs_dim,)),
                ("action", *action),
                ("reward", f32, ()),
                ("discount", f32, ()),
                ("next_obs", f32, (obs_dim,)),
            )
        )

    @functools.cached_property
    def widths(self) -> tuple[int, ...]:
        """Bytes of one transition's value of each field (computed once: hot path)."""
        return tuple(math.prod(shape) * dtype.itemsize for _, dtype, shape in self.fields)

    @functools.cached_property
    def transition_bytes(self) -> int:
        """Bytes of one transition across all fields."""
        return sum(self.widths)

    def check(self, columns: Columns, where: str = "") -> None:
        """SignatureError naming the first field that does not match."""
        for name, dtype, shape in self.fields:
            arr = columns[name]
            if arr.dtype != dtype or tuple(arr.shape[1:]) != shape:
                raise SignatureError(
                    f"{where}{name} is {arr.dtype.name} with per-transition shape "
                    f"{list(arr.shape[1:])}, but this table stores {dtype.name} "
                    f"{list(shape)} (fixed by the first insert)"
                )

    def describe(self) -> str:
        """One line for logs: ``obs float32[4], action int64[], ...``."""
        return ", ".join(f"{n} {d.name}{list(s)}" for n, d, s in self.fields)

    def to_json(self) -> str:
        """Canonical text (byte order included), as the Redis store keeps it."""
        return json.dumps([[n, d.str, list(s)] for n, d, s in self.fields], separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Signature:
        """Inverse of ``to_json``."""
        return cls(tuple((n, np.dtype(d), tuple(s)) for n, d, s in json.loads(text)))

    def pack_rows(self, chunks: Sequence[Columns]) -> bytes:
        """The chunks' transitions as packed rows (one copy, no per-transition Python)."""
        total = sum(int(c["obs"].shape[0]) for c in chunks)
        rows = np.empty((total, self.transition_bytes), dtype=np.uint8)
        start = 0
        for chunk in chunks:
            n = int(chunk["obs"].shape[0])
            col = 0
            for (name, dtype, _), width in zip(self.fields, self.widths, strict=True):
                arr = np.ascontiguousarray(chunk[name], dtype=dtype)
                rows[start : start + n, col : col + width] = arr.view(np.uint8).reshape(n, width)
                col += width
            start += n
        return rows.tobytes()

    def unpack_rows(self, blob: bytes, count: int) -> dict[str, np.ndarray]:
        """Columns (fresh arrays) of ``count`` packed rows."""
        rows = np.frombuffer(blob, dtype=np.uint8).reshape(count, self.transition_bytes)
        out: dict[str, np.ndarray] = {}
        col = 0
        for (name, dtype, shape), width in zip(self.fields, self.widths, strict=True):
            out[name] = rows[:, col : col + width].copy().view(dtype).reshape(count, *shape)
            col += width
        return out


class Store(Protocol):
    """Storage seam of the in-process table (``ReplayTable``): the memory ring buffer.

    Callers hold the table's lock, so an implementation needs no locking of
    its own; ``add`` must store every chunk or none. The Redis store is a
    whole table instead (``redis_table.RedisTable``): there the rows, the
    limiter's counters and the priorities must change in one Redis script,
    which no per-part seam can promise.
    """

    name: str
    capacity: int

    @property
    def size(self) -> int:
        """Transitions held now."""
        ...

    @property
    def end_key(self) -> int:
        """Key the next inserted transition gets; live keys are [end_key - size, end_key)."""
        ...

    @property
    def signature(self) -> Signature | None:
        """The field layout, None until the first insert."""
        ...

    def add(self, chunks: Sequence[Columns]) -> tuple[int, int]:
        """Append chunks (already validated, total <= capacity) in order.

        Returns (first new key, number of transitions evicted to make room).
        """
        ...

    def gather(self, keys: np.ndarray) -> dict[str, np.ndarray]:
        """Copies of the fields of live keys (int64 array), in that order."""
        ...


class MemoryStore:
    """Preallocated columnar numpy ring buffer, one array per field.

    Arrays are allocated on the first insert, when the signature is known
    (given, or the first insert's); a chunk is written with at most two slice
    assignments per field (two when it wraps around the end), so no
    per-transition Python runs.
    """

    name = "memory"

    def __init__(self, capacity: int, signature: Signature | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._size = 0
        self._end_key = 0
        self._signature: Signature | None = signature
        self._arrays: dict[str, np.ndarray] = {}

    @property
    def size(self) -> int:
        return self._size

    @property
    def end_key(self) -> int:
        return self._end_key

    @property
    def signature(self) -> Signature | None:
        return self._signature

    def _allocate(self, signature: Signature) -> None:
        self._arrays = {
            name: np.empty((self.capacity, *shape), dtype=dtype)
            for name, dtype, shape in signature.fields
        }
        self._signature = signature

    def add(self, chunks: Sequence[Columns]) -> tuple[int, int]:
        total = sum(int(c["obs"].shape[0]) for c in chunks)
        if total > self.capacity:
            raise ValueError(
                f"{total} transitions in one insert exceed the capacity {self.capacity}"
            )
        if not chunks:
            return self._end_key, 0
        # Check everything before writing anything: all or nothing.
        signature = self._signature or Signature.of(chunks[0])
        for i, chunk in enumerate(chunks):
            signature.check(chunk, f"chunk {i}: ")
        if not self._arrays:
            self._allocate(signature)
        first_key = self._end_key
        for chunk in chunks:
            n = int(chunk["obs"].shape[0])
            start = self._end_key % self.capacity
            head = min(n, self.capacity - start)
            for name in FIELDS:
                dst, src = self._arrays[name], chunk[name]
                dst[start : start + head] = src[:head]
                if head < n:
                    dst[: n - head] = src[head:]
            self._end_key += n
        evicted = max(0, self._size + total - self.capacity)
        self._size += total - evicted
        return first_key, evicted

    def gather(self, keys: np.ndarray) -> dict[str, np.ndarray]:
        slots = keys % self.capacity
        # Fancy indexing copies, so the batch stays valid after the lock is released.
        return {name: arr[slots] for name, arr in self._arrays.items()}

    def live_views(self) -> dict[str, list[np.ndarray]]:
        """Each field's live rows, oldest first, as one or two views of the ring (no
        copy: valid until the next add; the journal's snapshot writes them out)."""
        if not self._size:
            return {name: [] for name in self._arrays}
        start = (self._end_key - self._size) % self.capacity
        head = min(self._size, self.capacity - start)  # rows before the ring wraps
        views: dict[str, list[np.ndarray]] = {}
        for name, arr in self._arrays.items():
            views[name] = [arr[start : start + head]]
            if head < self._size:
                views[name].append(arr[: self._size - head])
        return views

    def restore(self, columns: Columns, end_key: int) -> None:
        """Hold the newest <= capacity rows of columns, the last under key end_key - 1,
        and nothing else (a journal's recovery). SignatureError if their layout is
        not this store's."""
        signature = Signature.of(columns)
        if self._signature is not None and signature != self._signature:
            raise SignatureError(
                f"they hold {signature.describe()}, but this table stores "
                f"{self._signature.describe()}"
            )
        n = int(columns["obs"].shape[0])
        keep = min(n, self.capacity)
        self._end_key, self._size = end_key - keep, 0
        self._signature = signature
        if keep:
            self.add([{name: arr[n - keep :] for name, arr in columns.items()}])


def check_store(store: str) -> None:
    """ConfigError unless store is 'memory' or a Redis URL redis-py can connect to."""
    if store == "memory":
        return
    label = redact_url(store)
    if not is_redis_url(store):
        raise ConfigError(
            f"store {label!r} unknown: use 'memory' or a Redis URL such as "
            "redis://HOST:PORT/DB (rediss:// for TLS, redis://:PASSWORD@HOST:PORT/DB "
            "with a password)"
        )
    try:
        parts = urlsplit(store)
        port = parts.port
    except ValueError as err:
        raise ConfigError(f"store {label!r} is not a valid URL: {err}") from None
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError(f"store {label!r} needs a socket path: unix:///path/redis.sock")
        return
    if not parts.hostname:
        raise ConfigError(f"store {label!r} has no host: use redis://HOST:PORT/DB")
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"store {label!r}: port {port} is outside 1..65535")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ConfigError(
            f"store {label!r}: the path must be a database number (redis://HOST:PORT/0), "
            f"got {parts.path!r}"
        )
