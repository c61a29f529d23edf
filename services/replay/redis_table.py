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
the priorities (``PriorityMirror``), brought up to date from Redis's change
log before a prioritized draw is served (see ``redis_lua``).

Waiting on the rate limiter: a call the limiter holds re-reads the shared
counters every ``poll_s`` (other replicas' progress) and at once when this
replica commits or samples, then retries its script, which checks again
atomically. Redis unreachable: calls fail with ``StoreUnavailableError``
(UNAVAILABLE), logged once per outage; nothing is half-stored, and the
first call after Redis returns works again. Delivery is at least once: an
insert whose reply was lost with the connection may have been stored, and
the actor's retry stores it again.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import hiredis
import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from actorq.config import url_secrets
from services.replay import redis_lua
from services.replay.config import ReplayConfig
from services.replay.rate_limiter import SampleToInsertRatio
from services.replay.sampler import (
    SumTree,
    priority_leaves,
    proportional_draw,
    uniform_offsets,
    uniform_refusal,
)
from services.replay.store import Signature, SignatureError
from services.replay.table import (
    Chunk,
    SampledBatch,
    StoreUnavailableError,
    Table,
    TableClosedError,
    TableMismatchError,
    TableStats,
    WaitAbandonedError,
    WaitTimeoutError,
    check_batch_bytes,
    check_chunks_agree,
    check_insert,
    check_priorities,
    make_limiter,
)

log = logging.getLogger(__name__)

# How long a commit or priority update held off by a sampler's lease pauses
# before it tries again (a lease lasts one round trip of the sampler).
LEASE_PAUSE_S = 0.002

_REFUSED: tuple[type[Exception], ...] = (
    redis.AuthenticationError,
    redis.exceptions.AuthorizationError,
    redis.exceptions.NoPermissionError,
)

# Errors that mean "Redis is not there (or not writable) right now".
_UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
)


class RedisRefusedError(StoreUnavailableError):
    """Redis answered but will not let us in (password, ACL): UNAVAILABLE until fixed,
    and a replica starting up stops at once rather than serving failures."""


# The table's keys after the prefix, in the order the scripts take them (redis_lua).
KEY_NAMES = ("meta", "state", "rows", "leaves", "changes", "actors", "seen", "lease")


def key_prefix(table: str) -> str:
    """``actorq:{TABLE}:``: the hash tag keeps a table's keys in one cluster slot."""
    return f"actorq:{{{table}}}:"


def settings_text(cfg: ReplayConfig) -> str:
    """What every replica of one table must agree on, as Redis stores it."""
    floats = ("samples_per_insert", "error_buffer", "priority_exponent", "importance_exponent")
    values = {
        "capacity": int(cfg.capacity),
        "min_size_to_sample": int(cfg.min_size_to_sample),
        **{name: float(getattr(cfg, name)) for name in floats},  # 1 and 1.0 agree
        "sampler": cfg.sampler,
        "rows": redis_lua.ROWS_LAYOUT,
    }
    return ";".join(f"{name}={value!r}" for name, value in values.items())


def connect(url: str, timeout_s: float) -> redis.Redis:
    """A client for url (password and TLS as the URL says) that fails fast.

    One reconnect on a broken connection (a pooled connection that died with
    a Redis restart), no retry on timeouts: the caller turns failures into
    UNAVAILABLE and its own client decides when to retry.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    )


class PriorityMirror:
    """A replica's copy of the table's priorities: the sum tree at a known version.

    Built from the leaves in Redis (``load``) and moved forward one logged
    change at a time (``apply``); see ``redis_lua`` for why a draw from it is
    exact. Callers hold the table's mirror lock.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.tree = SumTree(capacity)
        self.epoch: bytes | None = None  # None: not loaded yet
        self.version = 0
        self.end_key = 0
        self.size = 0

    @property
    def first_key(self) -> int:
        return self.end_key - self.size

    def load(self, epoch: bytes, version: int, end_key: int, size: int, leaves: bytes) -> None:
        """Take the table's state as SNAPSHOT returned it."""
        values = np.zeros(self.capacity, dtype=np.float64)
        got = np.frombuffer(leaves, dtype="<f8")[: self.capacity]
        values[: got.size] = got
        self.tree.load(values)
        self.epoch, self.version, self.end_key, self.size = epoch, version, end_key, size

    def apply(self, version: int, change: Sequence[bytes]) -> bool:
        """Apply change number ``version`` if it is the next (True if applied before);
        False for a gap: changes are missing, reload."""
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


