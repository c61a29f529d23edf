"""The learner's core without a network: config, checkpoints, resume, calibration
observations, the publisher's coalescing and the steps/s meter."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, cast

import grpc
import numpy as np
import pytest
import torch

from actorq.clients import QuantizerClient
from actorq.config import ConfigError, from_argv
from actorq.transitions import Transitions
from actorq.v1 import common_pb2, quantizer_pb2
from actorq.workers import RateMeter
from services.learner import checkpoint
from services.learner.algorithms import env_spaces
from services.learner.config import LearnerConfig
from services.learner.hyperparams import DQNConfig
from services.learner.learner import Learner, Snapshot
from services.learner.publisher import Publisher


def transitions(n: int, start: float = 0.0, seed: int = 0) -> Transitions:
    """n CartPole-shaped transitions; obs[:, 0] counts up from start."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, 4)).astype(np.float32)
    obs[:, 0] = start + np.arange(n)
    return Transitions(
        obs=obs,
        action=rng.integers(0, 2, n).astype(np.int64),
        reward=np.ones(n, np.float32),
        discount=np.full(n, 0.97, np.float32),
        next_obs=rng.normal(size=(n, 4)).astype(np.float32),
    )


def config(tmp_path: Path | None = None, **kw: Any) -> LearnerConfig:
    dqn = kw.pop("dqn", DQNConfig(hidden_sizes=[16, 16], batch_size=8))
    return LearnerConfig(checkpoint_dir=str(tmp_path / "ckpt") if tmp_path else "", dqn=dqn, **kw)


# -- configuration ------------------------------------------------------------


def test_env_spaces_size_the_network_from_the_env() -> None:
    assert env_spaces("CartPole-v1") == (4, 2)
    assert env_spaces("Acrobot-v1") == (6, 3)


def test_env_with_continuous_actions_is_refused_naming_the_space() -> None:
    with pytest.raises(
        ConfigError, match=r"'Pendulum-v1' has 1-dim actions in \[-2, 2\].*Discrete"
    ):
        env_spaces("Pendulum-v1")


def test_unknown_env_is_refused_with_a_pointer_to_the_registry() -> None:
    with pytest.raises(
        ConfigError, match=r"'NoSuchEnv-v9' is not a registered Gymnasium env.*pprint_registry"
    ):
        env_spaces("NoSuchEnv-v9")


