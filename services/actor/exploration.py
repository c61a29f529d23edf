"""Exploration: epsilon-greedy (linear decay, Ape-X's per-actor ladder) for discrete
actions, clipped Gaussian noise (a sigma per actor) for continuous ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def apex_final_epsilon(eps_final: float, alpha: float, index: int, num_actors: int) -> float:
    """Actor index's final epsilon: eps_final ** (1 + alpha * index / (num_actors - 1)).

    Horgan et al. (2018), Ape-X: actors spread from eps_final (index 0) to
    eps_final ** (1 + alpha) (the last one), so some explore a lot and some
    hardly at all. One actor, or alpha 0, gives eps_final.
    """
    if num_actors <= 1 or alpha == 0.0:
        return eps_final
    return float(eps_final ** (1.0 + alpha * index / (num_actors - 1)))


@dataclass(frozen=True)
class EpsilonSchedule:
    """Epsilon falls linearly from start to final over decay_steps env steps, then stays."""

    start: float
    final: float
    decay_steps: int

    def __call__(self, step: int) -> float:
        """Epsilon at this actor's env step ``step`` (0-based)."""
        if self.decay_steps <= 0 or step >= self.decay_steps:
            return self.final
        return self.start + (self.final - self.start) * (step / self.decay_steps)


def actor_sigma(sigmas: Sequence[float], index: int, num_actors: int) -> float:
    """Actor index's exploration noise: the one value given, or its own entry.

    ``sigmas`` holds one value for every actor or exactly one per actor
    (ActorConfig checks that), so actors can explore more and less, as
    Ape-X's epsilon ladder does for discrete actions.
    """
    if len(sigmas) == 1:
        return float(sigmas[0])
    if len(sigmas) != num_actors:
        raise ValueError(f"{len(sigmas)} noise sigmas for {num_actors} actors; give 1 or one each")
    return float(sigmas[index])


class GaussianNoise:
    """Continuous exploration: action + N(0, (sigma * half_range)^2) per dimension, clipped.

    sigma is relative to half the action range, so 0.3 means 0.3 on the suite's
    [-1, 1] actions and 0.6 on Pendulum's [-2, 2]. Each call returns a new
    float32 array (the n-step window keeps it), clipped to [low, high].
    """

    def __init__(self, sigma: float, low: np.ndarray, high: np.ndarray, seed: int) -> None:
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.sigma = float(sigma)
        self.low = np.asarray(low, np.float32)
        self.high = np.asarray(high, np.float32)
        self._scale = (self.sigma * (self.high - self.low) / 2).astype(np.float32)
        self._dim = int(self.low.shape[0])
        self._normal = np.random.default_rng(seed).standard_normal

    def __call__(self, action: np.ndarray) -> np.ndarray:
        """A noisy copy of action, inside the bounds."""
        noisy = self._normal(self._dim, dtype=np.float32)
        noisy *= self._scale
        noisy += action
        np.clip(noisy, self.low, self.high, out=noisy)
        return noisy
