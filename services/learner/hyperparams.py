"""Every hyperparameter of each learning algorithm, with its default and a line of help.

One dataclass per algorithm (``DQNConfig``, ``D4PGConfig``); ``LearnerConfig``
holds one of each as its ``dqn`` / ``d4pg`` section (``--dqn-lr``,
``learner: {d4pg: {preset: paper}}``). This module imports no torch, so the
launcher can load and check every setting before any process starts; the
networks and update steps that read these settings are in dqn.py and d4pg.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from actorq.config import ConfigError, opt
from actorq.network import D4PG_POLICY


def _check_update_rule(
    section: str, settings: object, positive: tuple[str, ...], clips: tuple[str, ...]
) -> None:
    """ConfigError naming the first of an algorithm's update settings out of range:
    the ``positive`` ones, batch_size and target_update_every, tau and the ``clips``."""
    rules: list[tuple[tuple[str, ...], Callable[[float], bool], str]] = [
        (positive, lambda v: v > 0, "must be positive"),
        (("batch_size", "target_update_every"), lambda v: v >= 1, "must be at least 1"),
        (("tau",), lambda v: 0.0 < v <= 1.0, "must be in (0, 1] (1 = hard copy)"),
        (clips, lambda v: not v < 0, "must be >= 0 (0 turns clipping off)"),
    ]
    for names, ok, must in rules:
        for name in names:
            value = getattr(settings, name)
            if not ok(value):
                raise ConfigError(f"{section}.{name} {must}, got {value}")


@dataclass
class DQNConfig:
    """Every DQN knob with its default (tuned on CartPole-v1)."""

    hidden_sizes: list[int] = opt([256, 256], "hidden layer widths of the Q-network MLP")
    lr: float = opt(1e-3, "Adam learning rate")
    adam_eps: float = opt(1e-8, "Adam epsilon (numerical floor of the update denominator)")
    batch_size: int = opt(64, "transitions per update (sampled from replay)")
    target_update_every: int = opt(
        500, "every K updates, target <- tau * online + (1 - tau) * target"
    )
    tau: float = opt(1.0, "target blend factor at each target update; 1.0 = hard copy")
    huber_delta: float = opt(1.0, "Huber loss threshold between quadratic and linear")
    max_grad_norm: float = opt(10.0, "clip the global gradient norm to this (0: no clipping)")
    double_dqn: bool = opt(
        True, "choose next actions with the online net, value them with the target net"
    )

    def __post_init__(self) -> None:
        if not self.hidden_sizes or any(h < 1 for h in self.hidden_sizes):
            raise ConfigError(
                f"dqn.hidden_sizes must be one or more positive widths, got {self.hidden_sizes}"
            )
        _check_update_rule(
            "dqn", self, positive=("lr", "adam_eps", "huber_delta"), clips=("max_grad_norm",)
        )


# Hidden activations a D4PG network may use (the contract lists what the quantizer builds).
ACTIVATIONS = tuple(sorted(D4PG_POLICY.activations))

# Network sizes by preset: "acme" as Acme's D4PG examples use, "paper" as the
# ActorQ paper's D4PG (a large policy, where int8 actors pay off most).
PRESETS: dict[str, dict[str, list[int]]] = {
    "acme": {"policy_sizes": [256, 256, 256], "critic_sizes": [512, 512, 256]},
    "paper": {"policy_sizes": [2048, 2048, 2048], "critic_sizes": [512, 512, 256]},
}


@dataclass
class D4PGConfig:
    """Every D4PG knob with its default (Acme's D4PG defaults unless noted)."""

    preset: str = opt(
        "acme",
        "network sizes: 'acme' (policy 256x256x256, critic 512x512x256) or 'paper' "
        "(policy 2048x2048x2048, critic 512x512x256); policy_sizes/critic_sizes override",
    )
    policy_sizes: list[int] = opt([], "policy MLP hidden widths (empty: the preset's)")
    critic_sizes: list[int] = opt([], "critic MLP hidden widths (empty: the preset's)")
    layer_norm: bool = opt(
        True, "first block of both networks is Linear -> LayerNorm -> tanh (Acme's LayerNormMLP)"
    )
    activation: str = opt("elu", f"hidden activation after the first block: {list(ACTIVATIONS)}")
    num_atoms: int = opt(51, "atoms of the critic's categorical return distribution")
    vmin: float = opt(-150.0, "smallest atom (return value) of the critic's support")
    vmax: float = opt(150.0, "largest atom of the critic's support")
    policy_lr: float = opt(1e-4, "Adam learning rate of the policy")
    critic_lr: float = opt(1e-4, "Adam learning rate of the critic")
    adam_eps: float = opt(1e-8, "Adam epsilon of both optimizers")
    batch_size: int = opt(256, "transitions per update (sampled from replay)")
    target_update_every: int = opt(
        100, "every K updates, target <- tau * online + (1 - tau) * target (both networks)"
    )
    tau: float = opt(1.0, "target blend factor at each target update; 1.0 = hard copy")
    max_grad_norm: float = opt(
        40.0, "clip each network's global gradient norm to this (0: no clipping)"
    )
    dqda_clip: float = opt(
        1.0, "clip the critic's action gradient dQ/da elementwise to +-this (0: no clipping)"
    )

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(
                f"d4pg.preset {self.preset!r} is not one of {sorted(PRESETS)}; or set "
                "d4pg.policy_sizes and d4pg.critic_sizes yourself"
            )
        for name in ("policy_sizes", "critic_sizes"):
            sizes = getattr(self, name)
            if any(h < 1 for h in sizes):
                raise ConfigError(f"d4pg.{name} must be positive widths, got {sizes}")
        if not self.policy_hidden or not self.critic_hidden:
            raise ConfigError("d4pg networks need at least one hidden layer each")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"d4pg.activation {self.activation!r} is not one of {list(ACTIVATIONS)}"
            )
        if self.num_atoms < 2:
            raise ConfigError(f"d4pg.num_atoms must be at least 2, got {self.num_atoms}")
        if not (np.isfinite(self.vmin) and np.isfinite(self.vmax) and self.vmin < self.vmax):
            raise ConfigError(
                f"d4pg.vmin {self.vmin} and vmax {self.vmax} must be finite with vmin < vmax"
            )
        _check_update_rule(
            "d4pg",
            self,
            positive=("policy_lr", "critic_lr", "adam_eps"),
            clips=("max_grad_norm", "dqda_clip"),
        )

    @property
    def policy_hidden(self) -> list[int]:
        """The policy's hidden widths: policy_sizes, else the preset's."""
        return list(self.policy_sizes or PRESETS[self.preset]["policy_sizes"])

    @property
    def critic_hidden(self) -> list[int]:
        """The critic's hidden widths: critic_sizes, else the preset's."""
        return list(self.critic_sizes or PRESETS[self.preset]["critic_sizes"])
