"""Pieces that let actor replicas come and go: names from the host, the health CLI the
compose healthchecks run, and `actorq attach`'s arguments."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, ServiceProcess, free_port

from actorq.config import ConfigError, load
from commands import attach
from services.actor.config import ActorConfig


def test_an_actor_id_with_hostname_names_the_replica_after_its_host() -> None:
    cfg = load(ActorConfig, env={"ACTORQ_ACTOR_ID": "actor-{hostname}"})
    assert cfg.name == f"actor-{socket.gethostname()}"


def test_replicas_named_after_their_hosts_get_different_seeds() -> None:
    a = ActorConfig(actor_id="actor-{hostname}", seed=3)
    seeds = {a.actor_seed}
    for host in ("pod-x", "pod-y"):
        b = ActorConfig(actor_id=f"actor-{host}-{{hostname}}", seed=3)
        seeds.add(b.actor_seed)
    assert len(seeds) == 3
    assert all(3000 <= s < 4000 for s in seeds)


def test_an_actor_id_without_placeholder_keeps_the_index_seed() -> None:
    assert ActorConfig(actor_id="fixed", actor_index=1, num_actors=2, seed=2).actor_seed == 2001


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "commands.cli", *args], capture_output=True, text=True, cwd=ROOT
    )


def test_actorq_health_exits_0_for_a_serving_service(
    service_factory: Callable[..., ServiceProcess],
) -> None:
    replay = service_factory("replay")
    assert run_cli("health", replay.address).returncode == 0
    assert run_cli("health", replay.address, "--service", "actorq.v1.ReplayService").returncode == 0


def test_actorq_health_exits_1_naming_the_address_when_nothing_answers() -> None:
    address = f"127.0.0.1:{free_port()}"
    result = run_cli("health", address, "--timeout", "1")
    assert result.returncode == 1
    assert address in result.stderr


def test_attach_takes_its_defaults_from_the_config_train_section(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  env: CartPole-v1\n  target_return: 200\n  eval_episodes: 5\n")
    args, addrs, report = attach.parse_args(
        [
            "--replay-address=r:1",
            "--quantizer-address=q:2",
            "--learner-address=l:3",
            f"--config={config}",
            "--eval-episodes=7",
            f"--out={tmp_path / 'run'}",
        ]
    )
    assert (args.env, args.target_return, args.eval_episodes) == ("CartPole-v1", 200, 7)
    assert (addrs.replay, addrs.quantizer, addrs.learner) == ("r:1", "q:2", "l:3")
    assert report and not args.carbon_tracking


def test_attach_without_an_env_says_where_to_give_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--env"):
        attach.parse_args(
            ["--replay-address=r:1", "--quantizer-address=q:2", "--learner-address=l:3",
             f"--out={tmp_path}"]
        )  # fmt: skip


def test_attach_fails_naming_the_service_that_never_became_healthy(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    result = run_cli(
        "attach", f"--replay-address={dead}", f"--quantizer-address={dead}",
        f"--learner-address={dead}", "--env=CartPole-v1", "--startup-timeout-s=1",
        f"--out={tmp_path / 'run'}",
    )  # fmt: skip
    assert result.returncode == 1
    assert "replay:" in result.stderr and dead in result.stderr
