"""Envs users bring as Gymnasium's ``module:EnvId``: the module is imported, then the id made."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from actorq.config import ConfigError
from actorq.envs import check_env_id, make_env

MODULE = textwrap.dedent(
    """
    import gymnasium
    from gymnasium.envs.classic_control import CartPoleEnv

    class ShortCartPole(CartPoleEnv):
        pass

    if "ShortCartPole-v0" not in gymnasium.registry:
        gymnasium.register("ShortCartPole-v0", entry_point=ShortCartPole, max_episode_steps=50)
    """
)


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"actorq_user_envs_{time.monotonic_ns()}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_a_module_env_id_imports_the_module_and_makes_its_env(user_module: str) -> None:
    env_id = f"{user_module}:ShortCartPole-v0"
    check_env_id(env_id)
    env, info = make_env(env_id)
    try:
        assert (info.obs_dim, info.num_actions, info.max_episode_steps) == (4, 2, 50)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (4,)
    finally:
        env.close()


def test_an_unknown_module_is_one_sentence_naming_it() -> None:
    with pytest.raises(ConfigError, match="module 'no_such_pkg.envs' cannot be imported"):
        check_env_id("no_such_pkg.envs:Thing-v0")


def test_an_id_the_module_does_not_register_is_refused(user_module: str) -> None:
    with pytest.raises(ConfigError, match="not a registered Gymnasium env"):
        check_env_id(f"{user_module}:Missing-v0")


def test_actorq_train_refuses_an_unknown_env_module_before_starting(tmp_path: Path) -> None:
    train = [sys.executable, "-m", "commands.cli", "train", "--env", "no_such_pkg:X-v0"]
    done = subprocess.run(
        [*train, "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "module 'no_such_pkg' cannot be imported" in done.stderr
    assert "Traceback" not in done.stderr
