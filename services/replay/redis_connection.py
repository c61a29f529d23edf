"""The replay's connection layer to Redis: calls in, the table's errors out.

``RedisConnection`` is everything a Redis table needs from redis-py and
nothing of what a table means: connecting so that failures come fast, Redis
errors turned into ``StoreUnavailableError`` / ``RedisRefusedError`` (an
outage logged once when it starts and once when it ends), no secret of the
store URL in any message, the Lua scripts loaded and run, and the sample
path's hand-packed MULTI / EVALSHA / HMGET / EXEC transaction. What the
scripts do and what their replies mean is ``redis_table``'s business.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import hiredis
import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from actorq.config import redact_url, url_secrets
from actorq.retry import Outage
from services.replay import redis_lua
from services.replay.errors import RedisRefusedError, StoreUnavailableError

log = logging.getLogger(__name__)

# Redis answered, but not to us: a wrong password or a missing permission.
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

# Every script the tables run (redis_lua's names).
SCRIPTS = (
    "ATTACH",
    "INSERT",
    "SAMPLE_UNIFORM",
    "SAMPLE_PRIORITIZED",
    "SNAPSHOT",
    "UPDATE_PRIORITIES",
    "GATHER",
)


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


class RedisConnection:
    """One replica's connection to Redis (thread-safe: redis-py pools connections).

    ``location`` is the store URL without its password; every message says
    where Redis is by it.
    """

    def __init__(self, client: redis.Redis, location: str, secrets: Sequence[str] = ()) -> None:
        self.client = client
        self.location = location
        self._secrets = tuple(secrets)
        self._outage = Outage(log, f"Redis at {location}")
        self._outage_lock = threading.Lock()  # Outage counts; calls come from many threads
        self._scripts = {name: client.register_script(getattr(redis_lua, name)) for name in SCRIPTS}

    @classmethod
    def open(cls, url: str, timeout_s: float) -> RedisConnection:
        """Connect to url (no round trip yet)."""
        return cls(connect(url, timeout_s), redact_url(url), url_secrets(url))

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Redis calls inside raise the table's errors: RedisRefusedError for a
        wrong password or ACL, StoreUnavailableError when Redis is away (the
        first failure of an outage is logged); a success ends an outage."""
        try:
            yield
        except _REFUSED as err:  # before _UNAVAILABLE: redis-py files these as connection errors
            raise RedisRefusedError(
                f"Redis at {self.location} refused us ({type(err).__name__}: "
                f"{self.scrub(str(err))}); check the password and ACL in the store URL"
            ) from None
        except _UNAVAILABLE as err:
            with self._outage_lock:
                self._outage.failed(
                    type(err).__name__, "calls fail with UNAVAILABLE until it is back"
                )
            raise StoreUnavailableError(
                f"Redis at {self.location} is unavailable ({type(err).__name__}: "
                f"{self.scrub(str(err))}); retry when it is back"
            ) from None
        if self._outage.active:  # the common case reads one int, without the lock
            with self._outage_lock:
                self._outage.recovered()

    def scrub(self, text: str) -> str:
        """redis-py messages name host:port at most; make sure no secret slips through."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> list[Any]:
        """Run one of ``SCRIPTS`` (redis-py loads it again if Redis forgot it)."""
        with self.errors():
            return list(self._scripts[name](keys=keys, args=args))

    def run_then_read(
        self, name: str, keys: Sequence[str], args: Sequence[Any], rows_key: str, slots: np.ndarray
    ) -> tuple[list[Any], list[bytes]]:
        """Run a script and HMGET ``slots`` of the rows hash in one MULTI/EXEC:
        (the script's reply, the rows, one per slot; None for an empty slot)."""
        script = self._scripts[name]
        commands = hmget_command(rows_key, slots)
        with self.errors():
            try:
                return self._script_then(script, keys, args, commands)
            except redis.exceptions.NoScriptError:  # a restarted Redis forgot the scripts
                self._load_scripts()
                return self._script_then(script, keys, args, commands)

    def _script_then(
        self, script: Any, keys: Sequence[str], args: Sequence[Any], command: bytes
    ) -> tuple[list[Any], Any]:
        """EVALSHA script, then one packed command, in one transaction: both replies."""
        evalsha = hiredis.pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))
        reply, then = self._transaction(evalsha + command, 2)
        return list(reply), then

    def _transaction(self, commands: bytes, count: int) -> list[Any]:
        """EXEC's replies to ``count`` RESP-packed commands sent as MULTI ... EXEC
        in one write, on a pooled connection (reconnecting once, as ``connect`` says).

        The sample path's own pipeline: redis-py packs an argument in about
        0.7 us, so its pipeline spent longer packing a 256-field HMGET than
        Redis spends serving it. A command refused when queued, or failing in
        EXEC, raises its error (NoScriptError included).
        """
        pool = self.client.connection_pool
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
        for script in self._scripts.values():
            script.sha = self.client.script_load(script.script)

    def persistence_warnings(self) -> list[str]:
        """Redis settings that would lose acknowledged transitions (empty if fine or unknown)."""
        try:
            conf = self.client.config_get("appendonly") | self.client.config_get("maxmemory-policy")
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

    def close(self) -> None:
        """Drop the pooled connections."""
        self.client.close()


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
