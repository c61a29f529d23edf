"""`actorq bench --scenario`: shipped scenarios, interleaved runs, and the report at the end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from actorq import config
from actorq.config import ConfigError
from actorq.envs import check_env_id
from commands.bench import scenario
from commands.train.args import TrainArgs
from commands.train.configs import resolve
from services.actor.config import ActorConfig
from services.learner.config import LearnerConfig
from services.quantizer.config import QuantizerConfig
from services.replay.config import ReplayConfig

ROOT = Path(__file__).resolve().parents[1]


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "commands.cli", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def write_scenario(path: Path, **overrides: object) -> Path:
    data: dict[str, object] = {
        "description": "tiny test scenario",
        "train": {
            "env": "CartPole-v1",
            "actors": 1,
            "max_env_steps": 2000,
            "eval_episodes": 2,
            "target_return": 30,
        },
        "config": {"train": {"eval_every_s": 1.0}},
    }
    data.update(overrides)
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_scenarios_include_the_quick_and_the_paper_size_dqn() -> None:
    names = scenario.scenario_names()
    assert {"cartpole-dqn", "cartpole-dqn-paper"} <= set(names)
    quick = scenario.load_scenario("cartpole-dqn")
    assert quick.train["env"] == "CartPole-v1"
    assert quick.train["target_return"] == 475
    assert quick.config == {}
    assert quick.precisions == ["fp32", "int8"]
    paper = scenario.load_scenario("cartpole-dqn-paper")
    assert paper.config["learner"]["dqn"]["hidden_sizes"] == [2048, 2048, 2048]
    assert paper.train["max_seconds"] > 0


def test_shipped_scenarios_include_the_d4pg_dm_control_pair() -> None:
    balance = scenario.load_scenario("dmc-cartpole-balance-d4pg")
    assert (balance.train["algo"], balance.train["env"]) == ("d4pg", "dmc:cartpole-balance")
    assert (balance.train["target_return"], balance.train["max_env_steps"]) == (900, 150_000)
    walker = scenario.load_scenario("dmc-walker-walk-d4pg-paper")
    assert walker.train["env"] == "dmc:walker-walk"
    assert walker.config["learner"]["d4pg"]["preset"] == "paper"


@pytest.mark.parametrize("name", scenario.scenario_names())
def test_every_shipped_scenario_resolves_to_configs_every_service_accepts(
    name: str, tmp_path: Path
) -> None:
    """A typo in a scenario's overlay fails here, not minutes into a bench."""
    sc = scenario.load_scenario(name)
    check_env_id(sc.train["env"])
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(sc.config))
    flags = {k: v for k, v in sc.train.items() if k in ("env", "algo", "actors", "max_env_steps")}
    args = TrainArgs(**flags, config=str(overlay))
    cfg, _ports = resolve(args, tmp_path)
    resolved = tmp_path / "config.yaml"
    resolved.write_text(yaml.safe_dump(cfg))
    for section, cls in (
        ("replay", ReplayConfig),
        ("quantizer", QuantizerConfig),
        ("learner", LearnerConfig),
        ("actor", ActorConfig),
    ):
        config.load(cls, section=section, file=resolved, env={})


def test_runs_are_interleaved_so_every_seed_runs_all_precisions_before_the_next(
    tmp_path: Path,
) -> None:
    runs = scenario.plan(["fp32", "int8"], 2, tmp_path)
    assert [(r.precision, r.seed) for r in runs] == [
        ("fp32", 0),
        ("int8", 0),
        ("fp32", 1),
        ("int8", 1),
    ]
    assert runs[3].out == tmp_path / "runs" / "int8-s1"


def test_train_command_carries_the_scenarios_flags_and_the_runs_own(tmp_path: Path) -> None:
    sc = scenario.load_scenario("cartpole-dqn")
    run = scenario.RunSpec("fp32", 3, tmp_path / "r")
    cmd = scenario.train_command(sc, run, tmp_path / "c.yaml", "FRA", quiet=True)
    flags = cmd[cmd.index("train") + 1 :]
    pairs = dict(zip(flags[::2], flags[1::2], strict=False))
    assert pairs["--target-return"] == "475"
    assert pairs["--env"] == "CartPole-v1"
    assert pairs["--precision"] == "fp32" and pairs["--seed"] == "3"
    assert pairs["--out"] == str(tmp_path / "r")
    assert pairs["--carbon-country"] == "FRA"
    assert pairs["--config"] == str(tmp_path / "c.yaml")
    assert flags[-1] == "--quiet"
    # A null budget in a scenario is the flag's "none", not `actorq train`'s default.
    paper = scenario.train_command(
        scenario.load_scenario("paper-cartpole-dqn"), run, None, "FRA", False
    )
    assert paper[paper.index("--max-env-steps") + 1] == "none"


def test_scenario_with_an_unknown_key_is_refused_naming_it(tmp_path: Path) -> None:
    path = write_scenario(tmp_path / "bad.yaml", budget=3)
    with pytest.raises(ConfigError, match="unknown keys \\['budget'\\]"):
        scenario.load_scenario(str(path))


def test_scenario_train_key_that_is_not_a_train_flag_is_refused(tmp_path: Path) -> None:
    path = write_scenario(tmp_path / "bad.yaml", train={"env": "CartPole-v1", "seed": 4})
    with pytest.raises(ConfigError, match="seed"):
        scenario.load_scenario(str(path))


def test_unknown_scenario_name_lists_the_shipped_ones() -> None:
    res = bench("--scenario", "no-such-scenario")
    assert res.returncode == 2
    assert "no scenario 'no-such-scenario'" in res.stderr
    assert "cartpole-dqn" in res.stderr


def test_bench_runs_the_scenario_and_writes_the_report(tmp_path: Path) -> None:
    path = write_scenario(tmp_path / "tiny.yaml")
    out = tmp_path / "bench"
    res = bench(
        "--scenario",
        str(path),
        "--seeds",
        "1",
        "--precisions",
        "int8",
        "--out",
        str(out),
        "--quiet",
    )
    assert res.returncode == 0, res.stderr
    meta = json.loads((out / "bench.json").read_text())
    assert [(r["precision"], r["seed"], r["returncode"]) for r in meta["runs"]] == [("int8", 0, 0)]
    assert meta["scenario"]["name"] == "tiny"
    summary = json.loads((out / "runs" / "int8-s0" / "summary.json").read_text())
    assert summary["precision"] == "int8"
    assert (out / "report.md").exists() and (out / "speedup.png").exists()
    assert "time to target s" in res.stdout and "CO2e g" in res.stdout
    assert "[bench 1/1] tiny: int8 seed 0" in res.stderr
