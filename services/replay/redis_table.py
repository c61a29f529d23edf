"""The replay table kept entirely in Redis: restart-safe and shared by replicas.

A ``RedisTable`` holds no state of its own that matters: transitions, the
FIFO ring, priorities, rate-limiter counters, sizes and per-actor counts all
live in Redis under ``actorq:{TABLE}:`` (layout in ``redis_lua``), and every
change is one Lua script, atomic in Redis and in its AOF. So:

- an Insert is acknowledged only after its script ran in Redis; a replay
  process killed mid-insert leaves either the whole commit or nothing;
- any number of replay processes on one Redis serve one table: capacity,
  eviction, sampling and samples-per-insert hold across them, because each
  script checks the limiter and changes the table in one step;
- what a Redis restart keeps is what its persistence kept: with AOF and
  ``appendfsync always`` every acknowledged insert; with ``everysec`` (what
  we ship, Redis's default) everything on a clean shutdown and all but at
  most about the last second if Redis itself crashes. A half-written commit
  is never loaded (Redis drops an incomplete MULTI/EXEC at the end of the AOF).

What a replica does keep is a cache it can always rebuild: the sum tree of
the priorities (``priority_mirror``), brought up to date from Redis's change
log before a prioritized draw is served (see ``redis_lua``).

Waiting on the rate limiter: a call the limiter holds re-reads the shared
counters every ``poll_s`` (other replicas' progress) and at once when this
replica commits or samples, then retries its script, which checks again
atomically. Redis unreachable: calls fail with ``StoreUnavailableError``
(UNAVAILABLE), logged once per outage (``redis_connection``); nothing is
half-stored, and the first call after Redis returns works again. Delivery is
at least once: an insert whose reply was lost with the connection may have
been stored, and the actor's retry stores it again.

This module is the table's meaning (which script, what its reply says, when
to wait); talking to Redis is ``redis_connection``'s.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

from services.replay import redis_lua
from services.replay.checks import Chunk, check_chunks_agree, check_priorities
from services.replay.config import ReplayConfig
from services.replay.errors import TableMismatchError
from services.replay.priority_mirror import PriorityMirror
from services.replay.rate_limiter import SampleToInsertRatio
from services.replay.redis_connection import RedisConnection
from services.replay.sampler import priority_leaves, uniform_offsets, uniform_refusal
from services.replay.store import Signature, SignatureError
from services.replay.table import Patience, SampledBatch, Table, TableStats

# How long a commit or priority update held off by a sampler's lease pauses
# before it tries again (a lease lasts one round trip of the sampler).
LEASE_PAUSE_S = 0.002

# The table's keys after the prefix, in the order the scripts take them (redis_lua).
KEY_NAMES = ("meta", "state", "rows", "leaves", "changes", "actors", "seen", "lease")

# What the limiter must allow before a held call tries its script again.
Ready = Callable[[SampleToInsertRatio], bool]


def key_prefix(table: str) -> str:
    """``actorq:{TABLE}:``: the hash tag keeps a table's keys in one cluster slot."""
    return f"actorq:{{{table}}}:"


def settings_text(cfg: ReplayConfig) -> str:
    """What every replica of one table must agree on, as Redis stores it."""
    # floats: 1 and 1.0 agree; error_buffer as used, whether set or derived.
    values = {
        "capacity": int(cfg.capacity),
        "min_size_to_sample": int(cfg.min_size_to_sample),
        "samples_per_insert": float(cfg.samples_per_insert),
        "error_buffer": float(cfg.effective_error_buffer),
        "priority_exponent": float(cfg.priority_exponent),
        "importance_exponent": float(cfg.importance_exponent),
        "sampler": cfg.sampler,
        "rows": redis_lua.ROWS_LAYOUT,
    }
    return ";".join(f"{name}={value!r}" for name, value in values.items())


def _can_insert_one(lim: SampleToInsertRatio) -> bool:
    return lim.can_insert(1)