class RedisTable(Table):
    """The ``Table`` interface over Redis (see the module doc)."""

    def __init__(
        self,
        client: redis.Redis,
        cfg: ReplayConfig,
        *,
        max_batch_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self.location = cfg.store_label  # never the password
        self._secrets = url_secrets(cfg.store)
        self.capacity = cfg.capacity
        self.prioritized = cfg.sampler == "prioritized"
        self.importance_exponent = cfg.importance_exponent
        self.priority_exponent = cfg.priority_exponent
        self.limiter = make_limiter(cfg)  # settings only; the counters live in Redis
        self.max_insert_transitions = min(cfg.max_insert_transitions, cfg.capacity)
        self.max_batch_bytes = max_batch_bytes
        self.poll_s = cfg.redis_poll_s
        self._clock = clock
        prefix = key_prefix(cfg.table)
        self._keys = [f"{prefix}{name}" for name in KEY_NAMES]
        self._common: list[Any] = [
            settings_text(cfg),
            cfg.capacity,
            cfg.min_size_to_sample,
            repr(float(cfg.samples_per_insert)),
            repr(float(cfg.error_buffer)),
            int(self.prioritized),
            uuid.uuid4().hex,  # the table's epoch, should this replica create it
        ]
        self._scripts = {
            name: client.register_script(getattr(redis_lua, name))
            for name in (
                "ATTACH",
                "INSERT",
                "SAMPLE_UNIFORM",
                "SAMPLE_PRIORITIZED",
                "SNAPSHOT",
                "UPDATE_PRIORITIES",
                "GATHER",
            )
        }
        # This replica's copy of the priorities' sum tree (prioritized only).
        self._mirror = PriorityMirror(cfg.capacity if self.prioritized else 1)
        self._mirror_lock = threading.Lock()
        self._rng = np.random.default_rng(cfg.seed)
        # (first key, size) of the live range as the last uniform draw found it.
        self._live_range = (0, 0)
        self._signature: Signature | None = None
        # Local wake-ups (this replica's commits, samples, cancellations).
        self._cond = threading.Condition()
        self._closed = False
        self._down = False  # Redis unreachable at the last call (log once per outage)
        # This replica's own numbers (the table's are in Redis).
        self._rejected = 0
        self._blocked = {"insert": 0.0, "sample": 0.0}
        self._pending: dict[int, tuple[str, float]] = {}
        self._next_wait_id = 0

    @classmethod
    def from_config(cls, cfg: ReplayConfig, max_batch_bytes: int | None = None) -> RedisTable:
        """Connect to cfg.store (no round trip yet; call ``attach`` to check the table)."""
        return cls(connect(cfg.store, cfg.redis_timeout_s), cfg, max_batch_bytes=max_batch_bytes)

    # -- Redis calls ---------------------------------------------------------------

    def _run(self, name: str, *args: Any) -> list[Any]:
        """Run one script; StoreUnavailableError (logged once per outage) if Redis is away."""
        try:
            reply = self._scripts[name](keys=self._keys, args=[*self._common, *args])
        except _REFUSED as err:  # before _UNAVAILABLE: redis-py files these as connection errors
            raise self._refused(err) from None
        except _UNAVAILABLE as err:
            raise self._unavailable(err) from None
        self._reachable()
        if reply[0] == b"SETTINGS":
            raise self._mismatch(reply[1])
        return list(reply)

    def _refused(self, err: Exception) -> RedisRefusedError:
        return RedisRefusedError(
            f"Redis at {self.location} refused us ({type(err).__name__}: "
            f"{self.scrub(str(err))}); check the password and ACL in the store URL"
        )

    def _unavailable(self, err: Exception) -> StoreUnavailableError:
        with self._cond:
            first, self._down = not self._down, True
        if first:
            log.warning(
                "Redis at %s is unavailable (%s); calls fail with UNAVAILABLE until it is back",
                self.location,
                type(err).__name__,
            )
        return StoreUnavailableError(
            f"Redis at {self.location} is unavailable ({type(err).__name__}: "
            f"{self.scrub(str(err))}); retry when it is back"
        )

    def scrub(self, text: str) -> str:
        """redis-py messages name host:port at most; make sure no secret slips through."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _reachable(self) -> None:
        if not self._down:  # the common case, without taking the lock
            return
        with self._cond:
            back, self._down = self._down, False
        if back:
            log.info("Redis at %s is reachable again", self.location)

    def _mismatch(self, stored: bytes) -> TableMismatchError:
        return TableMismatchError(
            f"the table in Redis at {self.location} was created with "
            f"{stored.decode(errors='replace')}, but this replica has "
            f"{self._common[0]}: run every replica with the same settings, or give "
            "this one another --table"
        )

    def _counters(self) -> SampleToInsertRatio:
        """The limiter as Redis counts it now."""
        try:
            ins, smp, dels = self._redis.hmget(self._keys[1], "inserts", "samples", "deletes")
        except _UNAVAILABLE as err:
            raise self._unavailable(err) from None
        limiter = make_limiter_like(self.limiter)
        limiter.inserts, limiter.samples, limiter.deletes = (
            int(ins or 0),
            int(smp or 0),
            int(dels or 0),
        )
        return limiter

    def attach(self) -> None:
        """Create the table in Redis or check that its settings are ours.

        TableMismatchError if another replica made it differently;
        StoreUnavailableError if Redis cannot be reached; RedisRefusedError
        for a wrong password or missing permissions.
        """
        self._run("ATTACH")

    def persistence_warnings(self) -> list[str]:
        """Redis settings that would lose acknowledged transitions (empty if fine or unknown)."""
        try:
            conf = self._redis.config_get("appendonly") | self._redis.config_get("maxmemory-policy")
        except redis.RedisError:  # CONFIG disabled (managed Redis): cannot tell
            return []
        out = []
        if conf.get("appendonly") != "yes":
            out.append(
                f"Redis at {self.location} runs without AOF (appendonly no): a Redis "
                "restart loses the table; set appendonly yes, appendfsync everysec or always"
            )
        policy = conf.get("maxmemory-policy", "noeviction")
        if policy != "noeviction":
            out.append(
                f"Redis at {self.location} evicts keys under memory pressure "
                f"(maxmemory-policy {policy}), which would tear the table apart; "
                "use noeviction"
            )
        return out

    # -- inserts -------------------------------------------------------------------

    def insert(
        self,
        chunks: Sequence[Chunk | Mapping[str, np.ndarray | None]],
        actor_id: str = "",
        *,
        should_continue: Callable[[], bool] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Commit every chunk in one script, or none; returns the table size after.

        Same refusals as ``ReplayTable.insert``; StoreUnavailableError when
        Redis cannot be reached (nothing acknowledged).
        """
        try:
            valid, total = check_insert(chunks, self.max_insert_transitions)
            signature = check_chunks_agree(valid, self._signature)
        except ValueError:
            self.note_rejected()
            raise
        blob = signature.pack_rows([c.columns for c in valid])
        row_bytes = signature.transition_bytes
        layout = (signature.to_json(), row_bytes)
        deadline = None if timeout is None else time.monotonic() + timeout
        waited: int | None = None
        try:
            while True:
                reply = self._run("INSERT", *layout, total, blob, actor_id, repr(self._clock()))
                if reply[0] == b"OK":
                    self._signature = signature
                    self._follow(int(reply[2]), reply[4:])  # [3]: end_key
                    self._notify()
                    return int(reply[1])
                if reply[0] == b"SIGNATURE":
                    stored = Signature.from_json(reply[1])
                    self._signature = stored
                    try:
                        check_chunks_agree(valid, stored)
                    except SignatureError:
                        self.note_rejected()
                        raise
                    raise SignatureError(f"signature mismatch: {reply[1]!r}")  # unreachable
                waited = waited if waited is not None else self._begin_wait("insert")
                if reply[0] == b"LEASED":  # a sampler's moment: over within a round trip
                    self._wait(None, "insert", should_continue, deadline)
                else:
                    self._wait(lambda lim: lim.can_insert(1), "insert", should_continue, deadline)
        finally:
            if waited is not None:
                self._end_wait(waited)

    # -- samples -------------------------------------------------------------------

    def sample_many(
        self,
        batch_size: int,
        count: int,
        *,
        should_continue: Callable[[], bool] | None = None,
        timeout: float | None = None,
    ) -> list[SampledBatch]:
        """1 to count batches in one script and round trip, as ``ReplayTable.sample_many``:
        the first once the shared limiter allows it, then as many more as it allows.
        StoreUnavailableError when Redis cannot be reached."""
        self._check_sample(batch_size, count)
        with self._cond:  # the generator is shared by every Sample stream
            u = self._rng.random((count, batch_size))
        deadline = None if timeout is None else time.monotonic() + timeout
        waited: int | None = None
        try:
            while True:
                if self._signature is None:
                    self._signature = self._stored_signature()
                try:
                    self._check_batch_bytes(batch_size)
                except ValueError:
                    self.note_rejected()
                    raise
                batches = self._draw(u) if self.prioritized else self._draw_uniform(u)
                if batches is not None:
                    self._notify()
                    return batches
                waited = waited if waited is not None else self._begin_wait("sample")
                self._wait(
                    lambda lim: lim.can_sample(batch_size), "sample", should_continue, deadline
                )
        finally:
            if waited is not None:
                self._end_wait(waited)

    def _check_batch_bytes(self, batch_size: int) -> None:
        check_batch_bytes(batch_size, self._signature, self.max_batch_bytes)

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

    def _run_then_read(
        self, name: str, keys: np.ndarray, *args: Any
    ) -> tuple[list[Any], list[bytes]]:
        """Run a sample script and HMGET the rows of keys in one MULTI/EXEC:
        (the script's reply, the rows, one per key, if it said OK)."""
        script = self._scripts[name]
        hmget = hmget_command(self._keys[KEY_NAMES.index("rows")], keys % self.capacity)
        for attempt in (1, 2):
            evalsha = hiredis.pack_command(
                ("EVALSHA", script.sha, len(self._keys), *self._keys, *self._common, *args)
            )
            try:
                reply, rows = self._transaction(evalsha + hmget, 2)
                break
            except redis.exceptions.NoScriptError:  # a restarted Redis forgot the scripts
                if attempt == 2:
                    raise
                self._load_scripts()
            except _REFUSED as err:
                raise self._refused(err) from None
            except _UNAVAILABLE as err:
                raise self._unavailable(err) from None
        self._reachable()
        if reply[0] == b"SETTINGS":
            raise self._mismatch(reply[1])
        return list(reply), rows if reply[0] == b"OK" else []

    def _transaction(self, commands: bytes, count: int) -> list[Any]:
        """EXEC's replies to ``count`` RESP-packed commands sent as MULTI ... EXEC
        in one write, on a pooled connection (reconnecting once, as ``connect`` says).

        The sample path's own pipeline: redis-py packs an argument in about
        0.7 us, so its pipeline spent longer packing a 256-field HMGET than
        Redis spends serving it. A command refused when queued, or failing in
        EXEC, raises its error (NoScriptError included).
        """
        pool = self._redis.connection_pool
        conn = pool.get_connection()
        try:
            replies: list[Any] = conn.retry.call_with_retry(
                lambda: _send_transaction(conn, commands, count),
                lambda _err: conn.disconnect(),
            )
            return replies
        finally:
            pool.release(conn)

    def _load_scripts(self) -> None:
        try:
            for script in self._scripts.values():
                script.sha = self._redis.script_load(script.script)
        except _UNAVAILABLE as err:
            raise self._unavailable(err) from None

    def _draw(self, u: np.ndarray) -> list[SampledBatch] | None:
        """Prioritized batches (one row of u a batch) drawn from this replica's tree,
        served only if the table is still at the tree's version; None if the
        limiter says wait.

        A stale answer also gives it the lease (see redis_lua.SAMPLE_PRIORITIZED),
        so the second draw is served however fast others commit.
        """
        count, batch_size = u.shape
        token = uuid.uuid4().hex
        while True:
            with self._mirror_lock:
                mirror = self._mirror
                loaded = mirror.epoch is not None
                epoch, version = mirror.epoch, mirror.version
                if loaded and mirror.size > 0:
                    drawn = [
                        proportional_draw(
                            mirror.tree,
                            row,
                            mirror.first_key,
                            mirror.size,
                            self.importance_exponent,
                        )
                        for row in u
                    ]
                    keys = np.concatenate([k for k, _ in drawn])
                    weights = np.concatenate([w for _, w in drawn])
                else:  # nothing to draw from; the script will say wait (or stale)
                    keys = np.zeros(u.size, np.int64)
                    weights = np.ones(u.size, np.float32)
            if not loaded:
                self._reload()
                continue
            reply, rows = self._run_then_read(
                "SAMPLE_PRIORITIZED", keys, batch_size, epoch, version, token, count
            )
            status = reply[0]
            if status == b"OK":
                served = int(reply[1])
                blob = b"".join(rows[: served * batch_size])
                return self._batches(blob, keys, weights, batch_size, served)
            if status == b"WAIT":
                return None
            if status == b"STALE":
                for entry_id, fields in reply[1]:
                    if not self._follow(int(entry_id.split(b"-")[0]), fields):
                        self._reload()
                        break
            else:  # RELOAD: too far behind, or the table was made anew
                self._reload()

    def _follow(self, version: int, change: list[bytes]) -> bool:
        """Apply a priority change to this replica's tree if it is the next one."""
        if not self.prioritized or version == 0:
            return True
        with self._mirror_lock:
            return self._mirror.apply(version, change)

    def _reload(self) -> None:
        """Rebuild this replica's tree from the leaves in Redis."""
        _, epoch, version, end_key, size, leaves = self._run("SNAPSHOT")
        with self._mirror_lock:
            self._mirror.load(epoch, int(version), int(end_key), int(size), leaves)

    def _unpack(self, rows: bytes, count: int) -> dict[str, np.ndarray]:
        signature = self._signature
        if signature is None:  # sampled rows imply an insert, which fixed the signature
            signature = self._stored_signature()
            assert signature is not None
            self._signature = signature
        return signature.unpack_rows(rows, count)

    def _stored_signature(self) -> Signature | None:
        try:
            text = self._redis.hget(self._keys[0], "signature")
        except _UNAVAILABLE as err:
            raise self._unavailable(err) from None
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
        try:
            end_b, size_b = self._redis.hmget(self._keys[1], "end_key", "size")
        except _UNAVAILABLE as err:
            raise self._unavailable(err) from None
        end, size = int(end_b or 0), int(size_b or 0)
        return np.arange(end - size, end, dtype=np.int64)

    # -- priorities ----------------------------------------------------------------

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> int:
        """As ``ReplayTable.update_priorities``, in one script."""
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

    # -- waiting -------------------------------------------------------------------

    def _wait(
        self,
        ready: Callable[[SampleToInsertRatio], bool] | None,
        kind: str,
        should_continue: Callable[[], bool] | None,
        deadline: float | None,
    ) -> None:
        """Block until the shared counters say ready (then the caller retries its script).

        ready None: only pause for LEASE_PAUSE_S (or until this replica samples).
        """
        started = time.monotonic()
        while True:
            if self._closed:
                raise TableClosedError("the replay is shutting down")
            if should_continue is not None and not should_continue():
                raise WaitAbandonedError(f"{kind} abandoned by the caller")
            slice_s = self.poll_s if ready is not None else min(self.poll_s, LEASE_PAUSE_S)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    lim = self._counters()
                    raise WaitTimeoutError(
                        f"{kind} waited {time.monotonic() - started:.1f} s for the rate "
                        f"limiter (size {lim.size}, min_size_to_sample "
                        f"{lim.min_size_to_sample}, inserts {lim.inserts}, samples "
                        f"{lim.samples}) and the deadline passed"
                    )
                slice_s = min(slice_s, remaining)
            with self._cond:
                self._cond.wait(slice_s)
            if ready is None or ready(self._counters()):
                return

    def _begin_wait(self, kind: str) -> int:
        with self._cond:
            wait_id = self._next_wait_id
            self._next_wait_id += 1
            self._pending[wait_id] = (kind, time.monotonic())
            return wait_id

    def _end_wait(self, wait_id: int) -> None:
        with self._cond:
            kind, start = self._pending.pop(wait_id)
            self._blocked[kind] += time.monotonic() - start

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- stats and lifecycle -----------------------------------------------------------

    def stats(self) -> TableStats:
        """The shared table's counters from Redis, plus this replica's own.

        size, inserted, sampled, evicted, calls, batches and per-actor numbers
        are the table's (all replicas); rejected_calls and blocked seconds are
        this replica's. StoreUnavailableError if Redis cannot be reached.
        """
        state, actors, seen = (self._keys[KEY_NAMES.index(n)] for n in ("state", "actors", "seen"))
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hgetall(state)
            pipe.hgetall(actors)
            pipe.hgetall(seen)
            counts, by_actor, last_seen = pipe.execute()
        except _UNAVAILABLE as err:
            raise self._unavailable(err) from None
        self._reachable()

        def count(name: str) -> int:
            return int(counts.get(name.encode(), 0))

        lim = self.limiter
        snap = TableStats(
            size=count("size"),
            capacity=self.capacity,
            inserted=count("inserts"),
            sampled=count("samples"),
            evicted=count("deletes"),
            insert_calls=count("insert_calls"),
            sample_batches=count("sample_batches"),
            samples_per_insert=lim.samples_per_insert,
            min_size_to_sample=lim.min_size_to_sample,
            error_buffer=lim.error_buffer,
            inserted_by_actor={k.decode(): int(v) for k, v in by_actor.items()},
            actor_last_seen_unix={k.decode(): float(v) for k, v in last_seen.items()},
            store=self.location,
        )
        with self._cond:
            snap.rejected_calls = self._rejected
            snap.insert_blocked_s = self._blocked["insert"]
            snap.sample_blocked_s = self._blocked["sample"]
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
        """Transitions held now (all replicas)."""
        try:
            return int(self._redis.hget(self._keys[1], "size") or 0)
        except _UNAVAILABLE as err:
            raise self._unavailable(err) from None

    def note_rejected(self) -> None:
        """Count a refused call (this replica's count)."""
        with self._cond:
            self._rejected += 1

    def wake(self) -> None:
        """Wake every waiter so it re-checks its caller."""
        self._notify()

    def close(self) -> None:
        """Stop all waiting and drop the connections."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._redis.close()


_MULTI = hiredis.pack_command(("MULTI",))
_EXEC = hiredis.pack_command(("EXEC",))
_SLOT_FIELD_HEAD = np.frombuffer(b"$4\r\n", dtype=np.uint8)
_CRLF = np.frombuffer(b"\r\n", dtype=np.uint8)


def hmget_command(key: str, slots: np.ndarray) -> bytes:
    """``HMGET key slot...`` as RESP, the slots as the rows hash's 4-byte fields
    (``redis_lua.SLOT_FORMAT``): fixed-width, so numpy packs them in one go."""
    n = len(slots)
    fields = np.empty((n, 10), dtype=np.uint8)
    fields[:, :4] = _SLOT_FIELD_HEAD
    fields[:, 4:8] = np.asarray(slots, dtype="<u4").view(np.uint8).reshape(n, 4)
    fields[:, 8:] = _CRLF
    name = key.encode()
    head = b"*%d\r\n$5\r\nHMGET\r\n$%d\r\n%b\r\n" % (n + 2, len(name), name)
    return head + fields.tobytes()


def _send_transaction(conn: Any, commands: bytes, count: int) -> list[Any]:
    """Send MULTI, commands, EXEC; read every reply; EXEC's (see _transaction)."""
    conn.send_packed_command([_MULTI + commands + _EXEC])
    refused: redis.ResponseError | None = None
    for _ in range(count + 1):  # +OK for MULTI, then +QUEUED per command
        try:
            conn.read_response()
        except redis.ResponseError as err:
            refused = refused or err
    try:
        replies = conn.read_response()
    except redis.exceptions.ExecAbortError:
        if refused is None:
            raise
        raise refused from None
    for reply in replies:
        if isinstance(reply, redis.ResponseError):
            raise reply
    return list(replies)


def make_limiter_like(limiter: SampleToInsertRatio) -> SampleToInsertRatio:
    """A fresh limiter with limiter's settings (to load Redis's counters into)."""
    return SampleToInsertRatio(
        limiter.samples_per_insert, limiter.min_size_to_sample, limiter.error_buffer
    )
