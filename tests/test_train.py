"""`actorq train` end to end: real processes, real learning."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis_server import RedisServer

from commands.bench.faults import service_pids

ROOT = Path(__file__).resolve().parents[1]

SUMMARY_KEYS = {
    "env",
    "algo",
    "precision",
    "actors",
    "seed",
    "reached_target",
    "time_to_target_s",
    "env_steps",
    "env_steps_to_target",
    "learner_steps",
    "wall_s",
    "eval",
    "model_versions",
    "model_bytes",
    "actor_env_steps_per_s",
    "breakdown_us_per_step",
    "model_swap_ms",
    "quantization",
    "pids",
}

REDIS_PASSWORD = "s3cret-not-in-any-file"


def train(
    out: Path, *args: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "commands.cli", "train", "--out", str(out), "--quiet", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_short_run_writes_summary_metrics_and_config_and_leaves_no_process(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = train(
        out,
        "--env",
        "CartPole-v1",
        "--actors",
        "2",
        "--max-env-steps",
        "3000",
        "--eval-episodes",
        "3",
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary.keys() >= SUMMARY_KEYS
    assert summary["stop_reason"] == "max_env_steps"
    assert summary["env_steps"] >= 3000
    assert summary["precision"] == "int8"
    assert set(summary["model_bytes"]) == {"fp32", "int8"}
    assert summary["model_versions"]["int8"] >= 1
    assert set(summary["eval"]) == {"fp32", "int8"}
    assert summary["breakdown_us_per_step"]["env"] > 0
    assert summary["breakdown_us_per_step"]["inference"] > 0
    assert summary["actor_env_steps_per_s"] > 0
    # Start-up counts from the command's start: every service healthy, then an actor stepping.
    assert 0 < summary["healthy_s"] <= summary["startup_s"] < summary["wall_s"]
    assert summary["startup_cpu_s"] > 0 and summary["eval_cpu_s"] >= 0
    assert set(summary["startup_cpu"]) == {*summary["pids"], "launcher"}
    assert sum(summary["startup_cpu"].values()) == pytest.approx(summary["startup_cpu_s"], abs=0.1)
    assert set(summary["pids"]) == {"replay", "quantizer", "learner", "actor-0", "actor-1"}
    assert not any(_pid_alive(pid) for pid in summary["pids"].values())
    assert (out / "config.yaml").read_text().count("replay_address") >= 2
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert lines and "env_steps" in json.loads(lines[-1])
    # The training episode return (what `actorq report` plots) and the exploration.
    last = json.loads(lines[-1])
    assert last["train_return"] > 0 and 0 < last["epsilon"] <= 1


def test_unknown_env_is_refused_before_anything_starts(tmp_path: Path) -> None:
    res = train(tmp_path / "run", "--env", "NoSuchEnv-v9", timeout=60)
    assert res.returncode == 2
    assert "env 'NoSuchEnv-v9' is not a registered Gymnasium env" in res.stderr
    assert not (tmp_path / "run" / "logs").exists()


def test_unknown_precision_is_refused(tmp_path: Path) -> None:
    res = train(tmp_path / "run", "--env", "CartPole-v1", "--precision", "int4", timeout=60)
    assert res.returncode == 2
    assert "int4" in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("store", "budget", "sustain"), [("memory", 150_000, 3), ("redis", 150_000, 1)]
)
def test_int8_dqn_reaches_475_on_cartpole(
    tmp_path: Path, store: str, budget: int, sustain: int
) -> None:
    """The core learning result: the int8 policy the actors run reaches the target within
    100k env steps (the core issue's bound) and holds it for 3 evaluations (make run's stop
    rule) within make run's budget of 150k (the CartPole preset spends 8 env steps per
    update: int8 actors are cheap, the learner bounds the run; the tuning and side-by-side
    runs of these settings held it at 30-85k). Then the same with replay state in a real Redis, to the first
    crossing (the stop rule is the memory run's to guard; this one guards learning from
    Redis, and holding costs it 25-75 s more); its budget leaves room for the spread of
    this asynchronous system (one int8 seed-0 run took 80k env steps with the memory
    store, before the CartPole preset), since a second run at the edge would double the
    chance of a spurious failure.
    """
    out = tmp_path / "run"
    with contextlib.ExitStack() as stack:
        store_url = "memory"
        if store == "redis":
            redis = stack.enter_context(
                RedisServer.start(tmp_path / "redis", password=REDIS_PASSWORD)
            )
            store_url = redis.url
        res = train(
            out,
            *("--env", "CartPole-v1", "--algo", "dqn", "--precision", "int8", "--actors", "2"),
            *("--target-return", "475", "--sustain", str(sustain)),
            *("--max-env-steps", str(budget), "--seed", "0"),
            *("--replay-store", store_url),
            timeout=900,
        )
    if store == "redis":  # the password reaches the replay process only
        for path in out.rglob("*"):
            if path.is_file() and path.suffix in (".json", ".jsonl", ".yaml", ".log", ".md"):
                assert REDIS_PASSWORD not in path.read_text(errors="replace"), path
    summary = json.loads((out / "summary.json").read_text())
    assert res.returncode == 0, res.stderr[-3000:]
    assert summary["reached_target"], summary["eval_detail"]["history"][-5:]
    assert summary["env_steps_to_target"] <= 100_000
    target_eval = summary["eval_detail"]["target_eval"]
    assert target_eval["precision"] == "int8"
    assert target_eval["episodes"] == 20
    assert target_eval["mean_return"] >= 475
    # make run's stop rule: 475 held by K full evaluations in a row, the first crossing first.
    held = summary["eval_detail"]["sustained_eval"]
    assert summary["stop_reason"] == "target_reached" and summary["sustained_target"]
    assert held["precision"] == "int8" and held["episodes"] == 20 and held["mean_return"] >= 475
    assert summary["time_to_target_s"] <= summary["time_to_sustained_target_s"]
    assert summary["env_steps_to_sustained_target"] <= budget
    assert summary["eval"]["int8"] >= 475
    # The version that held it was evaluated in fp32 too (its twin, full episodes).
    twin = summary["eval_detail"]["final"]["fp32"]
    assert "error" not in twin, twin
    assert twin["version"] == held["version"] and twin["episodes"] == 20
    assert summary["eval"]["fp32"] == twin["mean_return"]


def test_services_go_away_when_the_launcher_is_killed(tmp_path: Path) -> None:
    """SIGKILL leaves the launcher no chance to clean up: the death signal must."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "commands.cli", "train", "--env", "CartPole-v1", "--quiet"]
    cmd += ["--max-env-steps", "none", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(found := service_pids(out / "config.yaml")) < 5 and time.monotonic() < deadline:
            time.sleep(0.5)
        services = [pid for pid, _ in found.values()]
        assert len(services) == 5
    finally:
        # Killed whatever the assertion says: a run with no env-step budget never ends.
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_pid_alive(p) for p in services):
        time.sleep(0.5)
    assert not [p for p in services if _pid_alive(p)]


def test_unknown_replay_store_fails_at_startup_naming_it(tmp_path: Path) -> None:
    res = train(tmp_path / "run", "--env", "CartPole-v1", "--replay-store", "tape://x", timeout=120)
    assert res.returncode == 2
    assert "tape://x" in res.stderr
