"""`actorq train --algo d4pg` on dm_control end to end: real processes, real learning.

The full target of the issue (`--target-return 900` within 150k env steps) is
a documented command (README); the learning test here is its CI-sized version.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_train import SUMMARY_KEYS, _pid_alive, train

from actorq import dmc


def test_short_d4pg_run_serves_both_precisions_and_leaves_no_process(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = train(
        out,
        *("--env", "dmc:cartpole-balance", "--algo", "d4pg", "--actors", "2"),
        *("--max-env-steps", "3000", "--eval-episodes", "1", "--no-carbon"),
        *("--learner-device", "auto"),
    )
    assert res.returncode == 0, res.stderr
    assert "core budget:" in res.stderr and "(device auto)" in res.stderr
    # auto takes CUDA only where torch sees a GPU (the GPU script's case), else the CPU.
    expected = "cuda" if torch.cuda.is_available() else "on cpu ("
    assert expected in (out / "logs" / "learner.log").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary.keys() >= SUMMARY_KEYS
    assert (summary["algo"], summary["stop_reason"]) == ("d4pg", "max_env_steps")
    assert set(summary["eval"]) == {"fp32", "int8"}
    assert all(0 <= r <= 1000 for r in summary["eval"].values())
    # Continuous policies: max |action error| and the rows within 5% of the range.
    assert summary["quantization"]["method"] == "dynamic"
    assert summary["quantization"]["max_abs_err"] < 0.2
    assert summary["quantization"]["action_agreement"] >= 0.9
    assert summary["breakdown_us_per_step"]["inference"] > 0
    assert not any(_pid_alive(pid) for pid in summary["pids"].values())
    config = (out / "config.yaml").read_text()
    assert "preset: acme" in config and "noise_sigma" in config


def test_unknown_dm_control_task_is_refused_before_anything_starts(tmp_path: Path) -> None:
    res = train(tmp_path / "run", "--env", "dmc:cartpole-balanc", "--algo", "d4pg")
    assert res.returncode == 2
    assert "domain 'cartpole' has no task 'balanc'; its tasks: balance," in res.stderr
    assert not (tmp_path / "run" / "logs").exists()


@pytest.mark.slow
def test_int8_d4pg_learns_to_balance_the_cartpole(tmp_path: Path) -> None:
    """CI-sized learning check: beyond what doing nothing (about 744) or acting at
    random (about 345) scores, within 100k env steps (the full target is 900 in 150k).

    Seed 0 took 24k-55k env steps to 900 in the benches and one CI-like run had not
    passed 760 at 60k (the asynchronous system does not repeat a seed), hence 100k.
    """
    out = tmp_path / "run"
    res = train(
        out,
        *("--env", "dmc:cartpole-balance", "--algo", "d4pg", "--precision", "int8"),
        *("--actors", "2", "--target-return", "850", "--max-env-steps", "100000", "--seed", "0"),
        "--no-carbon",
        timeout=900,
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reached_target"], summary["eval_detail"]["history"][-5:]
    target_eval = summary["eval_detail"]["target_eval"]
    assert target_eval["precision"] == "int8" and target_eval["episodes"] == 10
    assert target_eval["mean_return"] >= 850
    assert summary["env_steps_to_target"] <= 100_000
    assert dmc.max_episode_return("dmc:cartpole-balance") == 1000
