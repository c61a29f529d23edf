"""The dm_control adapter: ``dmc:DOMAIN-TASK`` behind the Gymnasium API the actor steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dm_env
import gymnasium
import numpy as np
import pytest

from actorq import dmc
from actorq.config import ConfigError
from actorq.envs import env_info, make_env

ROOT = Path(__file__).resolve().parents[1]

# Tasks of the published ActorQ D4PG results.
PAPER_TASKS = [
    "dmc:cartpole-balance",
    "dmc:cheetah-run",
    "dmc:walker-stand",
    "dmc:hopper-stand",
    "dmc:reacher-hard",
    "dmc:finger-spin",
    "dmc:humanoid-stand",
    "dmc:humanoid-walk",
]


def raw_suite_env(domain: str, task: str, seed: int):  # type: ignore[no-untyped-def]
    from dm_control import suite

    return suite.load(domain, task, task_kwargs={"random": seed})


def test_observation_is_the_sorted_keys_flattened_to_float32() -> None:
    env = dmc.make("dmc:walker-walk")
    obs, _ = env.reset(seed=3)
    raw = raw_suite_env("walker", "walk", seed=3).reset().observation
    assert env.observation_keys == ["height", "orientations", "velocity"]
    expected = np.concatenate([np.ravel(raw[k]) for k in sorted(raw)]).astype(np.float32)
    assert obs.dtype == np.float32
    assert obs.shape == (24,) == env.observation_space.shape
    np.testing.assert_array_equal(obs, expected)


def test_action_space_has_the_bounds_of_the_action_spec() -> None:
    env = dmc.make("dmc:walker-walk")
    spec = raw_suite_env("walker", "walk", seed=0).action_spec()
    assert isinstance(env.action_space, gymnasium.spaces.Box)
    assert env.action_space.shape == spec.shape == (6,)
    assert env.action_space.dtype == np.float32
    np.testing.assert_array_equal(env.action_space.low, spec.minimum)
    np.testing.assert_array_equal(env.action_space.high, spec.maximum)


def test_same_seed_gives_the_same_episode_and_another_seed_another() -> None:
    def rollout(seed: int) -> tuple[np.ndarray, float]:
        env = dmc.make("dmc:cartpole-balance")
        obs, _ = env.reset(seed=seed)
        total = 0.0
        for _ in range(20):
            obs, reward, *_ = env.step(np.array([0.3], np.float32))
            total += reward
        return obs, total

    first, again, other = rollout(7), rollout(7), rollout(8)
    np.testing.assert_array_equal(first[0], again[0])
    assert first[1] == again[1]
    assert not np.array_equal(first[0], other[0])


def test_reset_with_a_seed_reseeds_an_env_that_already_ran() -> None:
    env = dmc.make("dmc:cartpole-balance", seed=1)
    first, _ = env.reset(seed=5)
    env.step(np.zeros(1, np.float32))
    env.reset()
    again, _ = env.reset(seed=5)
    np.testing.assert_array_equal(first, again)


def test_time_limit_ends_the_episode_as_truncated_not_terminated() -> None:
    env = dmc.make("dmc:cartpole-balance")
    env.reset(seed=0)
    assert env.max_episode_steps == 1000
    steps, terminated, truncated, info = 0, False, False, {}
    while not (terminated or truncated):
        _, _, terminated, truncated, info = env.step(np.zeros(1, np.float32))
        steps += 1
    assert (steps, terminated, truncated, info["discount"]) == (1000, False, True, 1.0)


def test_last_step_with_zero_discount_is_terminated() -> None:
    env = dmc.make("dmc:cartpole-balance")
    env.reset(seed=0)
    # The suite's tasks end by time limit only: stand in a terminal step.
    raw = env._env.reset().observation
    env._env.step = lambda action: dm_env.termination(reward=0.5, observation=raw)
    _, reward, terminated, truncated, info = env.step(np.zeros(1, np.float32))
    assert (reward, terminated, truncated, info["discount"]) == (0.5, True, False, 0.0)


def test_rewards_are_within_the_suites_unit_interval() -> None:
    env = dmc.make("dmc:cartpole-balance")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    rewards = [env.step(rng.uniform(-1, 1, 1).astype(np.float32))[1] for _ in range(200)]
    assert min(rewards) >= 0.0 and max(rewards) <= dmc.MAX_STEP_REWARD
    assert dmc.max_episode_return("dmc:cartpole-balance") == 1000.0


def test_action_of_the_wrong_shape_is_refused_naming_both_shapes() -> None:
    env = dmc.make("dmc:walker-walk")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action has shape \[2\], expected \[6\]"):
        env.step(np.zeros(2, np.float32))


@pytest.mark.parametrize(
    ("env_id", "message"),
    [
        ("dmc:cartpol-balance", r"no domain 'cartpol'; domains: acrobot, ball_in_cup"),
        ("dmc:cartpole-balanc", r"domain 'cartpole' has no task 'balanc'; its tasks: balance,"),
        ("dmc:cartpole", r"write dmc:DOMAIN-TASK"),
        ("dmc:-walk", r"write dmc:DOMAIN-TASK"),
    ],
)
def test_unknown_dmc_id_is_a_config_error_naming_the_choices(env_id: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_env(env_id)


def test_every_suite_task_has_a_dmc_id() -> None:
    ids = dmc.all_ids()
    assert len(ids) >= 50
    assert set(PAPER_TASKS) <= set(ids)


@pytest.mark.parametrize("env_id", PAPER_TASKS)
def test_paper_tasks_load_and_step_as_continuous_envs(env_id: str) -> None:
    env, info = make_env(env_id, seed=0)
    try:
        assert info.continuous and info.num_actions == 0
        assert info.obs_dim > 0 and info.action_dim > 0
        assert info.max_episode_steps == 1000
        obs, _ = env.reset(seed=0)
        obs, reward, *_ = env.step(np.zeros(info.action_dim, np.float32))
        assert obs.shape == (info.obs_dim,) and np.isfinite(obs).all()
        assert 0.0 <= reward <= 1.0
    finally:
        env.close()


def test_gymnasium_box_action_env_takes_the_same_continuous_path() -> None:
    info = env_info("Pendulum-v1")
    assert info.continuous and (info.obs_dim, info.action_dim) == (3, 1)
    np.testing.assert_array_equal(info.action_low, [-2.0])
    np.testing.assert_array_equal(info.action_high, [2.0])
    assert info.describe_actions() == "1-dim actions in [-2, 2]"


def test_discrete_env_keeps_its_discrete_info() -> None:
    info = env_info("CartPole-v1")
    assert not info.continuous
    assert (info.obs_dim, info.num_actions, info.action_dim) == (4, 2, 0)


def test_importing_and_stepping_needs_no_display_or_renderer() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MUJOCO_GL")}
    code = (
        "import numpy as np; from actorq import dmc; "
        "e = dmc.make('dmc:cartpole-balance'); e.reset(seed=0); "
        "e.step(np.zeros(1, np.float32)); import os; print(os.environ['MUJOCO_GL'])"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "disable"
    assert "GLFW" not in res.stderr and "DISPLAY" not in res.stderr
