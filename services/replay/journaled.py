"""A memory table that outlives its process: ``ReplayTable`` writing a ``journal``.

Every commit is appended to the journal under the table's lock, before the
store takes it, so before the Insert is acknowledged; a replica started on an
existing journal rebuilds the table from it (``_recover``) and logs what it
found. As with a Redis store, a restart then keeps:

- the newest ``capacity`` transitions under their keys, and the inserted,
  evicted and insert-call counts (the rate limiter's insert side);
- per actor: transitions inserted and when last seen (the learner's actor
  watch), and the resend marks (``resends``), so an actor's resend of a
  commit the journal holds is skipped, not stored twice.

Unlike Redis, two things come back approximately: the sampled counts (the
limiter's sample side) are those of the last commit, so batches drawn after
it are forgotten and the learner may draw up to that many again before the
limiter holds it (at most one band of the limiter, ``2 * error_buffer`` plus
one commit's worth); and every recovered transition gets the largest
priority seen so far (a prioritized sampler's priorities are not journaled).
"""

from __future__ import annotations

import logging
from typing import Any

from services.replay.checks import Chunk
from services.replay.errors import TableClosedError
from services.replay.journal import SNAPSHOT, Journal, JournalError, Record
from services.replay.rate_limiter import SampleToInsertRatio
from services.replay.resends import SenderLog, SenderMarks
from services.replay.sampler import Sampler
from services.replay.store import MemoryStore, Signature, SignatureError
from services.replay.table import ReplayTable

log = logging.getLogger("actorq.replay")


class JournaledTable(ReplayTable):
    """``ReplayTable`` over a ``MemoryStore`` whose commits go to a journal first."""

    def __init__(
        self,
        store: MemoryStore,
        sampler: Sampler,
        limiter: SampleToInsertRatio,
        journal: Journal,
        **kwargs: Any,
    ) -> None:
        super().__init__(store, sampler, limiter, **kwargs)
        self.store: MemoryStore = store
        self.journal = journal
        try:
            self.recovered = self._recover()
            journal.open_for_append()
        except BaseException:
            journal.close()  # and its lock: the journal is free for a fixed config
            raise

    def _store(
        self, chunks: list[Chunk], total: int, marks: SenderMarks, now: float | None = None
    ) -> None:
        if self._closed:  # the journal's handle is closed with the table
            raise TableClosedError("the replay is shutting down")
        signature = self.store.signature or Signature.of(chunks[0].columns)
        now = self._clock() if now is None else now
        meta = {
            "first_key": self.store.end_key,
            "count": total,
            "actor": marks.actor_id,
            "session": marks.session,
            "sequence": marks.sequences[-1] if marks.tracked else 0,
            **self._sample_counts(),
            "time": now,
        }
        self.journal.append(meta, signature, [c.columns for c in chunks])
        super()._store(chunks, total, marks, now)
        if self.journal.should_compact(self.capacity):
            self._compact()

    def _sample_counts(self) -> dict[str, Any]:
        return {
            "sampled": self._stats.sampled,
            "sample_batches": self._stats.sample_batches,
            "max_leaf": getattr(self.sampler, "max_leaf", 1.0),
        }

    def _compact(self) -> None:
        """Under the lock: rewrite the journal as one snapshot of the table."""
        stats, signature = self._stats, self.store.signature
        meta = {
            "signature": signature.to_json() if signature else None,
            "end_key": self.store.end_key,
            "count": self.store.size,
            "insert_calls": stats.insert_calls,
            "by_actor": stats.inserted_by_actor,
            "last_seen": stats.actor_last_seen_unix,
            "senders": self._senders.entries(),
            **self._sample_counts(),
        }
        body = []
        if signature is not None:
            views = self.store.live_views()
            body = [v.data.cast("B") for name, _, _ in signature.fields for v in views[name]]
        self.journal.compact(meta, body)

    def close(self) -> None:
        super().close()
        with self._cond:
            self.journal.close()

    # -- recovery --------------------------------------------------------------

    def _recover(self) -> int:
        """Rebuild the table from the journal; returns the transitions recovered."""
        records = 0
        try:
            for record in self.journal.records():
                self._apply(record)
                records += 1
        except SignatureError as err:
            raise JournalError(
                f"journal {self.journal.path} does not fit this table: {err}; move it away "
                "(or give another journal path) to start with an empty table"
            ) from None
        store, stats, lim = self.store, self._stats, self.limiter
        end, size = store.end_key, store.size
        stats.inserted, stats.evicted = end, end - size
        lim.inserts, lim.deletes, lim.samples = end, end - size, stats.sampled
        if end - size:
            self.sampler.on_evict(0, end - size)
        if size:
            self.sampler.on_insert(end - size, size)
        if records:
            log.info(
                "journal %s: recovered %d transitions (keys %d..%d; %d inserted in all) "
                "from %d records",
                self.journal.path, size, end - size, end - 1, end, records,
            )  # fmt: skip
        if self.journal.dropped_bytes:
            log.warning(
                "journal %s: dropped a torn or corrupt tail of %d bytes (a write cut short "
                "by a kill; never acknowledged)",
                self.journal.path, self.journal.dropped_bytes,
            )  # fmt: skip
        return size

    def _apply(self, record: Record) -> None:
        """One record into the store and the counters (the limiter is set at the end)."""
        meta, stats = record.meta, self._stats
        if record.kind == SNAPSHOT:
            if record.columns:
                self.store.restore(record.columns, int(meta["end_key"]))
            stats.insert_calls = int(meta["insert_calls"])
            stats.inserted_by_actor = {k: int(v) for k, v in meta["by_actor"].items()}
            stats.actor_last_seen_unix = {k: float(v) for k, v in meta["last_seen"].items()}
            self._senders = SenderLog()
            for actor_id, session, last in meta["senders"]:
                self._senders.restore(actor_id, int(session), int(last))
        else:
            first, count = int(meta["first_key"]), record.count
            if first != self.store.end_key:
                raise JournalError(
                    f"journal {self.journal.path}: a commit of keys from {first} follows "
                    f"key {self.store.end_key - 1}; the file was written by two replicas "
                    "at once or edited: move it away to start with an empty table"
                )
            if count > self.capacity:  # written with a larger capacity
                self.store.restore(record.columns, first + count)
            else:
                self.store.add([record.columns])
            actor = meta["actor"]
            stats.insert_calls += 1
            stats.inserted_by_actor[actor] = stats.inserted_by_actor.get(actor, 0) + count
            stats.actor_last_seen_unix[actor] = float(meta["time"])
            if meta["session"]:
                self._senders.restore(actor, int(meta["session"]), int(meta["sequence"]))
        stats.sampled, stats.sample_batches = int(meta["sampled"]), int(meta["sample_batches"])
        if hasattr(self.sampler, "max_leaf"):
            self.sampler.max_leaf = float(meta["max_leaf"])