def test_nested_dqn_settings_come_from_prefixed_flags() -> None:
    cfg = from_argv(
        LearnerConfig,
        ["--dqn-lr", "0.0005", "--dqn-hidden-sizes", "64,32", "--precisions", "int8"],
        prog="t",
        section="learner",
    )
    assert (cfg.dqn.lr, cfg.dqn.hidden_sizes, cfg.precisions) == (0.0005, [64, 32], ["int8"])
    assert (cfg.port, cfg.publish_every_steps, cfg.calibration_size) == (50053, 100, 256)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("algo", "ppo", r"algo 'ppo' is not supported; use one of \['dqn', 'd4pg'\]"),
        ("replay_address", " ", "replay_address is empty"),
        ("publish_every_steps", 0, "publish_every_steps must be at least 1"),
        ("precisions", [], "precisions is empty"),
        ("precisions", ["fp16"], r"precisions \['fp16'\] unknown"),
        ("calibration_size", 0, "calibration_size must be at least 1"),
        ("checkpoint_every_s", 0.0, "checkpoint_every_s must be positive"),
        ("max_learner_steps", -1, "max_learner_steps must be >= 0"),
        ("torch_threads", 0, "torch_threads must be at least 1"),
        ("prefetch", 0, "prefetch must be at least 1"),
        ("batches_per_message", 0, r"batches_per_message must be in \[1, 64\]"),
        ("batches_per_message", 65, r"batches_per_message must be in \[1, 64\]"),
    ],
)
def test_config_refuses_values_that_cannot_work(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LearnerConfig(**{field: value})  # type: ignore[arg-type]


# -- checkpoints ----------------------------------------------------------------


def test_load_latest_of_an_empty_directory_is_none(tmp_path: Path) -> None:
    assert checkpoint.load_latest(tmp_path) is None
    assert checkpoint.load_latest(tmp_path / "missing") is None


def test_checkpoint_save_replaces_the_previous_one(tmp_path: Path) -> None:
    checkpoint.save(tmp_path, {"step": 1})
    checkpoint.save(tmp_path, {"step": 2})
    assert checkpoint.load_latest(tmp_path) == {"step": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["learner.pt"]


def test_a_failed_checkpoint_write_keeps_the_previous_one_and_no_temp_file(
    tmp_path: Path,
) -> None:
    checkpoint.save(tmp_path, {"step": 1})
    with pytest.raises(Exception):  # noqa: B017  (whatever torch.save raises for a lambda)
        checkpoint.save(tmp_path, {"step": 2, "bad": lambda: None})
    assert checkpoint.load_latest(tmp_path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["learner.pt"]


def test_an_unreadable_checkpoint_is_reported_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "learner.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match=r"learner\.pt cannot be read"):
        checkpoint.load_latest(tmp_path)


def train(learner: Learner, steps: int) -> None:
    for i in range(steps):
        learner.train_step(transitions(8, seed=i))


def test_checkpoint_holds_both_nets_optimizer_step_version_and_config(tmp_path: Path) -> None:
    learner = Learner(config(tmp_path), 4, 2)
    train(learner, 3)
    learner.save_checkpoint(published_version=2)
    state = checkpoint.load_latest(tmp_path / "ckpt")
    assert state is not None
    assert set(state["agent"]) == {"online", "target", "optimizer", "steps"}
    assert (state["learner_step"], state["published_version"]) == (3, 2)
    assert state["config"]["dqn"]["hidden_sizes"] == [16, 16]
    assert (learner.checkpoint_step, learner.last_checkpoint_unix > 0) == (3, True)


def test_learner_without_checkpoint_dir_writes_nothing(tmp_path: Path) -> None:
    learner = Learner(config(None), 4, 2)
    assert learner.save_checkpoint(published_version=1) is None


def test_restarted_learner_resumes_step_version_weights_and_optimizer(tmp_path: Path) -> None:
    first = Learner(config(tmp_path), 4, 2)
    train(first, 5)
    first.save_checkpoint(published_version=3)

    second = Learner(config(tmp_path, seed=42), 4, 2)  # another seed: weights must come from disk
    assert (second.steps, second.resumed_from_step, second.resumed_version) == (5, 5, 3)
    assert second.transitions_sampled == 40
    obs = torch.from_numpy(transitions(16, seed=99).obs)
    torch.testing.assert_close(first.agent.online(obs), second.agent.online(obs))
    torch.testing.assert_close(first.agent.target(obs), second.agent.target(obs))
    # Training continues identically: same Adam moments, same step count.
    batch = transitions(8, seed=100)
    assert first.train_step(batch) == second.train_step(batch)
    assert second.steps == 6
    for p, q in zip(first.agent.online.parameters(), second.agent.online.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_checkpoint_of_another_network_is_refused_naming_the_mismatch(tmp_path: Path) -> None:
    Learner(config(tmp_path), 4, 2).save_checkpoint(published_version=1)
    other = config(tmp_path, dqn=DQNConfig(hidden_sizes=[32, 16]))
    with pytest.raises(ConfigError, match=r"does not fit this config.*layers\.0\.weight"):
        Learner(other, 4, 2)


# -- calibration observations ------------------------------------------------------


def test_calibration_obs_are_none_before_the_first_batch() -> None:
    assert Learner(config(), 4, 2).calibration_obs() is None


def test_calibration_obs_are_the_newest_sampled_observations() -> None:
    learner = Learner(config(calibration_size=100), 4, 2)
    for i in range(3):
        learner.train_step(transitions(64, start=64 * i))
    calib = learner.calibration_obs()
    assert calib is not None and calib.shape == (100, 4) and calib.dtype == np.float32
    np.testing.assert_array_equal(calib[:, 0], np.arange(191, 91, -1))


def test_snapshot_copies_weights_and_calibration(tmp_path: Path) -> None:
    learner = Learner(config(), 4, 2)
    train(learner, 2)
    snap = learner.snapshot()
    train(learner, 1)
    assert snap.learner_step == 2
    assert not np.array_equal(
        snap.weights["layers.0.weight"], learner.agent.policy_weights()["layers.0.weight"]
    )


# -- publisher -------------------------------------------------------------------


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class RecordingQuantizer:
    """Stands in for QuantizerClient: records publishes; each waits for `gate`."""

    def __init__(self, served: int = 0) -> None:
        self.published: list[tuple[int, int]] = []
        self.gate = threading.Semaphore(0)
        self.entered = threading.Semaphore(0)
        self.failures: list[grpc.StatusCode] = []
        self.served = served

    def publish(self, *, policy_version: int, learner_step: int, **_: Any) -> None:
        self.entered.release()
        assert self.gate.acquire(timeout=10)
        if self.failures:
            raise FakeRpcError(self.failures.pop(0), "injected")
        if policy_version <= self.served:
            raise FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION, "stale version")
        self.served = policy_version
        self.published.append((policy_version, learner_step))

    def list_models(self) -> quantizer_pb2.ListModelsResponse:
        return quantizer_pb2.ListModelsResponse(
            artifacts=[common_pb2.ModelArtifact(version=self.served, precision="fp32")]
        )


def snap(step: int) -> Snapshot:
    return Snapshot(step, {"layers.0.weight": np.zeros((1, 1), np.float32)}, None)


def publisher_for(fake: RecordingQuantizer, version: int = 0) -> Publisher:
    client = cast(QuantizerClient, fake)  # duck-typed: publish() and list_models()
    pub = Publisher(client, common_pb2.NetworkSpec(kind="dqn_mlp"), ["fp32"], version)
    pub.start()
    return pub


def test_publisher_sends_only_the_newest_snapshot_after_the_one_in_flight() -> None:
    fake = RecordingQuantizer()
    pub = publisher_for(fake)
    pub.submit(snap(100))
    assert fake.entered.acquire(timeout=5)  # v1 is in flight and held
    started = time.perf_counter()
    for step in range(200, 1100, 100):
        pub.submit(snap(step))
    assert time.perf_counter() - started < 0.5  # the update loop never waits
    fake.gate.release(2)
    assert pub.wait_idle(timeout=5)
    assert fake.published == [(1, 100), (2, 1000)]
    assert pub.version == 2
    pub.stop()


def test_publisher_retries_the_newest_weights_after_an_outage() -> None:
    fake = RecordingQuantizer()
    fake.failures = [grpc.StatusCode.UNAVAILABLE]
    pub = publisher_for(fake)
    pub.submit(snap(100))
    fake.gate.release(2)
    assert pub.wait_idle(timeout=10)
    assert fake.published == [(1, 100)]
    assert (pub.version, pub.failures) == (1, 1)
    pub.stop()


def test_publisher_skips_weights_the_quantizer_refuses() -> None:
    fake = RecordingQuantizer()
    fake.failures = [grpc.StatusCode.INVALID_ARGUMENT]
    pub = publisher_for(fake)
    pub.submit(snap(100))
    fake.gate.release(1)
    assert pub.wait_idle(timeout=5)
    pub.submit(snap(200))
    fake.gate.release(1)
    assert pub.wait_idle(timeout=5)
    assert fake.published == [(1, 200)]
    assert pub.failures == 1
    pub.stop()


def test_publisher_moves_past_versions_the_quantizer_already_serves() -> None:
    fake = RecordingQuantizer(served=7)  # e.g. published after the checkpoint we resumed from
    pub = publisher_for(fake, version=3)
    pub.submit(snap(100))
    fake.gate.release(2)
    assert pub.wait_idle(timeout=10)
    assert fake.published == [(8, 100)]
    assert pub.version == 8
    pub.stop()


# -- steps/s ------------------------------------------------------------------------


def test_rate_meter_reports_the_rate_over_its_window() -> None:
    meter = RateMeter(window_s=10.0, resolution_s=0.0)
    for t in range(31):
        meter.add(100 * t, now=float(t))  # 100/s, then 30 s in
    assert meter.rate(3000, now=30.0) == pytest.approx(100.0)


def test_rate_meter_decays_to_zero_when_steps_stop() -> None:
    meter = RateMeter(window_s=10.0, resolution_s=0.0)
    for t in range(11):
        meter.add(100 * t, now=float(t))
    assert meter.rate(1000, now=15.0) == pytest.approx(500 / 10, rel=0.2)
    assert meter.rate(1000, now=25.0) == 0.0
