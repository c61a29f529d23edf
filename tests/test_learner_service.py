"""The learner as a real `actorq serve learner` process between a real replay and
a real quantizer: it trains, publishes fp32 and int8 versions, checkpoints on
SIGTERM and resumes; it waits for peers that are not up yet and stops with the
reason when retrying cannot help.

The replay and quantizer are shared by the module (a process each); every test
reads what it needs (served version, replay size) before acting.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from conftest import ROOT, ServiceProcess, free_port, start_service

from actorq.clients import LearnerClient, QuantizerClient, ReplayClient
from actorq.rpc import channel
from actorq.transitions import Transitions
from actorq.v1 import learner_pb2
from services.learner import checkpoint

T = TypeVar("T")
SMALL_NET = ("--dqn-hidden-sizes", "32,32", "--dqn-batch-size", "32")


def transitions(n: int, obs_dim: int = 4, seed: int = 0) -> Transitions:
    """n random CartPole-shaped n-step transitions."""
    rng = np.random.default_rng(seed)
    return Transitions(
        obs=rng.normal(size=(n, obs_dim)).astype(np.float32),
        action=rng.integers(0, 2, n).astype(np.int64),
        reward=np.ones(n, np.float32),
        discount=np.where(rng.random(n) < 0.05, 0.0, 0.99**3).astype(np.float32),
        next_obs=rng.normal(size=(n, obs_dim)).astype(np.float32),
    )


def wait_for(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll probe until it returns something truthy; fail naming what did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServiceProcess]]:
    """A replay holding 2,000 CartPole-shaped transitions, and a quantizer."""
    logs = tmp_path_factory.mktemp("stack")
    replay = start_service("replay", ["--min-size-to-sample", "64"], logs)
    quantizer = start_service("quantizer", [], logs)
    with channel(replay.address) as ch:
        ReplayClient(ch).insert([transitions(1000, seed=1), transitions(1000, seed=2)])
    yield {"replay": replay, "quantizer": quantizer}
    quantizer.stop()
    replay.stop()


@pytest.fixture(scope="module")
def quantizer(stack: dict[str, ServiceProcess]) -> Iterator[QuantizerClient]:
    with channel(stack["quantizer"].address) as ch:
        yield QuantizerClient(ch)


def served_version(client: QuantizerClient) -> int:
    return max((a.version for a in client.list_models().artifacts), default=0)


def learner_args(stack: dict[str, ServiceProcess], *extra: str) -> list[str]:
    return [
        *("--env", "CartPole-v1"),
        *("--replay-address", stack["replay"].address),
        *("--quantizer-address", stack["quantizer"].address),
        *SMALL_NET,
        *("--publish-every-steps", "20"),
        *extra,
    ]


class Learner:
    """A started learner process and a status probe."""

    def __init__(self, svc: ServiceProcess) -> None:
        self.svc = svc
        self._channel = channel(svc.address)
        self.client = LearnerClient(self._channel)

    def status(self) -> learner_pb2.LearnerStatus:
        return self.client.status(timeout=10)

    def wait(self, check: Callable[[learner_pb2.LearnerStatus], bool], what: str) -> Any:
        def probe() -> learner_pb2.LearnerStatus | None:
            st = self.status()
            return st if check(st) else None

        try:
            return wait_for(probe, 90, what)
        except AssertionError as err:
            raise AssertionError(
                f"{err}; status {self.status()}; log:\n{self.svc.log_tail()}"
            ) from None

    def close(self) -> None:
        self._channel.close()


@pytest.fixture
def start_learner(
    service_factory: Callable[..., ServiceProcess],
) -> Iterator[Callable[..., Learner]]:
    started: list[Learner] = []

    def start(args: list[str], **kw: object) -> Learner:
        learner = Learner(service_factory("learner", args, **kw))
        started.append(learner)
        return learner

    yield start
    for learner in started:
        learner.close()


def test_learner_trains_on_replay_and_publishes_fp32_and_int8_versions(
    stack: dict[str, ServiceProcess],
    quantizer: QuantizerClient,
    start_learner: Callable[..., Learner],
) -> None:
    before = served_version(quantizer)
    learner = start_learner(learner_args(stack))
    first = learner.wait(lambda s: s.learner_steps >= 50, "50 learner steps")
    # The first update waited for the warm-up on a copy of the agent, which has ended.
    assert first.update_warm_up_s > 0
    later = learner.wait(
        lambda s: s.learner_steps > first.learner_steps and s.published_version >= before + 3,
        "more steps and two publishes after the initial one",
    )
    assert later.state == "training"
    assert later.learner_steps_per_s > 0
    assert later.transitions_sampled >= 32 * later.learner_steps
    assert np.isfinite(later.loss) and later.last_publish_ms > 0
    artifacts = {a.precision: a for a in quantizer.list_models().artifacts}
    assert set(artifacts) == {"fp32", "int8"}
    assert artifacts["int8"].version > before + 1
    assert artifacts["int8"].learner_step > 0
    assert list(artifacts["int8"].network.hidden_sizes) == [32, 32]
    # int8 is calibrated on observations the learner sampled from replay.
    assert artifacts["int8"].quantization.calibration_source == "replay"


def test_learner_on_a_uniform_replay_sends_no_priorities(
    stack: dict[str, ServiceProcess], start_learner: Callable[..., Learner]
) -> None:
    learner = start_learner(learner_args(stack))
    st = learner.wait(lambda s: s.learner_steps >= 50, "50 learner steps")
    assert st.priorities_sent == 0 and st.priorities_dropped == 0


def test_learner_writes_td_error_priorities_back_to_a_prioritized_replay(
    stack: dict[str, ServiceProcess],
    service_factory: Callable[..., ServiceProcess],
    start_learner: Callable[..., Learner],
) -> None:
    replay = service_factory(
        "replay", ["--sampler", "prioritized", "--min-size-to-sample", "64", "--seed", "1"]
    )
    with channel(replay.address) as ch:
        client = ReplayClient(ch)
        client.insert([transitions(2000, seed=3)])
        # Every item starts at the same (largest) priority: all weights are exactly 1.
        fresh = next(iter(client.sample_stream(256, num_batches=1)))
        assert (fresh.weights == 1.0).all()

        args = learner_args(stack)
        args[args.index("--replay-address") + 1] = replay.address
        learner = start_learner(args)
        st = learner.wait(
            lambda s: s.learner_steps >= 100 and s.priorities_sent >= 32 * 50,
            "100 learner steps and their priorities sent",
        )
        assert st.priorities_dropped == 0
        # The TD errors differ item by item, so now the importance weights do too.
        trained = next(iter(client.sample_stream(256, num_batches=1)))
    assert len(np.unique(trained.weights)) > 10
    assert trained.weights.max() == pytest.approx(1.0) and trained.weights.min() < 0.9


def test_sigterm_writes_a_checkpoint_that_a_restarted_learner_resumes_from(
    stack: dict[str, ServiceProcess],
    quantizer: QuantizerClient,
    start_learner: Callable[..., Learner],
    tmp_path: Path,
) -> None:
    ckpt = tmp_path / "ckpt"
    args = learner_args(stack, "--checkpoint-dir", str(ckpt), "--checkpoint-every-s", "3600")
    first = start_learner(args)
    trained = first.wait(lambda s: s.learner_steps >= 60, "60 learner steps")
    assert checkpoint.load_latest(ckpt) is None  # not due yet: only SIGTERM writes one

    assert first.svc.stop(timeout=60) == 0, first.svc.log_tail()
    saved = checkpoint.load_latest(ckpt)
    assert saved is not None
    assert saved["learner_step"] >= trained.learner_steps
    assert saved["published_version"] >= trained.published_version

    second = start_learner(args)
    resumed = second.wait(lambda s: s.resumed_from_step > 0, "the resumed learner's status")
    assert resumed.resumed_from_step == saved["learner_step"]
    assert resumed.checkpoint_step == saved["learner_step"]
    assert resumed.learner_steps >= saved["learner_step"]
    # It publishes the resumed weights at once, as the next version.
    going = second.wait(
        lambda s: (
            s.published_version > saved["published_version"]
            and s.learner_steps > saved["learner_step"]
        ),
        "a publish and new steps after resuming",
    )
    assert going.state == "training"


def test_learner_checkpoints_every_checkpoint_every_s_while_training(
    stack: dict[str, ServiceProcess], start_learner: Callable[..., Learner], tmp_path: Path
) -> None:
    ckpt = tmp_path / "ckpt"
    learner = start_learner(
        learner_args(stack, "--checkpoint-dir", str(ckpt), "--checkpoint-every-s", "0.5")
    )
    first = learner.wait(lambda s: s.checkpoint_step > 0, "a first periodic checkpoint")
    later = learner.wait(
        lambda s: s.checkpoint_step > first.checkpoint_step, "a second periodic checkpoint"
    )
    assert later.last_checkpoint_unix > first.last_checkpoint_unix
    saved = checkpoint.load_latest(ckpt)
    assert saved is not None and saved["learner_step"] >= later.checkpoint_step


def test_learner_without_its_checkpoint_publishes_past_the_versions_already_served(
    stack: dict[str, ServiceProcess],
    quantizer: QuantizerClient,
    start_learner: Callable[..., Learner],
) -> None:
    before = served_version(quantizer)
    if before == 0:  # run alone: give the quantizer a history first
        start_learner(learner_args(stack)).wait(lambda s: s.published_version > 0, "a publish")
        before = served_version(quantizer)
    fresh = start_learner(learner_args(stack))
    st = fresh.wait(lambda s: s.published_version > before, f"a version above {before}")
    assert st.error == ""


def test_learner_started_before_its_peers_waits_and_then_trains(
    start_learner: Callable[..., Learner],
    service_factory: Callable[..., ServiceProcess],
) -> None:
    replay_port, quantizer_port = free_port(), free_port()
    learner = start_learner(
        [
            *("--env", "CartPole-v1", *SMALL_NET),
            *("--replay-address", f"127.0.0.1:{replay_port}"),
            *("--quantizer-address", f"127.0.0.1:{quantizer_port}"),
        ]
    )
    time.sleep(3)  # several retries' worth
    assert learner.status().state == "starting"
    assert learner.svc.log().count("waiting for quantizer") == 1  # once per outage

    service_factory("quantizer", [], port=quantizer_port)
    learner.wait(lambda s: s.published_version == 1, "the initial publish")
    replay = service_factory("replay", ["--min-size-to-sample", "64"], port=replay_port)
    with channel(replay.address) as ch:
        ReplayClient(ch).insert([transitions(500)])
    learner.wait(lambda s: s.learner_steps > 0 and s.state == "training", "training")
    assert learner.svc.stop() == 0  # before the replay, whose shutdown waits for open streams


def test_learner_stops_after_max_learner_steps_and_publishes_the_final_weights(
    stack: dict[str, ServiceProcess],
    quantizer: QuantizerClient,
    start_learner: Callable[..., Learner],
) -> None:
    learner = start_learner(learner_args(stack, "--max-learner-steps", "30"))
    st = learner.wait(lambda s: s.state == "stopped", "state stopped")
    assert st.learner_steps == 30
    wait_for(lambda: quantizer_has_step(quantizer, 30), 60, "the step-30 weights served")


def quantizer_has_step(client: QuantizerClient, step: int) -> bool:
    return any(a.learner_step == step for a in client.list_models().artifacts)


# -- what retrying cannot fix -------------------------------------------------------


def serve_learner(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "commands.cli", "serve", "learner", "--port", "0", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_env_with_continuous_actions_is_refused_at_start() -> None:
    res = serve_learner("--env", "Pendulum-v1")
    assert res.returncode != 0
    assert "'Pendulum-v1' has 1-dim actions in [-2, 2]" in res.stderr
    assert "Discrete" in res.stderr


def test_checkpoint_of_another_network_is_refused_at_start(tmp_path: Path) -> None:
    from services.learner.config import LearnerConfig
    from services.learner.hyperparams import DQNConfig
    from services.learner.learner import Learner as Core

    cfg = LearnerConfig(checkpoint_dir=str(tmp_path), dqn=DQNConfig(hidden_sizes=[8]))
    Core(cfg, 4, 2).save_checkpoint(published_version=1)
    res = serve_learner("--checkpoint-dir", str(tmp_path), "--dqn-hidden-sizes", "16")
    assert res.returncode != 0
    assert "does not fit this config" in res.stderr and "layers.0.weight" in res.stderr


def test_replay_refusing_the_batch_size_stops_the_learner_with_the_reason(
    stack: dict[str, ServiceProcess], tmp_path: Path
) -> None:
    args = learner_args(stack, "--dqn-batch-size", "1000000")
    res = serve_learner(*args)
    assert res.returncode != 0
    assert "refuses to sample batches of 1000000" in res.stderr


def test_batches_of_another_env_stop_the_learner_naming_the_shape(tmp_path: Path) -> None:
    replay = start_service("replay", ["--min-size-to-sample", "32"], tmp_path)
    quantizer = start_service("quantizer", [], tmp_path)
    try:
        with channel(replay.address) as ch:
            ReplayClient(ch).insert([transitions(100, obs_dim=8)])  # actors of an 8-dim env
        res = serve_learner(
            *("--env", "CartPole-v1", *SMALL_NET),
            *("--replay-address", replay.address, "--quantizer-address", quantizer.address),
        )
    finally:
        quantizer.stop()
        replay.stop()
    assert res.returncode != 0
    assert "obs has shape [32, 8], expected [32, 4]" in res.stderr
