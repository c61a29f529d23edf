"""Checks ``actorq train`` makes before any process starts, each failing in one sentence.

What a service would refuse is checked by building its config (``configs``);
this module adds what only the launcher can see: that ``--out`` can be written,
that the algorithm can act in the env's action space, and that a Redis replay
store answers a PING. Each raises ``ConfigError`` (exit code 2).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from actorq.config import ConfigError, is_redis_url, redact_url
from actorq.envs import env_info
from actorq.network import ALGO_KINDS
from commands.train.args import TrainArgs

# Seconds to wait for the replay store's Redis before calling it unreachable.
PING_TIMEOUT_S = 2.0


def check_out_writable(out: Path) -> None:
    """ConfigError unless ``out`` is (or can be made) a directory this process can write."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".actorq-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"--out {out} cannot be written ({err.strerror or err}); give a directory you can write"
        ) from None


def check_algo_fits_env(args: TrainArgs) -> None:
    """ConfigError when the algorithm cannot act in the env's action space."""
    info = env_info(args.env)
    continuous = ALGO_KINDS[args.algo].continuous
    if continuous == info.continuous:
        return
    fits = next(a for a, k in ALGO_KINDS.items() if k.continuous == info.continuous)
    needs = "continuous (Box)" if continuous else "discrete"
    raise ConfigError(
        f"--algo {args.algo} needs {needs} actions but {args.env} has "
        f"{info.describe_actions()}; use --algo {fits}"
    )


@contextlib.contextmanager
def _redis(store: str, timeout_s: float, failing: str) -> Iterator[Any]:
    """A client of a Redis replay store; its errors become one ConfigError sentence
    (``failing``: what did not work), the URL's password never shown."""
    import redis

    shown = redact_url(store)
    try:
        client = redis.Redis.from_url(
            store, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
    except ValueError as err:
        raise ConfigError(f"--replay-store {shown}: not a usable Redis URL ({err})") from None
    try:
        yield client
    except redis.exceptions.AuthenticationError:
        raise ConfigError(
            f"--replay-store {shown}: Redis refused the password; check the URL's password"
        ) from None
    except redis.exceptions.RedisError as err:
        reason = str(err).replace(store, shown)
        raise ConfigError(
            f"--replay-store {shown}: {failing} ({reason}); start Redis there or fix the URL"
        ) from None
    finally:
        with contextlib.suppress(redis.exceptions.RedisError):
            client.close()


def check_replay_store(store: str, timeout_s: float = PING_TIMEOUT_S) -> None:
    """ConfigError when a Redis replay store does not answer one PING within ``timeout_s``."""
    if is_redis_url(store):
        with _redis(store, timeout_s, f"no Redis answered a PING within {timeout_s:g}s") as client:
            client.ping()


def check_fresh_table(store: str, table: str, timeout_s: float = PING_TIMEOUT_S) -> None:
    """ConfigError when a fresh run's Redis table already holds another run's transitions
    (a new run would silently learn from them; nothing is deleted for the user)."""
    if not is_redis_url(store):
        return
    from services.replay.redis_table import key_prefix

    with _redis(store, timeout_s, f"could not read table {table!r}") as client:
        end_key = client.hget(f"{key_prefix(table)}state", "end_key")
    if end_key is not None and int(end_key) > 0:
        raise ConfigError(
            f"--replay-store {redact_url(store)}: table {table!r} already holds "
            f"{int(end_key):,} transitions of another run; continue that run with --resume "
            "DIR, name another table (replay: {table: NAME} in --config), or delete its keys "
            f"actorq:{{{table}}}:* yourself"
        )


def check(args: TrainArgs, out: Path) -> None:
    """Every launcher-side check, cheapest first."""
    check_out_writable(out)
    check_algo_fits_env(args)
    check_replay_store(args.replay_store)
