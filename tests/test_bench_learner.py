"""`actorq bench learner`: the real learner service against a bare update loop (the runs are
manual benchmarks; this checks the command works end to end and reports what it measured)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from commands.bench.learner import LearnerBench
from services.learner.algorithms import EnvSpaces, random_transitions

ROOT = Path(__file__).resolve().parents[1]


def test_random_transitions_fit_discrete_and_continuous_spaces() -> None:
    rng = np.random.default_rng(0)
    discrete = random_transitions(EnvSpaces(4, num_actions=3), 50, rng)
    assert discrete.action.dtype == np.int64 and set(discrete.action) <= {0, 1, 2}
    low, high = np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32)
    continuous = random_transitions(EnvSpaces(5, action_bounds=(low, high)), 50, rng)
    assert continuous.action.shape == (50, 2)
    assert (continuous.action >= low).all() and (continuous.action <= high).all()


def test_the_ratio_is_the_median_service_rate_over_the_median_bare_rate() -> None:
    bench = LearnerBench("dqn", "acme", "CartPole-v1", "cpu", 1, 64, "net", 1.0)
    bench.service, bench.bare = [9.0, 8.0, 10.0], [10.0, 20.0, 10.0]
    assert bench.ratio == 0.9
    assert "90.0% of the bare loop" in bench.line()
    bench.load = [3.5, 1.25]
    assert bench.line().endswith("of the bare loop; load 3.50 -> 1.25")


def test_the_command_measures_both_sides_and_prints_their_ratio(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable, "-m", "commands.cli", "bench", "learner", "--algo", "dqn",
        "--seconds", "1", "--repeats", "1", "--out", str(out),
    ]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert re.search(r"service [\d.]+ updates/s, bare loop [\d.]+ updates/s: [\d.]+%", res.stdout)
    result = json.loads(out.read_text())
    assert result["service"][0] > 0 and result["bare"][0] > 0
    assert result["ratio"] == result["service"][0] / result["bare"][0]
    assert len(result["load"]) == 2  # the machine's load when the windows began and ended
