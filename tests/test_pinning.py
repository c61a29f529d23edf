"""train.pin_learner: the learner on CPUs of its own, every other process on the rest
(ACTORQ_CPUS, set by the launcher and read by each service as its first act)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from commands import procs
from commands.machine import usable_cpus
from commands.train.configs import CpuSplit, cpu_split

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("cpus", "threads", "split"),
    [
        ([0, 1], 1, CpuSplit((0,), (1,))),
        ([0, 1], 4, CpuSplit((0,), (1,))),  # at least one CPU is left for the rest
        ([0, 1, 2, 3], 2, CpuSplit((0, 1), (2, 3))),
        ([7, 2, 5], 1, CpuSplit((2,), (5, 7))),
        ([0, 1], 0, CpuSplit((0,), (1,))),
    ],
)
def test_the_learner_gets_its_threads_worth_of_cpus_and_the_rest_the_others(
    cpus: list[int], threads: int, split: CpuSplit
) -> None:
    assert cpu_split(cpus, threads) == split


def test_one_cpu_is_not_split() -> None:
    assert cpu_split([3], 1) is None


def test_a_pinned_run_puts_the_learner_alone_on_its_cpu(tmp_path: Path) -> None:
    out = tmp_path / "run"
    overlay = tmp_path / "pin.yaml"
    overlay.write_text("train:\n  pin_learner: true\n")
    res = subprocess.run(
        [
            *(sys.executable, "-m", "commands.cli", "train", "--env", "CartPole-v1"),
            *("--actors", "2", "--max-env-steps", "3000", "--eval-episodes", "3"),
            *("--config", str(overlay), "--out", str(out), "--quiet"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    logs = {p.stem: p.read_text() for p in (out / "logs").glob("*.log")}
    assert set(logs) >= {"learner", "replay", "quantizer", "actor-0", "actor-1"}
    # The summary records the machine's CPUs, not the launcher's share after pinning.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["machine"]["usable_cpus"] == len(usable_cpus())
    split = cpu_split(usable_cpus(), 1)
    if split is None:  # a one-CPU machine: said so, nothing pinned
        assert "(train.pin_learner: one CPU, nothing to pin)" in res.stdout + res.stderr
        assert not any("pinned to CPU" in text for text in logs.values())
        return
    learner, rest = procs.cpu_list(split.learner), procs.cpu_list(split.rest)
    assert (
        f"the learner pinned to CPU {learner}, actors, replay, quantizer and the evaluator on "
        f"CPU {rest} (train.pin_learner)" in res.stdout + res.stderr
    )
    assert f"actorq serve learner: pinned to CPU {learner} (ACTORQ_CPUS)" in logs["learner"]
    for label in ("replay", "quantizer", "actor-0", "actor-1"):
        assert f"pinned to CPU {rest} (ACTORQ_CPUS)" in logs[label], label


@pytest.mark.parametrize("value", ["x", "0,,1", "99999"])
def test_a_cpu_list_naming_no_usable_cpu_is_refused_in_one_sentence(value: str) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "commands.cli", "serve", "replay", "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, procs.CPUS_ENV: value},
    )
    assert res.returncode == 2
    assert f"actorq serve replay: error: ACTORQ_CPUS={value!r}: not a comma-separated list " in (
        res.stderr
    )
    assert "unset it to run on every CPU" in res.stderr
