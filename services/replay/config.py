"""Replay service configuration (flags, ACTORQ_* env, or the ``replay:`` file section)."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from actorq.config import ConfigError, opt
from services.replay.rate_limiter import check_settings
from services.replay.sampler import SAMPLERS
from services.replay.store import Signature, check_store, redact_url

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
        "where transitions live: 'memory' (this process; lost when it stops unless "
        "journal is set) or a Redis URL redis://[:PASSWORD@]HOST:PORT/DB (rediss:// for "
        "TLS): every bit of state in Redis, so the replay can restart and several replicas "
        "serve one table",
    )
    journal: str = opt(
        "",
        "file where a memory store writes every committed Insert before acknowledging it, "
        "and which it reloads on start: a replay killed or crashed loses no acknowledged "
        "transition (a power loss may, unless journal_fsync). Compacted at about twice "
        "the capacity's worth of rows. Empty: off (a memory table is lost with its "
        "process); actorq train turns it on in the run directory",
    )
    journal_fsync: bool = opt(
        False,
        "fsync the journal after each commit, so acknowledged transitions survive a power "
        "loss too; each Insert then waits for the disk",
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
        16,
        "gRPC handler threads for short calls (health, stats, priority updates); Insert "
        "and Sample streams have budgets of their own (max_insert_streams, "
        "max_sample_streams) on top, so they can never take these",
    )
    max_insert_streams: int = opt(
        512,
        "Insert streams served at once (every open stream and every insert held by the "
        "rate limiter holds a thread); more are refused with RESOURCE_EXHAUSTED, which "
        "actors back off from and retry. Keep it above the number of actors",
    )
    max_sample_streams: int = opt(
        16,
        "Sample streams served at once (each holds a thread while open, and up to ~32 MiB "
        "drawn ahead); more are refused with RESOURCE_EXHAUSTED, which the learner backs "
        "off from and retries. A learner holds one",
    )
    max_insert_bytes: int = opt(
        64 * 1024 * 1024,
        "most bytes one Insert stream may carry (it is buffered until committed); a stream "
        "that goes past it is refused with RESOURCE_EXHAUSTED at the chunk that does, "
        "before that chunk is kept (the actor then sends fewer chunks per Insert)",
    )
    max_buffered_insert_bytes: int = opt(
        256 * 1024 * 1024,
        "most bytes all open Insert streams may hold together before they commit; a "
        "chunk that would go past it fails its stream with RESOURCE_EXHAUSTED marked busy "
        "(the actor backs off and resends), so memory stays bounded however many stream",
    )
    max_abs_reward: float = opt(
        1e6,
        "largest |reward| a transition may carry (the n-step return the actor sends); "
        "a chunk with a bigger one is refused with INVALID_ARGUMENT. It keeps a caller "
        "from driving the learner's loss to infinity; set it near your env's reward scale",
    )
    obs_dim: int = opt(
        0,
        "the table's observation size, fixed before any insert (actorq train sets it from "
        "the env); 0: the first insert fixes it (and every field's shape)",
    )
    action_dim: int = opt(
        -1,
        "the table's action layout, fixed before any insert with obs_dim: 0 for discrete "
        "actions (int64 [N]), A > 0 for continuous ones (float32 [N, A]); -1: the first "
        "insert fixes it",
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
        self._check_journal()
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
        for name in ("max_workers", "max_insert_streams", "max_sample_streams"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_insert_bytes < 1024:
            raise ConfigError(
                f"max_insert_bytes must be at least 1024, got {self.max_insert_bytes}"
            )
        if self.max_buffered_insert_bytes < self.max_insert_bytes:
            raise ConfigError(
                f"max_buffered_insert_bytes {self.max_buffered_insert_bytes} is below "
                f"max_insert_bytes {self.max_insert_bytes}: no Insert of the largest allowed "
                "size could ever be buffered; raise it"
            )
        if not (math.isfinite(self.max_abs_reward) and self.max_abs_reward > 0):
            raise ConfigError(
                f"max_abs_reward must be a finite number > 0, got {self.max_abs_reward}"
            )
        self._check_signature()

    def _check_journal(self) -> None:
        """A journal only for a memory store, at a path this process could create."""
        if not self.journal:
            return
        if self.store != "memory":
            raise ConfigError(
                f"journal {self.journal!r} is for a memory store; a Redis store keeps every "
                "transition in Redis: leave journal empty"
            )
        path = Path(self.journal).absolute()
        if path.is_dir():
            raise ConfigError(f"journal {self.journal!r} is a directory; give a file path")
        # The file, or the nearest folder above it that exists (the rest is created).
        target = path if path.exists() else next(p for p in path.parents if p.exists())
        if not (target == path or target.is_dir()):
            raise ConfigError(f"journal {self.journal!r}: {target} is a file, not a folder")
        if not os.access(target, os.W_OK):
            raise ConfigError(
                f"journal {self.journal!r} is not writable by this process ({target} is "
                "not); give a writable path, or an empty journal to run without one"
            )

    def _check_signature(self) -> None:
        """obs_dim and action_dim: both unset, or a layout a chunk could have."""
        if (self.obs_dim == 0) != (self.action_dim == -1):
            raise ConfigError(
                f"obs_dim {self.obs_dim} and action_dim {self.action_dim}: set both (the "
                "table's layout) or neither (the first insert fixes it)"
            )
        if self.obs_dim < 0 or self.action_dim < -1:
            raise ConfigError(
                f"obs_dim must be >= 1 and action_dim >= 0 (0: discrete) when set, got "
                f"{self.obs_dim} and {self.action_dim}"
            )

    @property
    def signature(self) -> Signature | None:
        """The layout obs_dim and action_dim fix, or None (the first insert fixes it)."""
        if self.obs_dim == 0:
            return None
        return Signature.for_spaces(self.obs_dim, self.action_dim)

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
