"""`actorq train`'s settings: TrainArgs from defaults, the embedded and --config `train:`
sections and flags; every service's config built and checked before any process starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from actorq.config import ConfigError
from commands.train.args import TrainArgs, load_train_args
from commands.train.configs import RefusedSettings, resolve_run
from commands.train.run import parse_args

ROOT = Path(__file__).resolve().parents[1]


def overlay(path: Path, data: dict[str, object]) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def train(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "commands.cli", "train", "--quiet", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_an_unknown_key_in_the_config_train_section_is_refused_naming_file_and_key(
    tmp_path: Path,
) -> None:
    path = overlay(tmp_path / "run.yaml", {"train": {"env": "CartPole-v1", "eval_episode": 3}})
    with pytest.raises(
        ConfigError, match=rf"{path}: unknown setting 'eval_episode' in section 'train'"
    ):
        load_train_args({"config": path})


def test_flags_beat_the_config_train_section_which_beats_the_algorithms_defaults(
    tmp_path: Path,
) -> None:
    path = overlay(tmp_path / "run.yaml", {"train": {"env": "Pendulum-v1", "eval_episodes": 7}})
    from_file = parse_args(["--algo", "d4pg", "--config", path])
    assert (from_file.env, from_file.eval_episodes) == ("Pendulum-v1", 7)
    # d4pg.yaml's train: section, not the generic default, where nobody else says.
    assert from_file.eval_every_s == 10.0
    flagged = parse_args(["--algo", "d4pg", "--config", path, "--eval-episodes", "5"])
    assert flagged.eval_episodes == 5


def test_the_generic_defaults_hold_where_no_algorithm_changes_them() -> None:
    args = parse_args(["--env", "CartPole-v1", "--no-preset"])
    assert (args.eval_episodes, args.eval_every_s) == (TrainArgs.eval_episodes, 5.0)
    assert args.carbon_tracking and not args.quiet


def test_switch_flags_set_their_settings() -> None:
    args = parse_args(["--env", "CartPole-v1", "--no-carbon", "--quiet"])
    assert (args.carbon_tracking, args.quiet) == (False, True)


def test_a_bad_value_is_refused_naming_the_flag() -> None:
    with pytest.raises(ConfigError, match="--eval-episodes 0"):
        parse_args(["--env", "CartPole-v1", "--eval-episodes", "0"])


def test_no_budget_is_none_from_a_flag_or_a_null_in_the_config(tmp_path: Path) -> None:
    """0 is refused (preflight); "none" or a null says no budget, not the default."""
    assert parse_args(["--env", "CartPole-v1"]).max_seconds is None
    assert parse_args(["--env", "CartPole-v1", "--max-env-steps", "none"]).max_env_steps is None
    path = overlay(tmp_path / "run.yaml", {"train": {"env": "CartPole-v1", "max_env_steps": None}})
    assert parse_args(["--config", path]).max_env_steps is None


def test_an_unknown_key_in_a_service_section_is_refused_naming_file_and_key(
    tmp_path: Path,
) -> None:
    path = overlay(tmp_path / "run.yaml", {"replay": {"capacty": 10}})
    args = TrainArgs(env="CartPole-v1", config=path)
    with pytest.raises(
        RefusedSettings, match=rf"{path}: unknown setting 'capacty' in section 'replay'"
    ):
        resolve_run(args, tmp_path / "run")


def test_an_unknown_section_is_refused_naming_it(tmp_path: Path) -> None:
    path = overlay(tmp_path / "run.yaml", {"learnr": {"publish_every_steps": 5}})
    with pytest.raises(ConfigError, match="unknown section 'learnr'"):
        resolve_run(TrainArgs(env="CartPole-v1", config=path), tmp_path / "run")


def test_every_service_config_is_built_with_the_launchers_settings(tmp_path: Path) -> None:
    run = resolve_run(TrainArgs(env="CartPole-v1", actors=3, max_env_steps=1000), tmp_path)
    assert run.learner.replay_address == f"127.0.0.1:{run.replay.port}"
    assert run.learner.checkpoint_dir == str(tmp_path / "checkpoints")
    assert run.replay.journal == str(tmp_path / "replay" / "journal")  # a memory store
    assert [a.actor_index for a in run.actors] == [0, 1, 2]
    assert len({a.port for a in run.actors} | set(run.ports.values())) == 6
    assert all(a.max_env_steps == 334 and a.num_actors == 3 for a in run.actors)
    assert "port" not in run.file()["actor"] and run.file()["actor"]["n_step"] == 3


def test_a_setting_a_service_refuses_stops_the_run_before_any_process_starts(
    tmp_path: Path,
) -> None:
    path = overlay(tmp_path / "run.yaml", {"replay": {"min_size_to_sample": 10, "capacity": 5}})
    out = tmp_path / "run"
    res = train("--env", "CartPole-v1", "--config", path, "--out", str(out))
    assert res.returncode == 2
    assert "replay refuses its settings" in res.stderr and "min_size_to_sample 10" in res.stderr
    assert not (out / "logs").exists()
