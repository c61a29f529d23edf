"""Replay service configuration (flags, ACTORQ_* env, or the ``replay:`` file section)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from actorq.config import ConfigError, opt
from services.replay.rate_limiter import check_settings
from services.replay.sampler import SAMPLERS
from services.replay.store import check_store, redact_url

DEFAULT_PORT = 50051
_TABLE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass
class ReplayConfig:
    """Everything the replay service can be told; defaults serve a CartPole DQN run."""

    host: str = opt("127.0.0.1", "interface to listen on (0.0.0.0 for all)")
    port: int = opt(DEFAULT_PORT, "gRPC port (0 picks a free one)")
    capacity: int = opt(100_000, "transitions held; when full, the oldest are evicted first (FIFO)")
    min_size_to_sample: int = opt(
        1_000, "Sample waits until the table holds at least this many transitions"
    )
    samples_per_insert: float = opt(
        0.0,
        "target number of times each transition is sampled over its lifetime "
        "(Reverb's SampleToInsertRatio); inserts wait when actors run ahead, samples "
        "wait when the learner does. <= 0 turns the ratio off: only min_size_to_sample "
        "gates sampling and inserts never wait",
    )
    samples_per_insert_tolerance: float = opt(
        0.1,
        "how far the sample-to-insert ratio may drift, as a fraction of samples_per_insert "
        "per transition of min_size_to_sample (Acme's samples_per_insert_tolerance_rate); "
        "it derives error_buffer when that is not set",
    )
    error_buffer: float | None = opt(
        None,
        "how far (in sampled transitions) the ratio may drift either way from "
        "samples_per_insert * min_size_to_sample before a side waits (Reverb's meaning). "
        "Unset: derived as min_size_to_sample * samples_per_insert * "
        "samples_per_insert_tolerance (Acme's builders); set it to override. Must be "
        ">= max(1, samples_per_insert), and a sampled batch of B needs "
        "2 * error_buffer >= samples_per_insert + B",
    )
    max_insert_transitions: int = opt(
        65_536,
        "most transitions one Insert stream may carry (it is buffered until committed); "
        "more is refused with RESOURCE_EXHAUSTED. Capped at capacity (a bigger Insert "
        "would evict its own transitions)",
    )
    seed: int = opt(0, "seed of the sampler's random generator")
    store: str = opt(
        "memory",
        "where transitions live: 'memory' (this process, lost when it stops) or a Redis "
        "URL redis://[:PASSWORD@]HOST:PORT/DB (rediss:// for TLS): every bit of state in "
        "Redis, so the replay can restart and several replicas serve one table",
    )
    sampler: str = opt(
        "uniform",
        f"how batches are drawn: one of {list(SAMPLERS)} (prioritized: proportional PER, "
        "the learner sends TD-error priorities back with UpdatePriorities)",
    )
    priority_exponent: float = opt(
        0.6,
        "PER alpha: an item is drawn with probability priority^alpha / sum; 0 is uniform "
        "(prioritized sampler only)",
    )
    importance_exponent: float = opt(
        0.4,
        "PER beta: importance weights (N * P(i))^-beta, divided by the batch's largest; "
        "1 corrects the sampling bias fully (prioritized sampler only)",
    )
    table: str = opt(
        "replay",
        "name of the table in Redis: its keys are actorq:{TABLE}:*, so replicas with the "
        "same store and table share one table (Redis store only)",
    )
    redis_poll_s: float = opt(
        0.01,
        "how often an Insert or Sample held by the rate limiter re-reads the shared "
        "counters in Redis (other replicas' progress is seen at this pace; this "
        "replica's own is seen at once)",
    )
    redis_timeout_s: float = opt(
        5.0,
        "seconds to connect to Redis or wait for one reply before the call fails with UNAVAILABLE",
    )
    sample_prefetch: int = opt(
        4,
        "batches each Sample stream draws at a time (one store call: one Redis round "
        "trip), on a thread of its own that keeps up to twice that many ahead of the one "
        "being sent, so drawing overlaps encoding and sending; they count as sampled when "
        "drawn. 0: draw each batch only when it is sent",
    )
    max_workers: int = opt(
        64,
        "gRPC handler threads; every Insert waiting on the rate limiter and every open "
        "Sample stream holds one, so keep it above actors + samplers + a few",
    )

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is outside 0..65535")
        if self.capacity < 1:
            raise ConfigError(f"capacity must be at least 1, got {self.capacity}")
        if self.capacity >= 2**32:
            raise ConfigError(f"capacity must be below 2**32, got {self.capacity}")
        self._check_ratio()
        if self.min_size_to_sample > self.capacity:
            raise ConfigError(
                f"min_size_to_sample {self.min_size_to_sample} exceeds capacity "
                f"{self.capacity}: the table could never hold enough to sample; lower "
                "min_size_to_sample or raise capacity"
            )
        if self.max_insert_transitions < 1:
            raise ConfigError(
                f"max_insert_transitions must be at least 1, got {self.max_insert_transitions}"
            )
        check_store(self.store)
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler {self.sampler!r} unknown; available: {list(SAMPLERS)}")
        if not (math.isfinite(self.priority_exponent) and self.priority_exponent >= 0):
            raise ConfigError(
                f"priority_exponent must be a finite number >= 0, got {self.priority_exponent}"
            )
        if not (math.isfinite(self.importance_exponent) and 0 <= self.importance_exponent <= 1):
            raise ConfigError(
                f"importance_exponent must be in [0, 1], got {self.importance_exponent}"
            )
        if not _TABLE_NAME.fullmatch(self.table):
            raise ConfigError(f"table {self.table!r} must be 1-64 letters, digits, '.', '_' or '-'")
        if not (math.isfinite(self.redis_poll_s) and 0.001 <= self.redis_poll_s <= 1.0):
            raise ConfigError(
                f"redis_poll_s must be in [0.001, 1] seconds, got {self.redis_poll_s}"
            )
        if not (math.isfinite(self.redis_timeout_s) and self.redis_timeout_s > 0):
            raise ConfigError(f"redis_timeout_s must be > 0 seconds, got {self.redis_timeout_s}")
        if not 0 <= self.sample_prefetch <= 64:
            raise ConfigError(
                f"sample_prefetch must be in 0..64 batches, got {self.sample_prefetch}"
            )
        if self.max_workers < 4:
            raise ConfigError(
                f"max_workers must be at least 4 (an insert, a sample stream, stats, "
                f"health), got {self.max_workers}"
            )

    def _check_ratio(self) -> None:
        """The limiter's settings by Reverb's rules, error_buffer derived if unset."""
        tolerance = self.samples_per_insert_tolerance
        if not (math.isfinite(tolerance) and tolerance > 0):
            raise ConfigError(f"samples_per_insert_tolerance must be > 0, got {tolerance}")
        try:
            check_settings(
                self.samples_per_insert, self.min_size_to_sample, self.effective_error_buffer
            )
        except ConfigError as err:
            if self.error_buffer is not None or not math.isfinite(self.samples_per_insert):
                raise
            raise ConfigError(
                f"{err}; here error_buffer is derived: min_size_to_sample "
                f"{self.min_size_to_sample} x samples_per_insert {self.samples_per_insert:g} x "
                f"samples_per_insert_tolerance {tolerance:g} = {self.effective_error_buffer:g}, "
                "so raise samples_per_insert_tolerance or set error_buffer"
            ) from None

    @property
    def effective_error_buffer(self) -> float:
        """The rate limiter's error_buffer: as set, or derived when unset (Acme's
        builders): ``min_size_to_sample * samples_per_insert *
        samples_per_insert_tolerance``; 0 with the ratio off (it is not used)."""
        if self.error_buffer is not None:
            return float(self.error_buffer)
        if self.samples_per_insert <= 0:
            return 0.0
        return self.min_size_to_sample * self.samples_per_insert * self.samples_per_insert_tolerance

    @property
    def store_label(self) -> str:
        """The store as logs and ReplayStats show it: any password replaced by ***."""
        return redact_url(self.store)
