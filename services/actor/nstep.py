"""n-step transitions from a stream of single env steps.

A transition that starts at step t and spans k <= n steps is
(obs_t, action_t, sum_{j<k} gamma^j r_{t+j}, discount, obs_{t+k}) with
discount = gamma^k, or 0 when the episode terminated inside the window, so
the learner's target is ``reward + discount * max_a Q_target(next_obs, a)``.
Windows shorter than n only occur at an episode's end. A time-limit
truncation is not a terminal state: those windows bootstrap with gamma^k.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import numpy as np

# A discrete action index or a continuous action vector (float32 [A]).
Action = int | np.ndarray


class Transition(NamedTuple):
    """One n-step transition (the arrays are the ones handed to ``add``)."""

    obs: np.ndarray
    action: Action
    reward: float
    discount: float
    next_obs: np.ndarray


class NStepBuilder:
    """Turns (obs, action, reward, next_obs) steps into n-step transitions.

    The arrays passed to ``add`` are kept (not copied) until their windows
    are emitted, so the caller must not modify them in place afterwards.
    """

    def __init__(self, n: int, gamma: float) -> None:
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        self.n = n
        self.gamma = gamma
        self._powers = [gamma**k for k in range(n + 1)]
        self._window: deque[tuple[np.ndarray, Action, float]] = deque()

    def __len__(self) -> int:
        """Steps waiting for their window to complete."""
        return len(self._window)

    def _emit_oldest(self, next_obs: np.ndarray, terminated: bool) -> Transition:
        powers = self._powers
        ret = 0.0
        for j, (_, _, r) in enumerate(self._window):
            ret += powers[j] * r
        k = len(self._window)
        obs, action, _ = self._window.popleft()
        return Transition(obs, action, ret, 0.0 if terminated else powers[k], next_obs)

    def add(
        self,
        obs: np.ndarray,
        action: Action,
        reward: float,
        terminated: bool,
        truncated: bool,
        next_obs: np.ndarray,
    ) -> list[Transition]:
        """Record one env step; returns the transitions it completes (oldest first).

        At an episode end (terminated or truncated) every open window is
        emitted, so the next ``add`` starts a fresh episode.
        """
        self._window.append((obs, action, float(reward)))
        if terminated or truncated:
            return self.flush(next_obs, terminated)
        if len(self._window) == self.n:
            return [self._emit_oldest(next_obs, False)]
        return []

    def flush(self, next_obs: np.ndarray, terminated: bool) -> list[Transition]:
        """Emit every open window ending at next_obs (terminal or bootstrapped)."""
        out = []
        while self._window:
            out.append(self._emit_oldest(next_obs, terminated))
        return out

    def reset(self) -> None:
        """Drop open windows (their steps are never emitted)."""
        self._window.clear()