class RedisTable(Table):
    """The ``Table`` interface over Redis (see the module doc).

    ``stats()``: size, inserted, sampled, evicted, calls, batches and
    per-actor numbers are the shared table's (all replicas); rejected_calls
    and blocked seconds are this replica's.
    """

    def __init__(
        self,
        connection: RedisConnection,
        cfg: ReplayConfig,
        limiter: SampleToInsertRatio,
        *,
        max_batch_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # The limiter holds the settings only; the counters live in Redis.
        super().__init__(
            limiter,
            max_insert_transitions=cfg.max_insert_transitions,
            capacity=cfg.capacity,
            max_batch_bytes=max_batch_bytes,
        )
        self.connection = connection
        self.location = connection.location  # never the password
        self.prioritized = cfg.sampler == "prioritized"
        self.priority_exponent = cfg.priority_exponent
        self.poll_s = cfg.redis_poll_s
        self._clock = clock
        # In the order every script takes them (KEYS[1..8]), and by name.
        self._script_keys = [f"{key_prefix(cfg.table)}{name}" for name in KEY_NAMES]
        self._keys = dict(zip(KEY_NAMES, self._script_keys, strict=True))
        self._common: list[Any] = [
            settings_text(cfg),
            cfg.capacity,
            limiter.min_size_to_sample,
            repr(limiter.samples_per_insert),
            repr(limiter.error_buffer),
            int(self.prioritized),
            uuid.uuid4().hex,  # the table's epoch, should this replica create it
        ]
        # This replica's copy of the priorities' sum tree (prioritized only).
        self._mirror = PriorityMirror(
            cfg.capacity if self.prioritized else 1, cfg.importance_exponent
        )
        self._rng = np.random.default_rng(cfg.seed)
        # (first key, size) of the live range as the last uniform draw found it.
        self._live_range = (0, 0)
        self._signature: Signature | None = None

    # -- Redis calls ---------------------------------------------------------------

    def _run(self, name: str, *args: Any) -> list[Any]:
        """Run one script on this table; TableMismatchError if its settings differ."""
        reply = self.connection.run(name, self._script_keys, [*self._common, *args])
        self._check_settings(reply)
        return reply

    def _run_then_read(
        self, name: str, keys: np.ndarray, *args: Any
    ) -> tuple[list[Any], list[bytes]]:
        """Run a sample script and read the rows of keys in one round trip:
        (the script's reply, the rows, one per key, if it said OK)."""
        reply, rows = self.connection.run_then_read(
            name,
            self._script_keys,
            [*self._common, *args],
            self._keys["rows"],
            keys % self.capacity,
        )
        self._check_settings(reply)
        return reply, rows if reply[0] == b"OK" else []

    def _check_settings(self, reply: list[Any]) -> None:
        if reply[0] == b"SETTINGS":
            raise TableMismatchError(
                f"the table in Redis at {self.location} was created with "
                f"{reply[1].decode(errors='replace')}, but this replica has "
                f"{self._common[0]}: run every replica with the same settings, or give "
                "this one another --table"
            )

    def _counters(self) -> SampleToInsertRatio:
        """The limiter as Redis counts it now."""
        with self.connection.errors():
            counts = self.connection.client.hmget(
                self._keys["state"], "inserts", "samples", "deletes"
            )
        inserts, samples, deletes = (int(n or 0) for n in counts)
        return self.limiter.with_counts(inserts, samples, deletes)

    def attach(self) -> None:
        """Create the table in Redis or check that its settings are ours.

        TableMismatchError if another replica made it differently;
        StoreUnavailableError if Redis cannot be reached; RedisRefusedError
        for a wrong password or missing permissions.
        """
        self._run("ATTACH")

    def persistence_warnings(self) -> list[str]:
        """Redis settings that would lose acknowledged transitions (empty if fine or unknown)."""
        return self.connection.persistence_warnings()

    @property
    def signature(self) -> Signature | None:
        return self._signature

    # -- inserts -------------------------------------------------------------------

    def _commit(self, chunks: list[Chunk], total: int, actor_id: str, patience: Patience) -> int:
        """Commit every chunk in one script (which checks the shared limiter), or none."""
        try:
            signature = check_chunks_agree(chunks, self._signature)
        except SignatureError:
            self.note_rejected()
            raise
        blob = signature.pack_rows([c.columns for c in chunks])
        args = (signature.to_json(), signature.transition_bytes, total, blob, actor_id)
        with self._blocked_time("insert") as started:
            while True:
                reply = self._run("INSERT", *args, repr(self._clock()))
                if reply[0] == b"OK":
                    self._signature = signature
                    self._follow(int(reply[2]), reply[4:])  # [3]: end_key
                    self.wake()  # waiting samples re-read the counters now
                    return int(reply[1])
                if reply[0] == b"SIGNATURE":
                    self._refuse_signature(chunks, reply[1])
                # LEASED: a sampler's moment, over within a round trip; else the limiter's wait.
                ready = None if reply[0] == b"LEASED" else _can_insert_one
                self._wait(ready, "insert", patience, started())

    def _refuse_signature(self, chunks: list[Chunk], stored: bytes) -> NoReturn:
        """Another replica's first insert fixed a signature these chunks differ from."""
        self._signature = Signature.from_json(stored)
        self.note_rejected()
        check_chunks_agree(chunks, self._signature)  # raises SignatureError naming the field
        raise SignatureError(f"signature mismatch: {stored!r}")  # the script saw one

    # -- samples -------------------------------------------------------------------

    def _draw(self, batch_size: int, count: int, patience: Patience) -> list[SampledBatch]:
        """1 to count batches in one script and round trip: the first once the shared
        limiter allows it, then as many more as it allows."""
        with self._cond:  # the generator is shared by every Sample stream
            u = self._rng.random((count, batch_size))
        with self._blocked_time("sample") as started:
            while True:
                if self._signature is None:
                    self._signature = self._stored_signature()
                self._check_batch_bytes(batch_size)  # the first insert may have come meanwhile
                batches = self._draw_prioritized(u) if self.prioritized else self._draw_uniform(u)
                if batches is not None:
                    self.wake()  # waiting inserts re-read the counters now
                    return batches
                self._wait(lambda lim: lim.can_sample(batch_size), "sample", patience, started())

    def _draw_uniform(self, u: np.ndarray) -> list[SampledBatch] | None:
        """Uniform batches for u (one row of numbers a batch), None if the limiter
        says wait.

        Keys are drawn here for the live range last seen and their rows read
        by an HMGET in the same MULTI/EXEC as the script; if inserts moved the
        range meanwhile, the script draws from the same numbers and sends the
        rows itself (MOVED). Either way the batches are drawn from the table as
        it is, as if inside the script.
        """
        count, batch_size = u.shape
        flat = u.ravel()
        first, size = self._live_range
        keys = first + uniform_offsets(flat, max(size, 1))
        reply, rows = self._run_then_read(
            "SAMPLE_UNIFORM", keys, batch_size, first, size, flat.astype("<f8").tobytes(), count
        )
        if reply[0] == b"WAIT":
            return None
        if reply[0] == b"MOVED":
            first, size, blob, served = int(reply[1]), int(reply[2]), reply[3], int(reply[4])
            self._live_range = (first, size)
            keys = first + uniform_offsets(flat[: served * batch_size], size)
        else:
            served = int(reply[1])
            blob = b"".join(rows[: served * batch_size])
        weights = np.ones(served * batch_size, np.float32)
        return self._batches(blob, keys, weights, batch_size, served)

    def _draw_prioritized(self, u: np.ndarray) -> list[SampledBatch] | None:
        """Prioritized batches (one row of u a batch) drawn from this replica's mirror,
        served only if the table is still at the mirror's version; None if the
        limiter says wait.

        A stale answer also gives it the lease (see redis_lua.SAMPLE_PRIORITIZED),
        so the second draw is served however fast others commit.
        """
        count, batch_size = u.shape
        token = uuid.uuid4().hex
        while True:
            drawn = self._mirror.draw(u)
            if drawn is None:  # not loaded yet
                self._reload()
                continue
            reply, rows = self._run_then_read(
                "SAMPLE_PRIORITIZED",
                drawn.keys,
                batch_size,
                drawn.epoch,
                drawn.version,
                token,
                count,
            )
            status = reply[0]
            if status == b"OK":
                served = int(reply[1])
                blob = b"".join(rows[: served * batch_size])
                return self._batches(blob, drawn.keys, drawn.weights, batch_size, served)
            if status == b"WAIT":
                return None
            if status == b"STALE":
                for entry_id, fields in reply[1]:
                    if not self._follow(int(entry_id.split(b"-")[0]), fields):
                        self._reload()
                        break
            else:  # RELOAD: too far behind, or the table was made anew
                self._reload()

    def _batches(
        self, blob: bytes, keys: np.ndarray, weights: np.ndarray, batch_size: int, served: int
    ) -> list[SampledBatch]:
        """served batches from their rows packed back to back (keys, weights: at least
        as many, in the same order)."""
        columns = self._unpack(blob, served * batch_size)
        out = []
        for i in range(served):
            cut = slice(i * batch_size, (i + 1) * batch_size)
            out.append(
                SampledBatch(
                    {name: col[cut] for name, col in columns.items()}, keys[cut], weights[cut]
                )
            )
        return out

    def _follow(self, version: int, change: list[bytes]) -> bool:
        """Apply a priority change to this replica's mirror if it is the next one."""
        if not self.prioritized or version == 0:
            return True
        return self._mirror.apply(version, change)

    def _reload(self) -> None:
        """Rebuild this replica's mirror from the leaves in Redis."""
        _, epoch, version, end_key, size, leaves = self._run("SNAPSHOT")
        self._mirror.load(epoch, int(version), int(end_key), int(size), leaves)

    def _unpack(self, rows: bytes, count: int) -> dict[str, np.ndarray]:
        signature = self._signature
        if signature is None:  # sampled rows imply an insert, which fixed the signature
            signature = self._stored_signature()
            assert signature is not None
            self._signature = signature
        return signature.unpack_rows(rows, count)

    def _stored_signature(self) -> Signature | None:
        with self.connection.errors():
            text = self.connection.client.hget(self._keys["meta"], "signature")
        return None if text is None else Signature.from_json(text)

    def gather(self, keys: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(the live ones among keys, their columns), read in one script; nothing counted.

        For inspection and tests: what the table holds, without sampling.
        """
        reply = self._run("GATHER", np.asarray(keys).astype("<f8").tobytes())
        live = np.frombuffer(reply[1], dtype="<f8").astype(np.int64)
        signature = self._signature or self._stored_signature()
        if signature is None:
            return live, {}
        return live, signature.unpack_rows(reply[2], live.size)

    def live_keys(self) -> np.ndarray:
        """The keys held now, oldest first."""
        with self.connection.errors():
            end_b, size_b = self.connection.client.hmget(self._keys["state"], "end_key", "size")
        end, size = int(end_b or 0), int(size_b or 0)
        return np.arange(end - size, end, dtype=np.int64)

    # -- priorities ----------------------------------------------------------------

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> int:
        """As ``Table.update_priorities`` says, in one script."""
        keys, priorities = check_priorities(keys, priorities)
        if not self.prioritized:
            raise uniform_refusal()
        if keys.size == 0:
            return 0
        leaves = priority_leaves(priorities, self.priority_exponent)
        args = (keys.astype("<f8").tobytes(), leaves.astype("<f8").tobytes())
        while True:
            reply = self._run("UPDATE_PRIORITIES", *args)
            if reply[0] == b"OK":
                break
            # LEASED: a sampler holds changes off for a moment (LEASE_MS at most).
            with self._cond:
                self._cond.wait(LEASE_PAUSE_S)
        self._follow(int(reply[2]), reply[3:])
        return int(reply[1])

    # -- waiting, stats, lifecycle -------------------------------------------------

    def _wait(self, ready: Ready | None, kind: str, patience: Patience, started: float) -> None:
        """Block until the shared counters say ready (then the caller retries its script).

        ready None: only pause for LEASE_PAUSE_S (or until this replica samples).
        """
        pause = self.poll_s if ready is not None else min(self.poll_s, LEASE_PAUSE_S)
        while True:
            slice_s = self._wait_slice(kind, patience, started, pause)
            with self._cond:
                self._cond.wait(slice_s)
            if ready is None or ready(self._counters()):
                return

    def _counts(self) -> TableStats:
        """The shared table's counters from Redis (StoreUnavailableError if away)."""
        state, actors, seen = (self._keys[name] for name in ("state", "actors", "seen"))
        with self.connection.errors():
            pipe = self.connection.client.pipeline(transaction=True)
            pipe.hgetall(state)
            pipe.hgetall(actors)
            pipe.hgetall(seen)
            counts, by_actor, last_seen = pipe.execute()

        def count(name: str) -> int:
            return int(counts.get(name.encode(), 0))

        return TableStats(
            size=count("size"),
            inserted=count("inserts"),
            sampled=count("samples"),
            evicted=count("deletes"),
            insert_calls=count("insert_calls"),
            sample_batches=count("sample_batches"),
            inserted_by_actor={k.decode(): int(v) for k, v in by_actor.items()},
            actor_last_seen_unix={k.decode(): float(v) for k, v in last_seen.items()},
            store=self.location,
        )

    @property
    def size(self) -> int:
        """Transitions held now (all replicas)."""
        with self.connection.errors():
            return int(self.connection.client.hget(self._keys["state"], "size") or 0)

    def close(self) -> None:
        """Stop all waiting and drop the connections."""
        super().close()
        self.connection.close()
