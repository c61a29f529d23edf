"""Learner service configuration (flags, ACTORQ_* env, or the ``learner:`` file section).

Nested ``dqn`` settings are ``--dqn-lr`` / ``ACTORQ_DQN_LR`` / ``learner: {dqn: {lr: ...}}``;
``d4pg`` settings likewise (``--d4pg-preset paper``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from actorq.config import ConfigError, opt
from actorq.envs import env_info
from actorq.network import ALGOS, PRECISIONS
from services.learner.d4pg import D4PGConfig
from services.learner.dqn import DQNConfig

DEFAULT_PORT = 50053


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
    torch_threads: int = opt(1, "torch intra-op threads for the update step")
    prefetch: int = opt(4, "sampled batches kept ready ahead of the update step")
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

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ConfigError(f"algo {self.algo!r} is not supported; use one of {list(ALGOS)}")
        for name in ("replay_address", "quantizer_address"):
            if not getattr(self, name).strip():
                raise ConfigError(f"{name} is empty; give the service's host:port")
        if self.publish_every_steps < 1:
            raise ConfigError(
                f"publish_every_steps must be at least 1, got {self.publish_every_steps}"
            )
        if not self.precisions:
            raise ConfigError(f"precisions is empty; name at least one of {list(PRECISIONS)}")
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown:
            raise ConfigError(f"precisions {unknown} unknown; supported: {list(PRECISIONS)}")
        if self.calibration_size < 1:
            raise ConfigError(f"calibration_size must be at least 1, got {self.calibration_size}")
        if not self.checkpoint_every_s > 0:
            raise ConfigError(
                f"checkpoint_every_s must be positive seconds, got {self.checkpoint_every_s}"
            )
        if self.max_learner_steps < 0:
            raise ConfigError(
                f"max_learner_steps must be >= 0 (0: never stop), got {self.max_learner_steps}"
            )
        if self.torch_threads < 1:
            raise ConfigError(f"torch_threads must be at least 1, got {self.torch_threads}")
        if not self.actors_window_s > 0:
            raise ConfigError(
                f"actors_window_s must be positive seconds, got {self.actors_window_s}"
            )
        if self.prefetch < 1:
            raise ConfigError(f"prefetch must be at least 1 batch, got {self.prefetch}")
        if not (np.isfinite(self.priority_epsilon) and self.priority_epsilon > 0):
            raise ConfigError(
                f"priority_epsilon must be a positive number, got {self.priority_epsilon}"
            )
        if self.max_pending_priorities < 1:
            raise ConfigError(
                f"max_pending_priorities must be at least 1, got {self.max_pending_priorities}"
            )

    @property
    def batch_size(self) -> int:
        """Transitions per update of the configured algorithm."""
        return self.d4pg.batch_size if self.algo == "d4pg" else self.dqn.batch_size


def env_spaces(env_id: str) -> tuple[int, int]:
    """(obs_dim, num_actions) of an env with Discrete actions; ConfigError if DQN cannot
    learn it (the env layer's error for an unknown id or a non-Box observation)."""
    info = env_info(env_id)
    if info.continuous:
        raise ConfigError(
            f"env {env_id!r} has {info.describe_actions()}; DQN needs Discrete actions "
            "(use --algo d4pg for it)"
        )
    return info.obs_dim, info.num_actions


def continuous_env_spaces(env_id: str) -> tuple[int, np.ndarray, np.ndarray]:
    """(obs_dim, action_low, action_high) of an env with bounded Box actions; ConfigError
    if D4PG cannot learn it. ``dmc:DOMAIN-TASK`` ids load the dm_control adapter."""
    info = env_info(env_id)
    if info.action_low is None or info.action_high is None:
        raise ConfigError(
            f"env {env_id!r} has {info.num_actions} discrete actions; D4PG needs a Box of "
            "continuous actions (use --algo dqn for it)"
        )
    return info.obs_dim, info.action_low, info.action_high
