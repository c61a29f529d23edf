"""A memory replay's write-ahead journal: every committed Insert on disk before it is
acknowledged, so a replay killed with SIGKILL comes back with all it acknowledged.

The file is a sequence of records::

    header  b"AQJ1" | kind u8 | 3 pad | meta_len u32 | body_len u64 | crc32 u32  (24 bytes)
    meta    JSON, meta_len bytes (keys, counters, the sender's resend marks)
    body    the transitions, field-major: for each field in FIELDS, N rows' bytes

``crc32`` covers meta and body. A file starts with a SNAPSHOT record (the whole
table: its live transitions and counters, see ``journaled``), and each commit
appends one COMMIT record (the commit's transitions, the raw numpy bytes of
the already validated chunks: no pickle, no per-transition Python). Reading
stops at the first record that is cut short or fails its checksum (a kill in
the middle of a write): what follows it is dropped, and the file is truncated
there before anything new is appended.

Durability: a record is handed to the OS (written and flushed) before the
Insert is acknowledged. The page cache survives the death of the process, so
kill -9, an OOM kill or a crash lose nothing acknowledged; a power loss or a
kernel crash can lose what the OS had not written out yet unless ``fsync``
is on (each commit then waits for the disk).

Compaction: once the file holds about twice the capacity's worth of rows, the
table's live state is written as one SNAPSHOT to ``PATH.tmp`` and moved over
``PATH`` with ``os.replace`` (atomic: a kill leaves the old file or the new).
It runs under the table's lock, so it holds inserts and samples while it writes
the table's bytes once (about 5 ms for a full 100k-transition CartPole table):
twice the write volume in all, paid once per ``capacity`` transitions.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from services.replay.errors import StoreUnavailableError
from services.replay.store import Signature

log = logging.getLogger(__name__)

MAGIC = b"AQJ1"
SNAPSHOT, COMMIT = 1, 2
_HEADER = struct.Struct("<4sB3xIQI")
# A meta this long is not ours: garbage where a header should be.
_MAX_META = 1 << 24
# Compaction is not worth it below this many bytes (tiny tables, tests).
_MIN_COMPACT_BYTES = 1 << 20
# Buffer of the append handle: small records coalesce into one write call.
_WRITE_BUFFER = 1 << 20


class JournalError(Exception):
    """A journal that cannot be opened or does not fit this replay's table (at start)."""


@dataclass(frozen=True)
class Record:
    """One record read back: its kind, meta and decoded columns (views of its body)."""

    kind: int
    meta: dict[str, Any]
    columns: dict[str, np.ndarray]
    signature: Signature | None

    @property
    def count(self) -> int:
        return int(self.meta["count"])


def field_buffers(
    signature: Signature, chunks: Sequence[Mapping[str, np.ndarray]]
) -> list[memoryview]:
    """The body of a record of chunks: each field's bytes, chunk after chunk (no copy
    of arrays that are contiguous already)."""
    out = []
    for name, dtype, _ in signature.fields:
        for chunk in chunks:
            out.append(np.ascontiguousarray(chunk[name], dtype=dtype).data.cast("B"))
    return out


def decode_body(signature: Signature, body: bytes | memoryview, count: int) -> dict[str, Any]:
    """Columns (read-only views of body) of count rows laid out field-major."""
    if len(body) != count * signature.transition_bytes:
        raise ValueError(f"body of {len(body)} bytes is not {count} rows")
    columns, offset = {}, 0
    for (name, dtype, shape), width in zip(signature.fields, signature.widths, strict=True):
        part = body[offset : offset + count * width]
        columns[name] = np.frombuffer(part, dtype=dtype).reshape(count, *shape)
        offset += count * width
    return columns


