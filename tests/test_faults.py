"""`actorq train` survives kill -9 of every one of its services (issue 13).

One short CartPole run with its replay on a real Redis: an actor and the
quantizer are killed with SIGKILL as soon as a model is served, then the
learner (after its first checkpoint) and the replay together. The launcher's
supervisor restarts each; the run must end as planned, with every restart in
summary.json, the final evaluation of both precisions done, the learner
resumed from its checkpoint, and every transition replay had acknowledged to
the surviving actor still in replay after the replay's restart.

A second, shorter run keeps its replay in memory, journaled in the run
directory: the replay is killed with SIGKILL and must come back with every
transition it had acknowledged (``services.replay.journal``). That run also
has a metrics port in its environment, which the launcher must keep from its
services (they cannot share one port).

The supervisor's own rules (backoff, the restart budget and the run ending
when it is spent, records) are unit-tested in tests/test_supervisor.py;
`actorq bench faults` runs to the target with each service killed in turn.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from conftest import free_port
from redis_server import RedisServer

from actorq.clients import ActorClient, ReplayClient
from actorq.rpc import channel, wait_healthy
from commands.bench.faults import last_metrics, service_pids, token_env
from commands.procs import wait_for

ROOT = Path(__file__).resolve().parents[1]


def test_a_run_survives_kill_9_of_an_actor_the_quantizer_the_learner_and_the_replay(
    tmp_path: Path,
) -> None:
    out, config = tmp_path / "run", tmp_path / "fast.yaml"
    # Checkpoints every second, so the learner has one to resume from when it is killed.
    config.write_text("learner:\n  checkpoint_every_s: 1\n")
    # No ACTORQ_TOKEN*: the launcher makes a token of its own for the run.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORQ_TOKEN")}
    with RedisServer.start(tmp_path / "redis") as redis:
        cmd = [sys.executable, "-m", "commands.cli", "train", "--env", "CartPole-v1"]
        # A budget in env steps, not seconds: the run goes on until the services killed
        # are back (actors need replay, and replay's rate limit the learner), however
        # slow a loaded machine makes their restarts. Not too small: what the learner
        # sampled before it was killed lets the actors insert that much more without it
        # (8 env steps per update of 128 in CartPole's preset), and a CI run once reached
        # 10,000 env steps before the restarted learner served again.
        cmd += ["--actors", "2", "--max-env-steps", "30000"]
        cmd += ["--eval-episodes", "3", "--replay-store", redis.url, "--config", str(config)]
        cmd += ["--out", str(out), "--quiet"]
        run = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            run_config = out / "config.yaml"
            wait_for("5 services", lambda: len(service_pids(run_config)) == 5)
            wait_for("a served model", lambda: (last_metrics(out).get("model_version") or 0) > 0)
            first = service_pids(run_config)
            tokens = token_env(first["replay"][0])
            assert list(tokens) == ["ACTORQ_TOKEN_FILE"]
            token_file = Path(tokens["ACTORQ_TOKEN_FILE"])
            assert token_file.stat().st_mode & 0o777 == 0o600
            token = token_file.read_text()
            for pid, _ in first.values():
                assert token not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
            replay_address = f"127.0.0.1:{first['replay'][1]}"
            with channel(replay_address, env=env) as ch, pytest.raises(grpc.RpcError) as refused:
                ReplayClient(ch).stats()  # no token: refused
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            env = {**env, **tokens}  # the test talks to the services from here on
            os.kill(first["actor-0"][0], signal.SIGKILL)
            os.kill(first["quantizer"][0], signal.SIGKILL)
            wait_for(
                "the quantizer back",
                lambda: (
                    service_pids(run_config).get("quantizer", first["quantizer"])[0]
                    != first["quantizer"][0]
                ),
            )
            wait_for("a checkpoint", lambda: any((out / "checkpoints").glob("*")))
            # The survivor's first Insert can still be held by replay's rate limiter here
            # (CI once saw 1,345 steps and nothing acknowledged yet): wait for an answer.
            with channel(f"127.0.0.1:{first['actor-1'][1]}", env=env) as ch:
                actor = ActorClient(ch)
                wait_for(
                    "actor-1's first acknowledged Insert", lambda: actor.status().transitions_sent
                )
                survivor = actor.status()
            # Everything actor-1 had acknowledged before the replay dies must be there after.
            os.kill(first["replay"][0], signal.SIGKILL)
            os.kill(first["learner"][0], signal.SIGKILL)
            wait_healthy(replay_address, 120)
            with channel(replay_address, env=env) as ch:
                kept = ReplayClient(ch).stats().inserted_by_actor[survivor.actor_id]
            _, stderr = run.communicate(timeout=300)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
    assert run.returncode == 0, stderr[-3000:]
    assert survivor.transitions_sent > 0
    assert kept >= survivor.transitions_sent
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "max_env_steps"
    restarts = {r["service"]: r for r in summary["restarts"]}
    assert set(restarts) == {"actor-0", "quantizer", "learner", "replay"}
    for name, record in restarts.items():
        assert record["signal"] == "SIGKILL", record
        assert record["downtime_s"] is not None, record
        assert record["pid"] == first[name][0]
        assert f"restarted {name}: killed by SIGKILL" in stderr
    # The final evaluation ran, in both precisions, after the quantizer's restart.
    assert all(isinstance(v, float) for v in summary["eval"].values()), summary["eval"]
    assert set(summary["eval"]) == {"fp32", "int8"}
    assert "resumed from" in (out / "logs" / "learner.log").read_text()
    assert summary["exit_codes"] == dict.fromkeys(summary["pids"], 0)
    # The run's token: gone with the run, never written where a run leaves things.
    assert not token_file.exists()
    for path in out.rglob("*"):
        if path.is_file():
            assert token not in path.read_text(errors="replace"), path
    assert token not in stderr


def test_a_memory_replay_killed_with_sigkill_comes_back_with_every_acknowledged_transition(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORQ_TOKEN")}
    # A metrics port in the user's environment: four services cannot share one port, so
    # the launcher turns metrics off in each (this run ending as planned shows it did).
    env["ACTORQ_METRICS_PORT"] = str(free_port())
    cmd = [sys.executable, "-m", "commands.cli", "train", "--env", "CartPole-v1", "--quiet"]
    # One actor (the fewest processes); a budget the rate limit stretches past the restart.
    cmd += ["--actors", "1", "--max-env-steps", "8000", "--eval-episodes", "1", "--no-carbon"]
    cmd += ["--out", str(out)]
    run = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        run_config = out / "config.yaml"
        wait_for("4 services", lambda: len(service_pids(run_config)) == 4)
        wait_for("a served model", lambda: (last_metrics(out).get("model_version") or 0) > 0)
        first = service_pids(run_config)
        env = {**env, **token_env(first["replay"][0])}
        replay_address = f"127.0.0.1:{first['replay'][1]}"
        with channel(f"127.0.0.1:{first['actor-0'][1]}", env=env) as ch:
            actor = ActorClient(ch).status()
        os.kill(first["replay"][0], signal.SIGKILL)
        wait_healthy(replay_address, 120)
        with channel(replay_address, env=env) as ch:
            kept = ReplayClient(ch).stats().inserted_by_actor[actor.actor_id]
        _, stderr = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, stderr[-3000:]
    assert actor.transitions_sent > 0
    assert kept >= actor.transitions_sent
    # What the restarted replay read back from its journal, before the actor resent.
    log = (out / "logs" / "replay.log").read_text()
    recovered = re.search(r"recovered (\d+) transitions", log)
    assert recovered, log[-3000:]
    assert int(recovered.group(1)) >= actor.transitions_sent
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "max_env_steps"
    assert [(r["service"], r["signal"]) for r in summary["restarts"]] == [("replay", "SIGKILL")]
    assert (out / "replay" / "journal").is_file()
