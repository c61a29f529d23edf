"""Greedy evaluation of a served ONNX policy (no exploration, no torch).

Discrete policies take the argmax action; continuous ones their deterministic
action (clipped to the env's bounds, as the actors clip, so an int8 rounding
just past a bound is not an error).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actorq.envs import EnvInfo, flat_obs, make_env
from services.actor.policy import OnnxPolicy, check_fits


@dataclass
class EvalResult:
    """Greedy episode returns.

    ``mean`` is over ``returns``: all requested episodes unless
    ``stopped_early``, in which case it covers only ``episodes_run`` and must
    not be read as the policy's score (the target was already out of reach).
    """

    mean: float
    returns: list[float] = field(default_factory=list)
    episodes_run: int = 0
    # Steps of each episode run, in order.
    lengths: list[int] = field(default_factory=list)
    stopped_early: bool = False


def evaluate(
    policy: OnnxPolicy,
    env_id: str,
    episodes: int,
    seed: int,
    target_return: float | None = None,
    max_episode_return: float | None = None,
    make: Callable[[str, int], tuple[Any, EnvInfo]] = make_env,
) -> EvalResult:
    """Run ``episodes`` greedy episodes (episode i reset with seed + i).

    Stops early only when the target mean is mathematically out of reach:
    with a known bound ``max_episode_return`` on one episode's return (500 for
    CartPole-v1), even perfect remaining episodes could not lift the mean over
    all ``episodes`` to ``target_return``. Without a bound, every episode runs.
    ``make(env_id, seed)`` creates the env (``actorq eval --video`` wraps it to
    record frames; the episodes stay the same).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    env, info = make(env_id, seed)
    try:
        check_fits(policy, info)
    except BaseException:
        env.close()
        raise
    act: Callable[[np.ndarray], Any] = policy.act
    if info.action_low is not None and info.action_high is not None:
        low, high = info.action_low, info.action_high

        def act(obs: np.ndarray) -> np.ndarray:
            return np.clip(policy.action(obs), low, high)

    returns: list[float] = []
    lengths: list[int] = []
    try:
        for i in range(episodes):
            obs = flat_obs(env.reset(seed=seed + i)[0])
            total, steps = 0.0, 0
            while True:
                raw, reward, terminated, truncated, _ = env.step(act(obs))
                total += float(reward)
                steps += 1
                if terminated or truncated:
                    break
                obs = flat_obs(raw)
            returns.append(total)
            lengths.append(steps)
            if _out_of_reach(returns, episodes, target_return, max_episode_return):
                break
    finally:
        env.close()
    return EvalResult(
        mean=sum(returns) / len(returns),
        returns=returns,
        episodes_run=len(returns),
        stopped_early=len(returns) < episodes,
        lengths=lengths,
    )


def _out_of_reach(
    returns: list[float], episodes: int, target: float | None, bound: float | None
) -> bool:
    """True when even ``bound`` on every remaining episode leaves the mean below target."""
    if target is None or bound is None or len(returns) >= episodes:
        return False
    best_total = sum(returns) + (episodes - len(returns)) * bound
    return best_total < target * episodes
