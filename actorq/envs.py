"""Environments the actor can step: flat Box observations, Discrete or bounded Box actions.

Gymnasium ids (``CartPole-v1``, ``Pendulum-v1``) go through ``gymnasium.make``,
including Gymnasium's own ``module:EnvId`` form for envs users bring (the module
is imported first, in every process that makes the env, so that it registers its
ids); ``dmc:DOMAIN-TASK`` ids go through the dm_control adapter (``actorq.dmc``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np

from actorq import dmc
from actorq.config import ConfigError


@dataclass
class EnvInfo:
    """What the actor needs to know about an env to check a served model against it.

    Discrete envs have ``num_actions`` > 0 and no bounds; continuous ones have
    ``num_actions`` 0 and float32 ``action_low``/``action_high`` of shape [A].
    """

    env_id: str
    obs_dim: int
    num_actions: int
    max_episode_steps: int | None
    action_low: np.ndarray | None = None
    action_high: np.ndarray | None = None

    @property
    def continuous(self) -> bool:
        """True when actions are float vectors within bounds (a Box)."""
        return self.action_low is not None

    @property
    def action_dim(self) -> int:
        """Length of a continuous action (0 for discrete envs)."""
        return 0 if self.action_low is None else int(self.action_low.shape[0])

    def describe_actions(self) -> str:
        """``2 actions`` or ``6-dim actions in [-1, 1]`` (for error messages)."""
        if self.action_low is None or self.action_high is None:
            return f"{self.num_actions} actions"
        lo, hi = self.action_low, self.action_high
        if np.all(lo == lo[0]) and np.all(hi == hi[0]):
            return f"{self.action_dim}-dim actions in [{lo[0]:g}, {hi[0]:g}]"
        return f"{self.action_dim}-dim actions in [{lo.tolist()}, {hi.tolist()}]"


def _import_env_module(env_id: str) -> str:
    """The id without its ``module:`` prefix, after importing that module (which registers it)."""
    module, sep, name = env_id.rpartition(":")
    if not sep:
        return env_id
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise ConfigError(
            f"env {env_id!r}: module {module!r} cannot be imported ({err}); install it or put "
            "its folder on PYTHONPATH for every service"
        ) from None
    except Exception as err:  # user code: anything it raises is a failed import
        raise ConfigError(
            f"env {env_id!r}: importing module {module!r} failed ({type(err).__name__}: {err})"
        ) from None
    return name


def _gymnasium_spec(env_id: str) -> Any:
    name = _import_env_module(env_id)
    try:
        return gymnasium.spec(name)
    except gymnasium.error.Error as err:
        raise ConfigError(
            f"env {env_id!r} is not a registered Gymnasium env ({err}); list the "
            "available ids with `python -c 'import gymnasium; gymnasium.pprint_registry()'`"
            ", name your own as module:EnvId (the module registers it), or a dm_control "
            "task as dmc:DOMAIN-TASK"
        ) from None


def check_env_id(env_id: str) -> None:
    """ConfigError naming the problem if env_id names no env, without creating one."""
    if dmc.is_dmc_id(env_id):
        dmc.parse_id(env_id)  # names the domains or tasks there are
    else:
        _gymnasium_spec(env_id)


def max_episode_return(env_id: str) -> float | None:
    """An upper bound on one episode's return, where the env makes one known.

    Used only to stop an evaluation early once its target is out of reach:
    dm_control tasks (rewards in [0, 1] per step) and CartPole (+1 per step).
    """
    if dmc.is_dmc_id(env_id):
        return dmc.max_episode_return(env_id)
    if env_id.startswith("CartPole"):
        steps = _gymnasium_spec(env_id).max_episode_steps
        return float(steps) if steps else None
    return None


def make_env(env_id: str, seed: int | None = None) -> tuple[gymnasium.Env[Any, Any], EnvInfo]:
    """Create env_id; ConfigError with a readable sentence when it cannot be used.

    Observations must be a Box (flattened to obs_dim floats); actions
    Discrete(n) (dqn_mlp policies) or a 1-D Box with finite bounds
    (d4pg_policy). ``seed`` seeds a dm_control task at load; Gymnasium envs
    are seeded by their first ``reset(seed=...)`` as usual.
    """
    if dmc.is_dmc_id(env_id):
        env: gymnasium.Env[Any, Any] = dmc.make(env_id, seed)
        max_steps = env.max_episode_steps  # type: ignore[attr-defined]
    else:
        spec = _gymnasium_spec(env_id)
        try:
            env = gymnasium.make(env_id)
        except gymnasium.error.Error as err:
            raise ConfigError(f"env {env_id!r} cannot be created: {err}") from None
        max_steps = spec.max_episode_steps
    try:
        info = _describe(env_id, env.observation_space, env.action_space, max_steps)
    except ConfigError:
        env.close()
        raise
    return env, info


def _describe(
    env_id: str, obs_space: Any, act_space: Any, max_episode_steps: int | None
) -> EnvInfo:
    if not isinstance(obs_space, gymnasium.spaces.Box):
        raise ConfigError(
            f"env {env_id!r} has observation space {obs_space}; the actor needs a Box "
            "(a flat float vector)"
        )
    obs_dim = int(np.prod(obs_space.shape))
    if isinstance(act_space, gymnasium.spaces.Discrete):
        return EnvInfo(env_id, obs_dim, int(act_space.n), max_episode_steps)
    if isinstance(act_space, gymnasium.spaces.Box):
        low = np.asarray(act_space.low, np.float32)
        high = np.asarray(act_space.high, np.float32)
        if low.ndim != 1:
            raise ConfigError(
                f"env {env_id!r} has action space {act_space}; continuous policies need a "
                "1-D Box of actions"
            )
        if not (np.isfinite(low).all() and np.isfinite(high).all() and (low < high).all()):
            raise ConfigError(
                f"env {env_id!r} has action bounds {low.tolist()}..{high.tolist()}; a tanh "
                "policy needs finite bounds with low < high in every dimension"
            )
        return EnvInfo(env_id, obs_dim, 0, max_episode_steps, low, high)
    raise ConfigError(
        f"env {env_id!r} has action space {act_space}; the actor runs Discrete (dqn_mlp) "
        "or bounded Box (d4pg_policy) actions"
    )


def env_info(env_id: str) -> EnvInfo:
    """The EnvInfo of env_id without keeping the env (ConfigError as make_env)."""
    env, info = make_env(env_id)
    env.close()
    return info


def flat_obs(obs: Any) -> np.ndarray:
    """An observation as a new contiguous float32 vector.

    Always a copy: n-step windows keep observations for several steps, and an
    env may reuse (and overwrite) the array it returned.
    """
    return np.array(obs, dtype=np.float32).reshape(-1)
