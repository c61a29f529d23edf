"""Learner service configuration (flags, ACTORQ_* env, or the ``learner:`` file section).

Nested ``dqn`` settings are ``--dqn-lr`` / ``ACTORQ_DQN_LR`` / ``learner: {dqn: {lr: ...}}``;
``d4pg`` settings likewise (``--d4pg-preset paper``). Imports no torch: the
launcher loads and checks this before any process starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from actorq.config import ConfigError, opt
from actorq.network import PRECISIONS
from actorq.rpc import MAX_BATCHES_PER_MESSAGE
from services.learner.algorithms import ALGORITHMS
from services.learner.hyperparams import D4PGConfig, DQNConfig

DEFAULT_PORT = 50053
# learner.device values; whether torch can use the one named is checked when the
# agent is built (services/learner/common.py: resolve_device).
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass
class LearnerConfig:
    """Where the learner listens, whom it talks to, and how it trains."""

    host: str = opt("127.0.0.1", "interface to listen on (0.0.0.0 for all)")
    port: int = opt(DEFAULT_PORT, "gRPC port for GetStatus (0 picks a free one)")
    env: str = opt(
        "CartPole-v1",
        "Gymnasium env id or dmc:DOMAIN-TASK; its observation/action spaces size the networks",
    )
    algo: str = opt(
        "dqn", "learning algorithm: dqn (Discrete actions) or d4pg (bounded Box actions)"
    )
    replay_address: str = opt("127.0.0.1:50051", "host:port of the replay service")
    quantizer_address: str = opt("127.0.0.1:50052", "host:port of the quantizer service")
    publish_every_steps: int = opt(100, "send FP32 weights to the quantizer every N updates")
    precisions: list[str] = opt(
        ["fp32", "int8"], "precisions the quantizer builds for every published version"
    )
    calibration_size: int = opt(
        256, "recent sampled observations sent with each publish (int8 calibration)"
    )
    checkpoint_dir: str = opt("", "directory of the checkpoint to write and resume from ('': off)")
    checkpoint_every_s: float = opt(60.0, "seconds between checkpoints while training")
    max_learner_steps: int = opt(0, "stop updating after this many updates (0: never)")
    seed: int = opt(0, "seed of the network initialisation")
    device: str = opt(
        "auto",
        "where the networks train: auto (CUDA when torch sees a GPU, else the CPU), cpu, "
        "cuda or cuda:N; the weights published are always copied to the CPU",
    )
    torch_threads: int = opt(
        1,
        "torch intra-op threads for the update step (`actorq train` sets it from its core "
        "budget: the CPUs its actors leave)",
    )
    prefetch: int = opt(
        4, "sampled batches kept ready ahead of the update step (one Sample call each)"
    )
    batches_per_message: int = opt(
        4,
        "sampled batches the replay packs into one message (fewer messages: less gRPC "
        "work beside a fast update step; the replay packs fewer where they would not fit)",
    )
    priority_epsilon: float = opt(
        1e-3,
        "added to |TD error| to make a new priority, so no transition's chance of "
        "being sampled drops to zero (prioritized replay only)",
    )
    max_pending_priorities: int = opt(
        65_536,
        "priorities waiting to be sent to the replay at most (keep it above the batch "
        "size); past that the oldest updates are dropped (and counted) so a slow replay "
        "never holds up the update step",
    )
    actors_window_s: float = opt(
        15.0,
        "an actor counts as active (status and metrics) while replay counted inserts from "
        "it within this many seconds",
    )
    dqn: DQNConfig = field(default_factory=DQNConfig)
    d4pg: D4PGConfig = field(default_factory=D4PGConfig)

    # Settings that must be whole numbers >= 1, and durations that must be positive.
    _AT_LEAST_ONE = (
        "publish_every_steps",
        "calibration_size",
        "torch_threads",
        "max_pending_priorities",
    )
    _POSITIVE_SECONDS = ("checkpoint_every_s", "actors_window_s")

    def __post_init__(self) -> None:
        if self.algo not in ALGORITHMS:
            raise ConfigError(f"algo {self.algo!r} is not supported; use one of {list(ALGORITHMS)}")
        for name in ("replay_address", "quantizer_address"):
            if not getattr(self, name).strip():
                raise ConfigError(f"{name} is empty; give the service's host:port")
        for name in self._AT_LEAST_ONE:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in self._POSITIVE_SECONDS:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive seconds, got {getattr(self, name)}")
        if not self.precisions:
            raise ConfigError(f"precisions is empty; name at least one of {list(PRECISIONS)}")
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown:
            raise ConfigError(f"precisions {unknown} unknown; supported: {list(PRECISIONS)}")
        if self.max_learner_steps < 0:
            raise ConfigError(
                f"max_learner_steps must be >= 0 (0: never stop), got {self.max_learner_steps}"
            )
        if not _DEVICE.fullmatch(self.device):
            raise ConfigError(
                f"device {self.device!r} is not one of auto, cpu, cuda, cuda:N (N: the GPU's index)"
            )
        if self.prefetch < 1:
            raise ConfigError(f"prefetch must be at least 1 batch, got {self.prefetch}")
        if not 1 <= self.batches_per_message <= MAX_BATCHES_PER_MESSAGE:
            raise ConfigError(
                f"batches_per_message must be in [1, {MAX_BATCHES_PER_MESSAGE}], "
                f"got {self.batches_per_message}"
            )
        if not (np.isfinite(self.priority_epsilon) and self.priority_epsilon > 0):
            raise ConfigError(
                f"priority_epsilon must be a positive number, got {self.priority_epsilon}"
            )

    @property
    def batch_size(self) -> int:
        """Transitions per update of the configured algorithm."""
        return ALGORITHMS[self.algo].batch_size(self)
