"""`actorq bench --suite`: the shipped suite, resuming, and the suite report with intervals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from actorq.config import ConfigError
from commands.bench.scenario import RunSpec, Scenario
from commands.bench.suite import check_unchanged, finished, load_suite, set_aside
from commands.report.suite import build_suite
from commands.train.regime import Regime
from commands.train.summary import EvalDetail, EvalRecord, RunSummary, append_eval

ROOT = Path(__file__).resolve().parents[1]


def test_the_paper_suite_holds_two_dqn_gym_and_two_d4pg_dm_control_tasks() -> None:
    suite = load_suite("paper")
    envs = {s.train["env"]: s.train.get("algo", "dqn") for s in suite.scenarios}
    assert envs.get("CartPole-v1") == "dqn" and envs.get("MountainCar-v0") == "dqn"
    dmc = [e for e, algo in envs.items() if e.startswith("dmc:") and algo == "d4pg"]
    assert len(dmc) >= 2
    assert suite.seeds >= 3
    assert all(set(s.precisions) == {"fp32", "int8"} for s in suite.scenarios)


def _fake_run(run_dir: Path, precision: str, seed: int, time_s: float | None) -> None:
    run_dir.mkdir(parents=True)
    reached = time_s is not None
    # A full evaluation of a same-size fp32 policy takes longer (here 8 s against 1 s).
    length = 8.0 if precision == "fp32" else 1.0
    hit = EvalRecord(time_s, 1, precision, 100.0, 10, False, 100, length) if time_s else None
    for t in (10.0, 20.0, time_s or 30.0):
        append_eval(
            run_dir,
            EvalRecord(t, int(t), precision, 100.0 + t, 10, False, int(t * 100), 1.0),
        )
    RunSummary(
        env="CartPole-v1",
        algo="dqn",
        precision=precision,
        seed=seed,
        target_return=100.0,
        reached_target=reached,
        time_to_target_s=time_s,
        env_steps_to_target=int(time_s * 100) if time_s else None,
        stop_reason="target_reached" if reached else "max_seconds",
        wall_s=time_s or 300.0,
        eval={"fp32": 150.0, "int8": 149.0 + seed},
        eval_detail=EvalDetail(target_eval=hit),
        energy_kwh=1e-3 * (time_s or 300.0) / (2.0 if precision == "fp32" else 1.0),
        emissions_kg=4e-4 * (time_s or 300.0),
        regime=Regime(bound="cpu", sentence="CPU-bound: ...", actor_wait_share=0.1),
    ).write(run_dir)


def _fake_suite(out: Path) -> None:
    out.mkdir(parents=True)
    (out / "suite.json").write_text(
        json.dumps({"suite": "t", "seeds": [0, 1, 2], "scenarios": ["fast", "tie"]})
    )
    for seed in range(3):
        _fake_run(out / "fast/runs" / f"fp32-s{seed}", "fp32", seed, 100.0 + 10 * seed)
        _fake_run(out / "fast/runs" / f"int8-s{seed}", "int8", seed, 40.0 + 5 * seed)
        _fake_run(out / "tie/runs" / f"fp32-s{seed}", "fp32", seed, 50.0 + 20 * seed)
        _fake_run(out / "tie/runs" / f"int8-s{seed}", "int8", seed, None if seed == 2 else 60.0)


def test_the_suite_report_gives_ratios_with_intervals_and_plots(tmp_path: Path) -> None:
    _fake_suite(tmp_path / "suite")
    result = build_suite(tmp_path / "suite", tmp_path / "docs", "paper-suite")
    fast, tie = result["scenarios"]
    assert fast["time_ratio"]["low"] > 1.0  # every int8 seed faster than every fp32 seed
    assert fast["precisions"]["int8"]["reached"] == 3
    # Counted to the start of the evaluation that hit it: median 110 - 8 against 45 - 1.
    assert fast["time_ratio_eval_start"]["point"] == pytest.approx(102 / 44)
    assert tie["time_ratio_eval_start"]["low"] == 0.0  # the miss still counts as never
    # A missed int8 target counts as never: the interval reaches 0.
    assert tie["time_ratio"]["low"] == 0.0
    assert tie["precisions"]["int8"]["reached"] == 2
    assert fast["final_return_equivalence"]["within_point"]
    # Each run's final policy as int8 (149 + seed) against its fp32 twin (150).
    assert fast["precisions"]["int8"]["twin_gap"] == pytest.approx(0.0)
    assert fast["precisions"]["int8"]["twin_gap_range"] == pytest.approx([-1 / 150, 1 / 150])
    md = (tmp_path / "docs" / "paper-suite.md").read_text()
    assert "| fast |" in md and "95% CI" in md and "CPU-bound" in md
    assert (
        "| final policy's int8 twin vs its fp32 twin, median [range] | +0.0% [-0.7%, +0.7%] |" in md
    )
    for name in ("paper-suite-fast.png", "paper-suite-tie.png", "paper-suite-ratios.png"):
        assert (tmp_path / "docs" / name).stat().st_size > 1000


def test_actorq_report_rebuilds_a_suite_report(tmp_path: Path) -> None:
    _fake_suite(tmp_path / "suite")
    cmd = [sys.executable, "-m", "commands.cli", "report", str(tmp_path / "suite"),
           "--out", str(tmp_path / "r"), "--name", "s"]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "r" / "s.md").is_file() and (tmp_path / "r" / "s.json").is_file()


def test_a_run_is_finished_only_when_its_summary_says_how_it_ended(tmp_path: Path) -> None:
    run = tmp_path / "fp32-s0"
    assert finished(run) is None
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"stop_reason": "interrupted"}))
    assert finished(run) is None
    (run / "summary.json").write_text(json.dumps({"stop_reason": "max_seconds"}))
    assert finished(run) == "max_seconds"


def test_an_unfinished_run_is_moved_aside_never_deleted(tmp_path: Path) -> None:
    run = tmp_path / "int8-s1"
    run.mkdir()
    (run / "metrics.jsonl").write_text("{}\n")
    first = set_aside(run)
    run.mkdir()
    second = set_aside(run)
    assert first == tmp_path / "int8-s1.incomplete-1"
    assert second == tmp_path / "int8-s1.incomplete-2"
    assert (first / "metrics.jsonl").read_text() == "{}\n"
    assert set_aside(run) is None


def test_a_scenario_changed_under_its_finished_runs_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    runs = [
        RunSpec("fp32", 0, folder / "runs/fp32-s0"),
        RunSpec("int8", 0, folder / "runs/int8-s0"),
    ]
    scenario = Scenario("tiny", "t", {"env": "CartPole-v1"}, {"replay": {"samples_per_insert": 1}})
    check_unchanged(scenario, runs, folder)  # fresh: records the definition
    runs[0].out.mkdir(parents=True)
    (runs[0].out / "summary.json").write_text(json.dumps({"stop_reason": "target_reached"}))
    check_unchanged(scenario, runs, folder)  # unchanged: resumes
    scenario.config["replay"]["samples_per_insert"] = 2
    with pytest.raises(
        ConfigError, match="scenario tiny changed \\(config\\).*move that folder aside"
    ):
        check_unchanged(scenario, runs, folder)
    recorded = json.loads((folder / "scenario.json").read_text())
    assert recorded["config"]["replay"]["samples_per_insert"] == 1  # the record is kept


def test_a_suite_runs_interleaved_and_an_interrupted_suite_continues(tmp_path: Path) -> None:
    scenario = {
        "description": "tiny",
        "train": {"env": "CartPole-v1", "algo": "dqn", "actors": 1, "max_env_steps": 1500,
                  "eval_episodes": 1},
        "config": {"learner": {"dqn": {"hidden_sizes": [16]}}},
    }  # fmt: skip
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(scenario))
    suite = {"description": "t", "seeds": 1, "scenarios": [str(tmp_path / "tiny.yaml")]}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(suite))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "commands.cli", "bench", "--suite", str(tmp_path / "t.yaml"),
           "--out", str(out), "--carbon-country", "USA"]  # fmt: skip
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    state = json.loads((out / "suite.json").read_text())
    assert [(r["precision"], r["status"]) for r in state["runs"]] == [
        ("fp32", "done"),
        ("int8", "done"),
    ]
    assert (out / "report.md").is_file() and (out / "tiny" / "report.md").is_file()
    # Interrupt the int8 run after the fact: its summary is gone, its files stay.
    (out / "tiny/runs/int8-s0/summary.json").unlink()
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    state = json.loads((out / "suite.json").read_text())
    assert [(r["precision"], r["status"]) for r in state["runs"]] == [
        ("fp32", "kept"),
        ("int8", "done"),
    ]
    assert (out / "tiny/runs/int8-s0.incomplete-1/metrics.jsonl").is_file()
    assert (out / "tiny/runs/int8-s0/summary.json").is_file()
    # The scenario's file changes under its finished runs: refused in one sentence, nothing run.
    scenario["train"]["max_env_steps"] = 1600
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(scenario))
    third = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert third.returncode == 2
    assert (
        "scenario tiny changed (train)" in third.stderr and "move that folder aside" in third.stderr
    )
    assert json.loads((out / "suite.json").read_text()) == state
