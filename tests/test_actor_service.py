"""The actor as a real `actorq serve actor` process next to real replay and quantizer processes."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
from conftest import ROOT, ServiceProcess, free_port

from actorq.clients import ActorClient, QuantizerClient, ReplayClient
from actorq.rpc import channel
from actorq.v1 import actor_pb2, common_pb2

SPEC = common_pb2.NetworkSpec(
    kind="dqn_mlp", obs_dim=4, hidden_sizes=[16], output_dim=2, activation="relu"
)


def weights(seed: int) -> dict[str, np.ndarray]:
    """torch nn.Linear layout: layers.{i}.weight [out, in], layers.{i}.bias [out]."""
    rng = np.random.default_rng(seed)
    return {
        "layers.0.weight": rng.standard_normal((16, 4)).astype(np.float32) * 0.5,
        "layers.0.bias": rng.standard_normal(16).astype(np.float32) * 0.1,
        "layers.1.weight": rng.standard_normal((2, 16)).astype(np.float32) * 0.5,
        "layers.1.bias": rng.standard_normal(2).astype(np.float32) * 0.1,
    }


def publish(quantizer: ServiceProcess, version: int) -> None:
    with channel(quantizer.address) as ch:
        QuantizerClient(ch).publish(
            policy_version=version, learner_step=version, network=SPEC, weights=weights(version)
        )


def serve_actor(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `actorq serve actor ARGS` to completion (for processes expected to exit)."""
    cmd = [sys.executable, "-m", "commands.cli", "serve", "actor", "--port", "0", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def wait_status(
    actor: ServiceProcess, condition: Callable[[actor_pb2.ActorStatus], bool], timeout: float = 60
) -> actor_pb2.ActorStatus:
    with channel(actor.address) as ch:
        client = ActorClient(ch)
        deadline = time.monotonic() + timeout
        while True:
            status = client.status()
            if condition(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"actor status never matched; last:\n{status}\n{actor.log()}")
            time.sleep(0.1)


def actor_args(replay: str, quantizer: ServiceProcess, *extra: str) -> list[str]:
    return [
        "--env",
        "CartPole-v1",
        "--precision",
        "int8",
        "--replay-address",
        replay,
        "--quantizer-address",
        quantizer.address,
        "--chunk-size",
        "16",
        "--model-wait-s",
        "1",
        *extra,
    ]


# ------------------------------------------------------------ process edges


def test_actor_modules_do_not_import_torch() -> None:
    code = (
        "import sys, services.actor.server, services.actor.evaluate; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr


def test_unknown_env_exits_non_zero_naming_it() -> None:
    res = serve_actor("--env", "NoSuchEnv-v0")
    assert res.returncode != 0
    assert "'NoSuchEnv-v0'" in res.stderr and "pprint_registry" in res.stderr
    assert "Traceback" not in res.stderr


def test_unknown_precision_exits_non_zero_naming_it() -> None:
    res = serve_actor("--precision", "int4")
    assert res.returncode != 0
    assert "precision 'int4' is not supported" in res.stderr
    assert "Traceback" not in res.stderr


# -------------------------------------------------------------- integration


def test_actor_fills_replay_reports_its_time_and_swaps_models(
    service_factory: Callable[..., ServiceProcess],
) -> None:
    replay = service_factory("replay", [])
    quantizer = service_factory("quantizer", [])
    publish(quantizer, 1)
    actor = service_factory("actor", actor_args(replay.address, quantizer))

    status = wait_status(actor, lambda s: s.transitions_sent >= 64 and s.env_steps_per_s > 0)
    assert (status.state, status.model_version, status.precision) == ("running", 1, "int8")
    assert status.model_bytes > 0
    assert status.breakdown.env_us > 0 and status.breakdown.inference_us > 0
    assert status.breakdown.send_us > 0 and status.breakdown.other_us > 0
    assert status.swap.swaps == 1 and status.swap.pull_ms > 0 and status.swap.load_ms > 0
    with channel(replay.address) as ch:
        stats = ReplayClient(ch).stats()
        assert stats.size > 0
        assert stats.inserted_by_actor["actor-0"] > 0

    publish(quantizer, 2)
    swapped = wait_status(actor, lambda s: s.model_version == 2)
    assert swapped.swap.swaps == 2
    assert swapped.swap.last_pull_ms > 0 and swapped.swap.last_load_ms > 0
    # The first swap is logged at info, later ones (one per publish) at debug only.
    assert "swapped to model v1" in actor.log() and "swapped to model v2" not in actor.log()


def test_sigterm_flushes_everything_collected_to_replay(
    service_factory: Callable[..., ServiceProcess],
) -> None:
    replay = service_factory("replay", [])
    quantizer = service_factory("quantizer", [])
    publish(quantizer, 1)
    actor = service_factory("actor", actor_args(replay.address, quantizer, "--chunk-size", "50000"))
    wait_status(actor, lambda s: s.env_steps >= 200)
    assert actor.stop() == 0, actor.log()
    # One chunk holds everything: it went to replay at shutdown, every step in it.
    with channel(replay.address) as ch:
        inserted = ReplayClient(ch).stats().inserted_by_actor["actor-0"]
    found = re.search(
        r"stopped after (\d+) env steps, \d+ episodes; (\d+) transitions sent", actor.log()
    )
    assert found, actor.log()
    assert int(found[1]) == int(found[2]) == inserted >= 200


def test_actor_sends_fewer_chunks_per_insert_when_replay_caps_a_stream(
    service_factory: Callable[..., ServiceProcess],
) -> None:
    quantizer = service_factory("quantizer", [])
    publish(quantizer, 1)
    replay_port = free_port()
    extra = ("--max-chunks-per-insert", "8", "--max-pending-chunks", "8")
    actor = service_factory("actor", actor_args(f"127.0.0.1:{replay_port}", quantizer, *extra))
    # With the replay late, 8 chunks of 16 pile up: 128 transitions, twice what
    # this replay takes in one Insert.
    wait_status(actor, lambda s: s.pending_chunks >= 8)
    replay = service_factory("replay", ["--max-insert-transitions", "64"], port=replay_port)
    status = wait_status(actor, lambda s: s.transitions_sent >= 1000)
    assert status.error == ""  # nothing was refused for good
    with channel(replay.address) as ch:
        assert ReplayClient(ch).stats().inserted_by_actor["actor-0"] >= 1000
    assert re.search(
        r"replay refused \d+ chunks in one Insert .*; sending [1-4] per Insert", actor.log()
    )


def test_chunks_replay_refuses_are_reported_and_acting_goes_on(
    service_factory: Callable[..., ServiceProcess],
) -> None:
    replay = service_factory("replay", ["--max-insert-transitions", "64"])
    quantizer = service_factory("quantizer", [])
    publish(quantizer, 1)
    actor = service_factory("actor", actor_args(replay.address, quantizer, "--chunk-size", "100"))
    status = wait_status(actor, lambda s: s.send_failures >= 3 and s.env_steps >= 1000)
    assert "replay refused 100 transitions: RESOURCE_EXHAUSTED" in status.error
    assert status.state == "running" and status.transitions_sent == 0


def test_actor_waits_out_a_missing_replay_and_then_delivers(
    service_factory: Callable[..., ServiceProcess],
) -> None:
    quantizer = service_factory("quantizer", [])
    publish(quantizer, 1)
    replay_port = free_port()
    actor = service_factory(
        "actor",
        actor_args(f"127.0.0.1:{replay_port}", quantizer, "--max-pending-chunks", "4"),
    )
    held = wait_status(actor, lambda s: s.send_failures >= 2 and s.pending_chunks >= 4)
    assert held.transitions_sent == 0
    replay = service_factory("replay", [], port=replay_port)
    wait_status(actor, lambda s: s.transitions_sent > held.env_steps - 16)
    with channel(replay.address) as ch:
        assert ReplayClient(ch).stats().inserted_by_actor["actor-0"] > 0
    # One warning for the whole outage, one line when it ended.
    assert actor.log().count("replay insert failed") == 1
    assert "replay reachable again" in actor.log()
    assert actor.stop() == 0
    with channel(replay.address) as ch:
        inserted = ReplayClient(ch).stats().inserted_by_actor["actor-0"]
    assert f"{inserted} transitions sent" in actor.log()


def test_replay_rate_limiter_holds_the_actor_back_until_the_learner_samples(
    service_factory: Callable[..., ServiceProcess],
) -> None:
    # Inserts wait once 100 + 50 transitions are in and nobody has sampled.
    replay = service_factory(
        "replay",
        ["--samples-per-insert", "1", "--min-size-to-sample", "100", "--error-buffer", "50"],
    )
    quantizer = service_factory("quantizer", [])
    publish(quantizer, 1)
    actor = service_factory(
        "actor",
        actor_args(replay.address, quantizer, "--max-pending-chunks", "2", "--stop-flush-s", "2"),
    )
    wait_status(actor, lambda s: s.pending_chunks >= 2)
    time.sleep(0.5)
    held = wait_status(actor, lambda s: True)
    time.sleep(0.5)
    assert wait_status(actor, lambda s: True).env_steps == held.env_steps
    # Up to 150, plus one Insert that began below min_size_to_sample (8 chunks of 16).
    assert held.transitions_sent <= 150 + 8 * 16 and held.send_failures == 0
    with channel(replay.address) as ch:
        batches = ReplayClient(ch).sample_stream(batch_size=50, num_batches=20)
        assert sum(len(b.transitions) for b in batches) == 1000
    wait_status(actor, lambda s: s.env_steps > held.env_steps + 500)
