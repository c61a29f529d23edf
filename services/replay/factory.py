"""The one place that builds a replay table from a ``ReplayConfig``.

A table is composed, as TorchRL composes a replay buffer from a storage, a
sampler and a writer: here a store (memory ring or Redis), a sampler
(uniform or prioritized) and a rate limiter (Reverb's SampleToInsertRatio),
each built on its own and handed to the table. The servicer, the bench and
the tests get their tables here. A memory table with a ``journal`` path is a
``JournaledTable``: it survives the death of its process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.replay.config import ReplayConfig
from services.replay.journal import Journal
from services.replay.journaled import JournaledTable
from services.replay.rate_limiter import SampleToInsertRatio
from services.replay.sampler import PrioritizedSampler, Sampler, UniformSampler
from services.replay.store import MemoryStore, is_redis_url
from services.replay.table import ReplayTable, Table

if TYPE_CHECKING:  # at run time imported only for a Redis store: it needs redis-py
    from services.replay.redis_table import RedisTable


def make_sampler(cfg: ReplayConfig) -> Sampler:
    """The in-process sampler the config names."""
    if cfg.sampler == "prioritized":
        return PrioritizedSampler(
            cfg.capacity, cfg.seed, cfg.priority_exponent, cfg.importance_exponent
        )
    return UniformSampler(cfg.seed)


def make_limiter(cfg: ReplayConfig) -> SampleToInsertRatio:
    """The rate limiter the config describes (for Redis: its settings; the counters
    live in Redis)."""
    return SampleToInsertRatio(
        cfg.samples_per_insert, cfg.min_size_to_sample, cfg.effective_error_buffer
    )


def build_table(cfg: ReplayConfig, max_batch_bytes: int | None = None) -> Table:
    """The table a config describes: in memory, or in Redis for a redis:// store."""
    if is_redis_url(cfg.store):
        return build_redis_table(cfg, max_batch_bytes)
    store = MemoryStore(cfg.capacity, cfg.signature)
    limits: dict[str, Any] = {
        "max_insert_transitions": cfg.max_insert_transitions,
        "max_batch_bytes": max_batch_bytes,
        "max_abs_reward": cfg.max_abs_reward,
    }
    if cfg.journal:  # JournalError (a sentence) if it cannot be opened or does not fit
        journal = Journal(cfg.journal, fsync=cfg.journal_fsync)
        return JournaledTable(store, make_sampler(cfg), make_limiter(cfg), journal, **limits)
    return ReplayTable(store, make_sampler(cfg), make_limiter(cfg), **limits)


def build_redis_table(cfg: ReplayConfig, max_batch_bytes: int | None = None) -> RedisTable:
    """A replica of the table in Redis at cfg.store: connected, no round trip yet
    (its ``attach`` creates the table or checks its settings).

    Redis is the store; sampling runs in Redis's scripts and, for a
    prioritized table, on this replica's mirror of the priorities.
    """
    from services.replay.redis_connection import RedisConnection
    from services.replay.redis_table import RedisTable

    connection = RedisConnection.open(cfg.store, cfg.redis_timeout_s)
    return RedisTable(connection, cfg, make_limiter(cfg), max_batch_bytes=max_batch_bytes)
