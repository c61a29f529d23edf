"""Training never needs codecarbon: without it a run's carbon is 'unavailable', with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Installed in every process of the run (PYTHONPATH): codecarbon cannot be imported or found.
BLOCKER = """
import importlib.abc, sys

class _NoCodecarbon(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "codecarbon" or name.startswith("codecarbon."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, _NoCodecarbon())
"""


def test_a_run_without_codecarbon_trains_and_says_carbon_is_unavailable(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "commands.cli", "train", "--env", "CartPole-v1", "--actors", "1",
        "--max-env-steps", "1500", "--eval-episodes", "1", "--quiet", "--out", str(out),
    ]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "codecarbon is not installed: energy and CO2 were not tracked" in res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["energy_kwh"] is None
    assert summary["carbon"]["status"] == "unavailable"
    assert "codecarbon is not installed" in summary["carbon"]["reason"]
