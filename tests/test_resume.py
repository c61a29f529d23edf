"""Where a run starts (``commands.train.resume``): the refusal of an --out that holds a run,
--overwrite, and what --resume DIR takes from DIR. No process is started here."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from actorq.config import ConfigError
from commands.train.resume import Start, check_budgets, progress_so_far, take

ROOT = Path(__file__).resolve().parents[1]


def stopped_run(tmp_path: Path, store: str = "memory") -> Path:
    """A run directory as an interrupted `actorq train --out DIR` leaves it."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "learner.pt").write_bytes(b"checkpoint")
    config = {
        "train": {"env": "CartPole-v1", "algo": "dqn", "out": "elsewhere/run", "config": None,
                  "replay_store": store, "max_env_steps": 5000, "eval_episodes": 3,
                  "max_seconds": 0},  # how runs said "none" before 0 was refused
        "learner": {"checkpoint_dir": "elsewhere/run/checkpoints", "batch_size": 64},
        "actor": {"epsilon_decay_steps": 1234},
        "replay": {"journal": "elsewhere/run/replay/journal", "capacity": 5000},
    }  # fmt: skip
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    rows = [{"t_s": 10.0, "env_steps": 1500}, {"t_s": 20.5, "env_steps": 3100}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"t_s": 2')
    (run / "evals.jsonl").write_text(json.dumps({"t_s": 22.0, "env_steps": 3000}) + "\n")
    (run / "replay").mkdir()
    (run / "replay" / "journal").write_bytes(b"AQJ1")
    return run


def test_an_out_holding_a_run_is_refused_naming_every_way_out(tmp_path: Path) -> None:
    run = stopped_run(tmp_path)
    with pytest.raises(ConfigError) as err:
        Start().check_out(run)
    message = str(err.value)
    assert f"--resume {run}" in message and "another or an empty --out" in message
    assert "--overwrite" in message and "\n" not in message


def test_a_new_or_empty_out_is_fine(tmp_path: Path) -> None:
    Start().check_out(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    Start().check_out(tmp_path / "empty")


def test_overwrite_removes_the_old_runs_results_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = stopped_run(tmp_path)
    (run / "notes.txt").write_text("mine")
    start = Start(overwrite=True)
    start.check_out(run)
    start.clear(run)
    assert not (run / "checkpoints").exists() and not (run / "metrics.jsonl").exists()
    assert not (run / "replay").exists()  # the memory replay's journal
    assert (run / "notes.txt").read_text() == "mine"
    assert "removed metrics.jsonl, evals.jsonl, checkpoints" in capsys.readouterr().err


def test_resume_takes_the_runs_settings_and_counters(tmp_path: Path) -> None:
    run = stopped_run(tmp_path)
    flags: dict[str, Any] = {"resume": str(run), "overwrite": False, "max_env_steps": 9000}
    start = take(flags)
    assert (start.resume, start.env_steps, start.elapsed_s) == (run, 3100, 22.0)
    assert flags["out"] == str(run) and "resume" not in flags
    settings = yaml.safe_load(Path(flags["config"]).read_text())
    # The checkpoint is the run's own, wherever the command runs from now.
    assert settings["learner"] == {"checkpoint_dir": str(run / "checkpoints"), "batch_size": 64}
    assert settings["actor"] == {"epsilon_decay_steps": 1234}
    # So is the memory replay's journal: the resumed replay reloads it.
    assert settings["replay"] == {"journal": str(run / "replay" / "journal"), "capacity": 5000}
    assert "out" not in settings["train"] and settings["train"]["eval_episodes"] == 3
    assert settings["train"]["max_seconds"] is None


def test_resume_lays_a_new_config_file_over_the_runs_settings(tmp_path: Path) -> None:
    run = stopped_run(tmp_path)
    overlay = tmp_path / "more.yaml"
    overlay.write_text(yaml.safe_dump({"learner": {"batch_size": 128}}))
    flags: dict[str, Any] = {"resume": str(run), "config": str(overlay)}
    take(flags)
    assert yaml.safe_load(Path(flags["config"]).read_text())["learner"]["batch_size"] == 128


@pytest.mark.parametrize(
    ("change", "flags", "message"),
    [
        ("no config", {}, "no config.yaml there"),
        ("no checkpoint", {}, "left no learner checkpoint"),
        ("", {"overwrite": True}, "contradict each other"),
        ("", {"out": "other"}, "leave out --out"),
        ("password", {}, "give --replay-store again"),
    ],
)
def test_resume_refuses_what_it_cannot_continue(
    tmp_path: Path, change: str, flags: dict[str, Any], message: str
) -> None:
    store = "redis://:***@127.0.0.1:6379/0" if change == "password" else "memory"
    run = stopped_run(tmp_path, store)
    if change == "no config":
        (run / "config.yaml").unlink()
    if change == "no checkpoint":
        (run / "checkpoints" / "learner.pt").unlink()
    with pytest.raises(ConfigError, match=message):
        take({"resume": str(run), **flags})
    assert (run / "checkpoints").exists()


def test_a_budget_the_run_already_used_up_is_refused(tmp_path: Path) -> None:
    start = Start(resume=tmp_path, env_steps=3100, elapsed_s=22.0)
    check_budgets(start, 5000, None)
    with pytest.raises(ConfigError, match="already took 3,100 env steps"):
        check_budgets(start, 3000, None)
    with pytest.raises(ConfigError, match="give a larger --max-seconds"):
        check_budgets(start, None, 20)


def test_progress_of_a_run_that_recorded_nothing_is_zero(tmp_path: Path) -> None:
    assert progress_so_far(tmp_path) == (0, 0.0)


def test_train_refuses_an_out_holding_a_run_at_once_and_keeps_it(tmp_path: Path) -> None:
    run = stopped_run(tmp_path)
    before = sorted(p.name for p in run.rglob("*"))
    cmd = [sys.executable, "-m", "commands.cli", "train", "--env", "CartPole-v1", "--out", str(run)]
    started = time.monotonic()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "already holds a run" in res.stderr
    assert took < 3.0 + 2.0  # the 3 s, plus a loaded CI machine's Python start-up
    assert sorted(p.name for p in run.rglob("*")) == before
    assert (run / "checkpoints" / "learner.pt").read_bytes() == b"checkpoint"
