"""DeepMind Control Suite tasks as Gymnasium environments: ``dmc:DOMAIN-TASK``.

``make("dmc:walker-walk", seed=0)`` loads ``dm_control.suite`` task ``walk`` of
domain ``walker`` behind the Gymnasium API the actor already steps:

- observation: the task's observation dict flattened into one float32 vector,
  keys in sorted order (the order ``dm-tree``/Acme flatten a dict in), each
  value raveled (a scalar such as walker's ``height`` is one entry);
- action: a float32 ``Box`` with the bounds of the task's ``BoundedArray``
  action spec;
- episode end from dm_env: a last step with discount 0 is ``terminated`` (a
  true terminal state); a last step with discount > 0 is the suite's time
  limit and comes back ``truncated`` (bootstrap from it). The step's discount
  is in ``info["discount"]``;
- seeding: ``reset(seed=s)`` reseeds the task's RandomState (initial states
  are drawn from it), so the same seed gives the same episode.

No rendering: MUJOCO_GL defaults to "disable" before dm_control is imported,
so importing needs no OpenGL, display or EGL device (set MUJOCO_GL yourself,
e.g. "egl", before the first import to render elsewhere).
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium
import numpy as np

from actorq.config import ConfigError

PREFIX = "dmc:"
# The suite's per-step rewards lie in [0, 1] (Tassa et al., 2018, section 2.2).
MAX_STEP_REWARD = 1.0


def is_dmc_id(env_id: str) -> bool:
    """True for ids routed to the DeepMind Control Suite (``dmc:DOMAIN-TASK``)."""
    return env_id.startswith(PREFIX)


def _suite() -> Any:
    # The actor never renders: without this, dm_control probes GLFW/EGL/OSMesa
    # at import and warns (or fails) on a machine without a display.
    os.environ.setdefault("MUJOCO_GL", "disable")
    from dm_control import suite

    return suite


def parse_id(env_id: str) -> tuple[str, str]:
    """(domain, task) of ``dmc:DOMAIN-TASK``; ConfigError naming the choices otherwise."""
    if not is_dmc_id(env_id):
        raise ConfigError(f"env {env_id!r} is not a dm_control id; write dmc:DOMAIN-TASK")
    domain, sep, task = env_id[len(PREFIX) :].partition("-")
    tasks_by_domain: dict[str, tuple[str, ...]] = _suite().TASKS_BY_DOMAIN
    if not sep or not domain or not task:
        raise ConfigError(
            f"env {env_id!r}: write dmc:DOMAIN-TASK, e.g. dmc:cartpole-balance or dmc:walker-walk"
        )
    if domain not in tasks_by_domain:
        raise ConfigError(
            f"env {env_id!r}: dm_control has no domain {domain!r}; domains: "
            f"{', '.join(sorted(tasks_by_domain))}"
        )
    if task not in tasks_by_domain[domain]:
        raise ConfigError(
            f"env {env_id!r}: domain {domain!r} has no task {task!r}; its tasks: "
            f"{', '.join(sorted(tasks_by_domain[domain]))}"
        )
    return domain, task


def all_ids() -> list[str]:
    """Every suite task as a ``dmc:DOMAIN-TASK`` id."""
    return [f"{PREFIX}{d}-{t}" for d, t in _suite().ALL_TASKS]


class DmControlEnv(gymnasium.Env[np.ndarray, np.ndarray]):
    """One dm_control suite task behind ``gymnasium.Env`` (see the module docstring)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, env_id: str, seed: int | None = None) -> None:
        domain, task = parse_id(env_id)
        self.env_id = env_id
        self._env = _suite().load(domain, task, task_kwargs={"random": seed})
        obs_spec = self._env.observation_spec()
        # Sorted: a fixed order that does not depend on how the task built its dict.
        self._keys = sorted(obs_spec)
        self._slices: list[slice] = []
        start = 0
        for key in self._keys:
            size = int(np.prod(obs_spec[key].shape, dtype=np.int64))
            self._slices.append(slice(start, start + size))
            start += size
        self.obs_dim = start
        act = self._env.action_spec()
        low = np.broadcast_to(np.asarray(act.minimum, np.float32), act.shape).copy()
        high = np.broadcast_to(np.asarray(act.maximum, np.float32), act.shape).copy()
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (self.obs_dim,), np.float32)
        self.action_space = gymnasium.spaces.Box(low, high, act.shape, np.float32)
        # dm_control keeps the step limit (time limit / control timestep) private.
        limit = float(getattr(self._env, "_step_limit", float("inf")))
        self.max_episode_steps: int | None = int(limit) if np.isfinite(limit) else None
        # Control steps per simulated second: a video at this rate plays in real time.
        self.metadata = {**self.metadata, "render_fps": 1.0 / self._env.control_timestep()}

    @property
    def observation_keys(self) -> list[str]:
        """The observation dict's keys in the order they are concatenated."""
        return list(self._keys)

    def _flatten(self, observation: Any) -> np.ndarray:
        out = np.empty(self.obs_dim, np.float32)
        for key, where in zip(self._keys, self._slices, strict=True):
            out[where] = np.asarray(observation[key], np.float32).reshape(-1)
        return out

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; ``seed`` reseeds the task's random initial states."""
        super().reset(seed=seed)
        if seed is not None:
            self._env.task.random.seed(seed)
        ts = self._env.reset()
        return self._flatten(ts.observation), {"discount": 1.0}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One control step; ValueError if the action does not have the spec's shape."""
        arr = np.asarray(action, np.float64)
        if arr.shape != self.action_space.shape:
            raise ValueError(
                f"{self.env_id}: action has shape {list(arr.shape)}, expected "
                f"{list(self.action_space.shape or ())}"
            )
        ts = self._env.step(arr)
        discount = 1.0 if ts.discount is None else float(ts.discount)
        last = ts.last()
        terminated = last and discount == 0.0
        truncated = last and not terminated
        reward = 0.0 if ts.reward is None else float(ts.reward)
        return self._flatten(ts.observation), reward, terminated, truncated, {"discount": discount}

    def render_frame(self, height: int = 240, width: int = 320) -> np.ndarray:
        """An RGB frame [height, width, 3] from the task's first camera (needs MUJOCO_GL
        set to a renderer, egl or osmesa, before dm_control's first import)."""
        frame: np.ndarray = self._env.physics.render(height=height, width=width, camera_id=0)
        return frame

    def close(self) -> None:
        """Release the physics."""
        self._env.close()


def make(env_id: str, seed: int | None = None) -> DmControlEnv:
    """The Gymnasium adapter for ``dmc:DOMAIN-TASK``; ConfigError for an unknown id."""
    return DmControlEnv(env_id, seed)


def max_episode_return(env_id: str) -> float | None:
    """Upper bound on one episode's return: step limit x the largest step reward."""
    env = make(env_id)
    try:
        steps = env.max_episode_steps
    finally:
        env.close()
    return None if steps is None else steps * MAX_STEP_REWARD
