"""Per-env presets: chosen by env id, laid between the embedded default and --config."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from actorq.network import ALGOS
from commands.bench import scenario
from commands.train.args import load_train_args
from commands.train.configs import check_sections, merged_config, resolve_run
from commands.train.presets import listing, match, preset_file, preset_for, presets, select

TABLE = {
    "CartPole-v1": {"about": "tuned", "learner": {"dqn": {"lr": 0.002}}},
    "dmc:*": {"learner": {"d4pg": {"batch_size": 256}}},
    "dmc:walker-*": {"learner": {"d4pg": {"batch_size": 128}}},
}


def test_an_env_with_a_preset_gets_its_sections_without_the_notes() -> None:
    assert select(TABLE, "CartPole-v1") == {"learner": {"dqn": {"lr": 0.002}}}


def test_an_env_without_a_preset_keeps_the_embedded_defaults() -> None:
    assert select(TABLE, "Pendulum-v1") == {}


def test_a_prefix_key_matches_every_env_it_starts_and_the_longest_wins() -> None:
    assert match(TABLE, "dmc:cheetah-run") == "dmc:*"
    assert match(TABLE, "dmc:walker-walk") == "dmc:walker-*"
    assert match(TABLE, "CartPole-v1") == "CartPole-v1"


def test_every_shipped_preset_names_only_settings_the_services_know() -> None:
    for algo in ALGOS:
        for env in presets(algo):
            check_sections(select(presets(algo), env), f"{preset_file(algo)} ({env})")


def test_every_shipped_preset_says_where_its_values_come_from() -> None:
    for algo in ALGOS:
        for env, preset in presets(algo).items():
            assert "tuned here" in str(preset.get("about", "")).lower(), (algo, env)


def test_the_cartpole_preset_is_chosen_by_env_id_and_no_preset_turns_it_off() -> None:
    tuned = load_train_args({"env": "CartPole-v1", "algo": "dqn"})
    merged = merged_config(tuned)
    lr = preset_for("dqn", "CartPole-v1")["learner"]["dqn"]["lr"]
    assert merged["learner"]["dqn"]["lr"] == lr
    plain = load_train_args({"env": "CartPole-v1", "algo": "dqn", "preset": False})
    assert merged_config(plain)["learner"]["dqn"]["lr"] == 0.001  # commands/configs/dqn.yaml


def test_config_overrides_the_preset_and_flags_override_both(tmp_path: Path) -> None:
    overlay = tmp_path / "mine.yaml"
    overlay.write_text("train: {eval_every_s: 7.0}\nlearner: {dqn: {lr: 0.0005}}\n")
    args = load_train_args({"env": "CartPole-v1", "config": str(overlay)})
    assert args.eval_every_s == 7.0
    assert merged_config(args)["learner"]["dqn"]["lr"] == 0.0005
    flagged = load_train_args({"env": "CartPole-v1", "config": str(overlay), "eval_every_s": 3})
    assert flagged.eval_every_s == 3.0


def test_dm_control_tasks_get_the_suite_preset() -> None:
    if importlib.util.find_spec("dm_control") is None:
        pytest.skip("dm_control not installed")
    args = load_train_args({"env": "dmc:cheetah-run", "algo": "d4pg"})
    assert merged_config(args)["actor"]["n_step"] == 5
    assert args.eval_episodes == 10


def test_the_listing_names_each_preset_and_its_settings() -> None:
    text = listing()
    assert "dqn CartPole-v1" in text
    assert "learner.dqn.lr" in text


def test_the_side_by_side_scenario_trains_what_make_run_trains() -> None:
    """`actorq bench --scenario cartpole-quick` is issue 16's measurement of `make run`."""
    recipe = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    words = recipe.split("$(BIN)/actorq train", 1)[1].split("--out", 1)[0].replace("\\", " ")
    flags = dict(zip(words.split()[::2], words.split()[1::2], strict=True))
    train = scenario.load_scenario("cartpole-quick").train
    assert {k: flags[f"--{k.replace('_', '-')}"] for k in ("env", "algo", "actors")} == {
        k: str(train[k]) for k in ("env", "algo", "actors")
    }
    assert flags["--precision"] == "int8" and scenario.load_scenario(
        "cartpole-quick"
    ).precisions == ["int8"]
    for key in ("target_return", "sustain", "max_env_steps"):
        assert float(flags[f"--{key.replace('_', '-')}"]) == float(train[key]), key


def test_a_scenario_that_turns_the_preset_off_passes_the_switch_alone(tmp_path: Path) -> None:
    sc = scenario.load_scenario("cartpole-quick")
    sc.train["preset"] = False
    cmd = scenario.train_command(sc, scenario.RunSpec("int8", 3, tmp_path), None, "USA", True)
    assert "--no-preset" in cmd and "False" not in cmd
    assert cmd[cmd.index("--sustain") + 1] == "3"


def test_every_shipped_preset_resolves_to_configs_every_service_accepts(tmp_path: Path) -> None:
    """Values too, not only keys: each service's own checks (the replay's rate limiter's
    among them) pass for every preset whose env is installed here."""
    checked = 0
    for algo in ALGOS:
        for env, preset in presets(algo).items():
            env_id = "dmc:cartpole-swingup" if env == "dmc:*" else env
            needs = preset.get("requires") or ("dm_control" if env.startswith("dmc:") else "")
            if needs and importlib.util.find_spec(str(needs)) is None:
                continue
            args = load_train_args({"env": env_id, "algo": algo})
            resolve_run(args, tmp_path / f"{algo}-{checked}")
            checked += 1
    assert checked >= 3
