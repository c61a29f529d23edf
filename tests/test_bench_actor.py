"""`actorq bench actor`: fp32 vs int8, onnxruntime vs PyTorch, in one run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"ort_fp32", "ort_int8", "torch_fp32", "torch_int8"}


def bench_actor(*args: str) -> subprocess.CompletedProcess[str]:
    """`actorq bench actor ARGS` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "commands.cli", "bench", "actor", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_actor_bench_times_every_variant_and_records_the_machine(tmp_path: Path) -> None:
    out = tmp_path / "bench-actor.json"
    res = bench_actor(
        *("--widths", "64", "--batches", "1,16", "--rounds", "2", "--block", "3"),
        *("--out", str(out)),
    )
    assert res.returncode == 0, res.stderr
    result = json.loads(out.read_text())
    assert [(r["width"], r["batch"]) for r in result["inference"]] == [(64, 1), (64, 16)]
    for row in result["inference"]:
        assert set(row["us"]) == VARIANTS
        assert all(v > 0 for v in row["us"].values())
    assert set(result["step"][0]["us"]) == VARIANTS | {"env_only"}
    assert result["int8_method"] == "dynamic"
    machine = result["machine"]
    assert machine["cpu_model"] and isinstance(machine["avx512_vnni"], bool)
    assert machine["versions"]["onnxruntime"] and machine["versions"]["torch"]
    model = result["models"][0]
    assert model["bytes"]["ort_int8"] < model["bytes"]["ort_fp32"]
    assert set(model["accuracy"]) == {"ort_int8", "torch_int8"}
    assert "ort fp32/int8" in res.stdout and "torch int8/ort int8" in res.stdout


def test_actor_bench_refuses_a_continuous_action_env_in_one_sentence(tmp_path: Path) -> None:
    out = tmp_path / "bench-actor.json"
    res = bench_actor("--env", "Pendulum-v1", "--widths", "64", "--out", str(out))
    assert res.returncode == 1, res.stderr
    assert "Pendulum-v1 has continuous actions" in res.stderr
    assert "CartPole-v1" in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()