class Journal:
    """The append handle of one journal file (not thread-safe: the table's lock guards it)."""

    def __init__(self, path: str | Path, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.signature: Signature | None = None
        self.nbytes = 0  # bytes of the file that hold whole, valid records
        self.dropped_bytes = 0  # of a torn or corrupt tail found on reading
        self._file: BinaryIO | None = None
        self._broken: str = ""
        self._compact_after = 0  # after a failed compaction: bytes to wait for before retrying
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab"):
                pass
            # Held while this process lives (the kernel drops it when the process dies,
            # however it dies): two replicas appending to one file would garble it.
            self._lock = open(self.path.with_name(self.path.name + ".lock"), "ab")  # noqa: SIM115
        except OSError as err:
            raise JournalError(
                f"journal {self.path} cannot be opened for writing ({err.strerror or err}); "
                "give a writable path, or an empty journal to run without one"
            ) from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise JournalError(
                f"journal {self.path} is in use by another replay process; give each replay "
                "a journal of its own (or a Redis store to share one table)"
            ) from None

    # -- reading ---------------------------------------------------------------

    def records(self) -> Iterator[Record]:
        """Every valid record from the start, in order; afterwards ``nbytes`` is where
        the valid part ends and ``dropped_bytes`` how much follows it (torn tail)."""
        size = self.path.stat().st_size
        self.nbytes, signature = 0, None
        with open(self.path, "rb") as f:
            while True:
                record = self._read_one(f, size, signature)
                if record is None:
                    break
                signature = record.signature
                self.nbytes = f.tell()
                yield record
        self.signature = signature
        self.dropped_bytes = size - self.nbytes

    def _read_one(self, f: BinaryIO, size: int, signature: Signature | None) -> Record | None:
        """The record at f's position, or None at the end or at a torn/corrupt one."""
        start = f.tell()
        head = f.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return None
        magic, kind, meta_len, body_len, crc = _HEADER.unpack(head)
        if magic != MAGIC or kind not in (SNAPSHOT, COMMIT) or meta_len > _MAX_META:
            return None
        if start + _HEADER.size + meta_len + body_len > size:
            return None  # cut short by a kill mid-write
        meta_bytes, body = f.read(meta_len), f.read(body_len)
        if zlib.crc32(body, zlib.crc32(meta_bytes)) != crc:
            return None
        try:
            meta = json.loads(meta_bytes)
            if meta.get("signature"):
                signature = Signature.from_json(meta["signature"])
            if signature is None:
                return None if int(meta["count"]) else Record(kind, meta, {}, None)
            columns = decode_body(signature, body, int(meta["count"]))
        except (ValueError, KeyError, TypeError, AttributeError):  # valid CRC, not our JSON
            return None
        return Record(kind, meta, columns, signature)

    # -- writing ---------------------------------------------------------------

    def open_for_append(self) -> None:
        """Cut any torn tail found by ``records`` and open the file for appends."""
        try:
            with open(self.path, "r+b") as f:
                f.truncate(self.nbytes)
            self._file = self._append_handle()
        except OSError as err:
            raise JournalError(
                f"journal {self.path} cannot be opened for appending ({err.strerror or err})"
            ) from None

    def _append_handle(self) -> BinaryIO:
        # Held open across commits (one open per process, not per Insert); ``close`` ends it.
        return open(self.path, "ab", buffering=_WRITE_BUFFER)

    def append(
        self, meta: dict[str, Any], signature: Signature, chunks: Sequence[Mapping[str, np.ndarray]]
    ) -> None:
        """Write one COMMIT record of chunks and hand it to the OS (fsync if asked).

        StoreUnavailableError (the Insert is not acknowledged; the actor resends)
        when it cannot be written; the file is cut back to its last whole record.
        """
        if self._broken:
            raise StoreUnavailableError(f"the journal cannot be written: {self._broken}")
        if self.signature is None:
            meta = {**meta, "signature": signature.to_json()}
        try:
            self.nbytes += self._write(COMMIT, meta, field_buffers(signature, chunks))
        except OSError as err:
            self._recover_from(err)
        self.signature = signature

    def _write(self, kind: int, meta: dict[str, Any], body: Sequence[memoryview]) -> int:
        """One record to the append handle, flushed; returns its bytes."""
        assert self._file is not None, "open_for_append first"
        return _write_record(self._file, kind, meta, body, self.fsync)

    def _recover_from(self, err: OSError) -> None:
        """After a failed append: cut the partial record off, or refuse further appends."""
        reason = f"{self.path}: {err.strerror or err}"
        try:
            if self._file is not None:
                self._file.close()
        except OSError:
            pass  # the buffered bytes are the partial record being cut off
        try:
            os.truncate(self.path, self.nbytes)
            self._file = self._append_handle()
        except OSError as again:
            self._broken = f"{reason}; then {again.strerror or again}"
            log.error("journal %s is unusable: inserts fail until restart", self._broken)
        raise StoreUnavailableError(f"the journal cannot be written: {reason}") from None

    def should_compact(self, capacity: int) -> bool:
        """Whether the file holds about twice the capacity's worth of rows."""
        row = self.signature.transition_bytes if self.signature else 0
        return self.nbytes > max(_MIN_COMPACT_BYTES, 2 * capacity * row, self._compact_after)

    def compact(self, meta: dict[str, Any], body: Sequence[memoryview]) -> bool:
        """Replace the file by one SNAPSHOT record (meta, body) atomically; False (the
        old file kept, appends go on) if it cannot be written."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(tmp, "wb", buffering=_WRITE_BUFFER) as f:
                size = _write_record(f, SNAPSHOT, meta, body, self.fsync)
            os.replace(tmp, self.path)
            if self.fsync:
                _fsync_dir(self.path.parent)
        except OSError as err:
            log.warning("journal %s not compacted (%s); it keeps growing", self.path, err)
            tmp.unlink(missing_ok=True)
            # Not at every commit from now on: once the file has grown by as much again.
            self._compact_after = 2 * self.nbytes
            return False
        if self._file is not None:
            self._file.close()
        self.nbytes = size
        try:
            self._file = self._append_handle()
        except OSError as err:  # the snapshot is whole; only later appends are refused
            self._file = None
            self._broken = f"{self.path}: reopened after compaction: {err.strerror or err}"
            log.error("journal %s is unusable: inserts fail until restart", self._broken)
        return True

    def close(self) -> None:
        """Close the append handle (everything is flushed already) and the lock."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._lock.close()


def _write_record(
    f: BinaryIO, kind: int, meta: dict[str, Any], body: Sequence[memoryview], fsync: bool
) -> int:
    """Header, meta and body to f, flushed to the OS (and the disk if fsync)."""
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    crc = zlib.crc32(meta_bytes)
    body_len = 0
    for part in body:
        crc = zlib.crc32(part, crc)
        body_len += part.nbytes
    f.write(_HEADER.pack(MAGIC, kind, len(meta_bytes), body_len, crc))
    f.write(meta_bytes)
    for part in body:
        f.write(part)
    f.flush()
    if fsync:
        os.fsync(f.fileno())
    return _HEADER.size + len(meta_bytes) + body_len


def _fsync_dir(path: Path) -> None:
    """Make a rename in path durable (POSIX: fsync the directory)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
