"""The actor's continuous-action path: D4PG policies, Gaussian exploration, float32
action chunks, greedy evaluation, and replay refusing actions of the wrong shape.

In-process runners use a recording sink (as test_actor_runner.py); the last
tests run real `actorq serve` replay, quantizer and actor processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import ServiceProcess
from test_actor_policy import cartpole_balancer
from test_actor_runner import RecordingSink

from actorq.clients import ActorClient, QuantizerClient, ReplayClient
from actorq.config import ConfigError
from actorq.rpc import channel
from actorq.transitions import Transitions
from actorq.v1 import common_pb2
from services.actor.config import ActorConfig
from services.actor.evaluate import evaluate
from services.actor.exploration import GaussianNoise, actor_sigma
from services.actor.policy import OnnxPolicy, PolicyError
from services.actor.runner import ActorRunner
from services.quantizer.graph import build_onnx, expected_tensors


def policy_spec(obs_dim: int, low: list[float], high: list[float]) -> common_pb2.NetworkSpec:
    return common_pb2.NetworkSpec(
        kind="d4pg_policy",
        obs_dim=obs_dim,
        hidden_sizes=[16],
        output_dim=len(low),
        activation="elu",
        action_low=low,
        action_high=high,
        layer_norm=True,
    )


def policy_weights(spec: common_pb2.NetworkSpec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: rng.uniform(-0.5, 0.5, shape).astype(np.float32)
        for name, shape in expected_tensors(spec).items()
    }


def pendulum_policy(version: int = 1, bias: float | None = None) -> OnnxPolicy:
    """A d4pg_policy for Pendulum-v1 (3 obs, 1 action in [-2, 2]); ``bias`` saturates it."""
    spec = policy_spec(3, [-2.0], [2.0])
    w = policy_weights(spec)
    if bias is not None:
        w["layers.1.weight"][:] = 0.0
        w["layers.1.bias"][:] = bias
    return OnnxPolicy(build_onnx(spec, w).SerializeToString(), version, "fp32")


def config(**kw: Any) -> ActorConfig:
    kw.setdefault("env", "Pendulum-v1")
    kw.setdefault("chunk_size", 50)
    return ActorConfig(**kw)


@pytest.fixture
def run_steps() -> Iterator[Callable[..., tuple[ActorRunner, Transitions]]]:
    """Call with (cfg, policy): runs cfg.max_env_steps steps, returns the runner and its data."""
    started: list[ActorRunner] = []

    def run(cfg: ActorConfig, first: OnnxPolicy) -> tuple[ActorRunner, Transitions]:
        sink = RecordingSink()
        runner = ActorRunner(cfg, sink, models=None)
        started.append(runner)
        runner.set_policy(first)
        runner.start()
        assert runner.wait_finished(60)
        runner.stop(flush_s=5.0)
        return runner, sink.transitions()

    yield run
    for runner in started:
        if runner.state == "running":
            runner.stop(flush_s=1.0)


# -------------------------------------------------------------- step loop


def test_continuous_actor_sends_float32_actions_of_the_env_width(
    run_steps: Callable[..., tuple[ActorRunner, Transitions]],
) -> None:
    runner, batch = run_steps(config(max_env_steps=200, noise_sigma=[0.3]), pendulum_policy())
    assert len(batch) == 200
    assert batch.action.dtype == np.float32 and batch.action.shape == (200, 1)
    assert batch.obs.shape == batch.next_obs.shape == (200, 3)
    status = runner.status()
    assert status.epsilon == 0.0
    assert status.breakdown.inference_us > 0 and status.breakdown.env_us > 0


def test_zero_noise_sends_the_policys_own_actions(
    run_steps: Callable[..., tuple[ActorRunner, Transitions]],
) -> None:
    policy = pendulum_policy()
    _, batch = run_steps(config(max_env_steps=100, noise_sigma=[0.0]), policy)
    np.testing.assert_allclose(batch.action, policy.actions(batch.obs), atol=1e-6)


def test_noisy_actions_spread_around_the_policy_and_stay_within_bounds(
    run_steps: Callable[..., tuple[ActorRunner, Transitions]],
) -> None:
    # The policy says 2 * tanh(0.5) ~ 0.92; sigma 0.5 of Pendulum's half range 2 is std 1.
    policy = pendulum_policy(bias=0.5)
    _, batch = run_steps(config(max_env_steps=600, noise_sigma=[0.5]), policy)
    assert batch.action.min() >= -2.0 and batch.action.max() <= 2.0
    assert (batch.action == 2.0).any()  # clipped, not wrapped or dropped
    inside = batch.action[(batch.action > -2.0) & (batch.action < 2.0)]
    assert 0.6 < inside.std() < 1.2
    assert abs(np.median(batch.action) - 2 * np.tanh(0.5)) < 0.2


def test_gaussian_noise_is_seeded_and_scaled_by_half_the_range() -> None:
    low, high = np.array([-1.0, 0.0], np.float32), np.array([1.0, 10.0], np.float32)
    draws = np.stack(
        [GaussianNoise(0.1, low, high, seed=3)(np.array([0.0, 5.0])) for _ in range(2)]
    )
    np.testing.assert_array_equal(draws[0], draws[1])
    noise = GaussianNoise(0.1, low, high, seed=4)
    samples = np.stack([noise(np.array([0.0, 5.0], np.float32)) for _ in range(4000)])
    np.testing.assert_allclose(samples.std(axis=0), [0.1, 0.5], rtol=0.1)
    assert samples.dtype == np.float32


def test_each_actor_takes_its_own_sigma_when_one_is_given_per_actor() -> None:
    assert actor_sigma([0.3], index=1, num_actors=3) == 0.3
    assert actor_sigma([0.1, 0.2, 0.4], index=2, num_actors=3) == 0.4
    runner = ActorRunner(
        config(num_actors=2, actor_index=1, noise_sigma=[0.1, 0.5]), RecordingSink(), models=None
    )
    assert runner.noise_sigma == 0.5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"num_actors": 2, "noise_sigma": [0.1, 0.2, 0.3]},
            "noise_sigma has 3 values for 2 actors",
        ),
        ({"noise_sigma": []}, "noise_sigma has 0 values"),
        ({"noise_sigma": [-0.1]}, "noise_sigma values must be finite and >= 0"),
    ],
)
def test_noise_sigma_that_cannot_work_is_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(**overrides)


def test_discrete_policy_for_a_continuous_env_is_refused_naming_both() -> None:
    runner = ActorRunner(config(), RecordingSink(), models=None)
    wrong = OnnxPolicy(cartpole_balancer(), 4, "fp32")
    with pytest.raises(
        PolicyError,
        match=r"model v4 maps 4 observations to 2 actions, but Pendulum-v1 has 3 "
        r"observations and 1-dim actions in \[-2, 2\]",
    ):
        runner.set_policy(wrong)
    assert runner.policy is None


def test_continuous_policy_of_another_action_width_is_refused() -> None:
    runner = ActorRunner(config(env="dmc:walker-walk"), RecordingSink(), models=None)
    spec = policy_spec(24, [-1.0] * 2, [1.0] * 2)
    wrong = OnnxPolicy(build_onnx(spec, policy_weights(spec)).SerializeToString(), 2, "int8")
    with pytest.raises(PolicyError, match=r"maps 24 observations to 2-dim actions, but "):
        runner.set_policy(wrong)


# -------------------------------------------------------------- evaluation


def test_greedy_evaluation_of_a_continuous_policy_is_deterministic() -> None:
    policy = pendulum_policy()
    first = evaluate(policy, "Pendulum-v1", episodes=2, seed=5)
    again = evaluate(policy, "Pendulum-v1", episodes=2, seed=5)
    assert first.episodes_run == 2 and first.returns == again.returns
    assert all(-2000.0 < r <= 0.0 for r in first.returns)


def test_greedy_evaluation_runs_dm_control_episodes_to_their_time_limit() -> None:
    spec = policy_spec(5, [-1.0], [1.0])
    policy = OnnxPolicy(build_onnx(spec, policy_weights(spec)).SerializeToString(), 1, "int8")
    result = evaluate(policy, "dmc:cartpole-balance", episodes=1, seed=0)
    assert 0.0 < result.mean <= 1000.0


# ------------------------------------------------------------ real services


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.1)


def test_actor_service_fills_replay_with_dm_control_transitions(
    service_factory: Callable[..., ServiceProcess],
) -> None:
    replay = service_factory("replay", ["--min-size-to-sample", "64"])
    quantizer = service_factory("quantizer", [])
    spec = policy_spec(5, [-1.0], [1.0])
    with channel(quantizer.address) as ch:
        QuantizerClient(ch).publish(
            policy_version=1, learner_step=0, network=spec, weights=policy_weights(spec)
        )
    actor = service_factory(
        "actor",
        [
            *("--env", "dmc:cartpole-balance", "--precision", "int8", "--noise-sigma", "0.3"),
            *("--replay-address", replay.address, "--quantizer-address", quantizer.address),
            *("--chunk-size", "32", "--n-step", "5"),
        ],
    )
    with channel(actor.address) as ach, channel(replay.address) as rch:
        status = ActorClient(ach).status
        wait_for(lambda: status().transitions_sent >= 128, "128 transitions sent")
        assert status().state == "running" and status().model_version == 1
        sampled = next(iter(ReplayClient(rch).sample_stream(64, num_batches=1)))
    action = sampled.transitions.action
    assert action.dtype == np.float32 and action.shape == (64, 1)
    assert np.abs(action).max() <= 1.0
    assert sampled.transitions.obs.shape == (64, 5)
    assert "Gaussian noise sigma 0.3" in actor.log()


def test_replay_refuses_actions_of_another_shape_and_keeps_serving(
    service_factory: Callable[..., ServiceProcess],
) -> None:
    replay = service_factory("replay", [])

    def chunk(n: int, action_dim: int) -> Transitions:
        rng = np.random.default_rng(n)
        return Transitions(
            obs=rng.standard_normal((n, 5)).astype(np.float32),
            action=rng.uniform(-1, 1, (n, action_dim)).astype(np.float32),
            reward=np.ones(n, np.float32),
            discount=np.full(n, 0.99, np.float32),
            next_obs=rng.standard_normal((n, 5)).astype(np.float32),
        )

    with channel(replay.address) as ch:
        client = ReplayClient(ch)
        client.insert([chunk(8, 1)], actor_id="actor-0")
        with pytest.raises(grpc.RpcError) as info:
            client.insert([chunk(4, 1), chunk(4, 2)], actor_id="actor-1")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "action" in (info.value.details() or "")
        assert client.stats().size == 8  # neither chunk of the refused stream is stored
        client.insert([chunk(4, 1)], actor_id="actor-1")
        assert client.stats().size == 12
