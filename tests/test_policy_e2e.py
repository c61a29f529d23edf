"""The trained policy end to end: Ctrl-C a short CartPole int8 run as a terminal does
(the whole foreground process group), find its policies and its summary so far, refuse
the same command without --resume, resume it to a target, then eval and export what it
kept and run the README's snippet on the export. Real processes throughout."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_policy import run_readme_snippet
from test_train import _pid_alive

ROOT = Path(__file__).resolve().parents[1]
FILES = {
    f"{r}-{p}.{s}" for r in ("best", "latest") for p in ("int8", "fp32") for s in ("onnx", "json")
}
FLAGS = ["--env", "CartPole-v1", "--precision", "int8", "--actors", "1", "--eval-episodes", "3"]
FLAGS += ["--eval-every-s", "2", "--no-carbon", "--quiet"]
# The interrupted run has no budget: Ctrl-C ends it.
NO_BUDGET = ["--max-env-steps", "none"]
# What the resumed run trains to: greedy CartPole return over --eval-episodes 3.
TARGET = 100


def actorq(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "commands.cli", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def interrupted_run(out: Path) -> None:
    """Train until a policy is kept and the learner has trained, then Ctrl-C."""
    cmd = [sys.executable, "-m", "commands.cli", "train", *FLAGS, *NO_BUDGET]
    proc = subprocess.Popen(
        [*cmd, "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a foreground process group of its own, as in a terminal
    )
    deadline = time.monotonic() + 120
    metrics = out / "metrics.jsonl"
    while time.monotonic() < deadline:
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        row = json.loads(lines[-1]) if lines else {"env_steps": 0, "learner_steps": 0}
        trained = row["env_steps"] >= 500 and row["learner_steps"] > 0
        if trained and (out / "policy" / "best-int8.json").exists():
            break
        time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGKILL)  # the run's services too, not only the launcher
        pytest.fail(f"no policy kept in time: {proc.communicate()[1][-2000:]}")
    # A terminal's Ctrl-C goes to the whole foreground group: the launcher must be the
    # only one there, so that it stops the services in order.
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        # Left running, the run would hold CPU 0 (its pinned learner) for every later test.
        os.killpg(proc.pid, signal.SIGKILL)
        ignored = "SIGINT is ignored in this shell: " if _sigint_ignored() else ""
        pytest.fail(f"{ignored}the run did not stop within 60 s of Ctrl-C")
    assert proc.returncode == 1, stderr


def _sigint_ignored() -> bool:
    """Whether this process (and so the run it starts) ignores SIGINT, as a background
    job of a shell without job control does: Ctrl-C cannot reach the run then."""
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def clean_logs(out: Path) -> None:
    """Every service was stopped by the launcher (SIGTERM, in order), none logged an error."""
    for log in (out / "logs").glob("*.log"):
        text = log.read_text()
        assert "received SIGINT" not in text and "received SIGTERM" in text, log.name
        assert " ERROR " not in text and "Traceback" not in text, (log.name, text[-3000:])


def test_a_run_keeps_its_policy_resumes_to_the_target_and_exports(tmp_path: Path) -> None:
    out = tmp_path / "run"
    interrupted_run(out)
    assert {p.name for p in (out / "policy").iterdir()} == FILES
    stopped = json.loads((out / "summary.json").read_text())
    assert stopped["stop_reason"] == "interrupted" and stopped["env_steps"] >= 500
    assert stopped["learner_steps"] > 0 and stopped["eval_detail"]["history"]
    assert set(stopped["pids"]) == {"replay", "quantizer", "learner", "actor-0"}
    assert not [name for name, pid in stopped["pids"].items() if _pid_alive(pid)]
    clean_logs(out)
    checkpoint = (out / "checkpoints" / "learner.pt").read_bytes()
    metrics_before = (out / "metrics.jsonl").read_text().splitlines()
    steps_before = json.loads(metrics_before[-1])["env_steps"]

    # The same command again is refused, and the checkpoint is untouched.
    refused = actorq("train", *FLAGS, *NO_BUDGET, "--out", str(out), timeout=60)
    assert refused.returncode == 2
    assert "--resume" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert (out / "checkpoints" / "learner.pt").read_bytes() == checkpoint

    # --resume continues to a target: learner steps from the checkpoint, env steps from
    # the counter. A memory replay starts empty and refills (min_size_to_sample 1000).
    budget = steps_before + 40_000  # a bound on a stuck run; the target ends it first
    res = actorq(
        "train", "--resume", str(out), *("--target-return", str(TARGET)),
        *("--max-env-steps", str(budget)), "--quiet",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    resumed = re.search(
        r"resumed from .* at step (\d+)", (out / "logs" / "learner.log").read_text()
    )
    assert resumed and int(resumed.group(1)) > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "target_reached", summary["eval_detail"]["history"][-5:]
    reached = summary["eval_detail"]["target_eval"]
    assert reached["mean_return"] >= TARGET and reached["env_steps"] >= steps_before
    assert summary["learner_steps"] > int(resumed.group(1))
    clean_logs(out)
    metrics = (out / "metrics.jsonl").read_text().splitlines()
    assert metrics[: len(metrics_before)] == metrics_before  # appended, not rewritten
    assert json.loads(metrics[len(metrics_before)])["env_steps"] >= steps_before
    assert {p.name for p in (out / "policy").iterdir()} == FILES
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 2  # one per part

    # actorq eval reproduces the run's evaluation of the best version (same seed).
    card = json.loads((out / "policy" / "best-int8.json").read_text())
    evals = [json.loads(line) for line in (out / "evals.jsonl").read_text().splitlines()]
    same = [
        e
        for e in evals
        if e["version"] == card["policy_version"] and e["precision"] == "int8"
        if not e["stopped_early"]
    ]
    assert same and card["evaluation"]["mean_return"] == same[-1]["mean_return"]
    evaluated = actorq("eval", str(out), timeout=120)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"mean {card['evaluation']['mean_return']:.2f}" in evaluated.stdout

    # Export the best int8 policy and run it as the README shows.
    exported = actorq(
        "export", str(out), "--precision", "int8", "--out", str(tmp_path / "policy.onnx")
    )
    assert exported.returncode == 0, exported.stderr
    snippet = run_readme_snippet(tmp_path)
    assert snippet.returncode == 0, snippet.stderr
    assert snippet.stdout.startswith("return ")
