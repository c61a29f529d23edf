"""The actor's step loop, sender and policy swap, run in-process against a plain sink.

The sink stands in for the replay's Insert (it records what it receives);
the same runner against real services is in test_actor_service.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from test_actor_policy import cartpole_balancer, mlp_onnx, random_layers

from actorq.config import ConfigError
from actorq.transitions import Transitions
from actorq.v1 import replay_pb2
from services.actor.config import ActorConfig
from services.actor.policy import OnnxPolicy, PolicyError
from services.actor.runner import ActorRunner

GAMMA = 0.9


class RecordingSink:
    """Accepts every Insert and keeps the chunks; ``gate`` (when given) holds calls back."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[list[replay_pb2.TransitionChunk]] = []
        self.gate = gate

    def insert_protos(
        self, chunks: Sequence[replay_pb2.TransitionChunk], timeout: float | None = None
    ) -> replay_pb2.InsertResponse:
        if self.gate is not None:
            self.gate.wait()
        self.calls.append(list(chunks))
        return replay_pb2.InsertResponse(chunks=len(chunks))

    @property
    def chunks(self) -> list[replay_pb2.TransitionChunk]:
        return [c for call in self.calls for c in call]

    def transitions(self) -> Transitions:
        parts = [Transitions.from_proto(c) for c in self.chunks]
        return Transitions(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in Transitions.__annotations__)
        )


def config(**kw: Any) -> ActorConfig:
    kw.setdefault("gamma", GAMMA)
    kw.setdefault("chunk_size", 32)
    kw.setdefault("eps_decay_steps", 100)
    return ActorConfig(**kw)


def policy(version: int = 1) -> OnnxPolicy:
    return OnnxPolicy(cartpole_balancer(), version, "fp32")


@pytest.fixture
def start_runner() -> Iterator[Callable[..., ActorRunner]]:
    """Call with (cfg, sink, policy=...) to start a runner; all are stopped afterwards."""
    started: list[ActorRunner] = []

    def start(
        cfg: ActorConfig, sink: RecordingSink, first: OnnxPolicy | None = None
    ) -> ActorRunner:
        runner = ActorRunner(cfg, sink, models=None)
        if first is not None:
            runner.set_policy(first)
        runner.start()
        started.append(runner)
        return runner

    yield start
    for runner in started:
        runner.stop(flush_s=2.0)


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_every_env_step_reaches_the_sink_as_one_transition(
    start_runner: Callable[..., ActorRunner],
) -> None:
    sink = RecordingSink()
    runner = start_runner(config(max_env_steps=300), sink, policy())
    assert runner.wait_finished(30)
    runner.stop()
    batch = sink.transitions()
    assert len(batch) == 300 == runner.status().transitions_sent
    assert [len(Transitions.from_proto(c)) for c in sink.chunks] == [32] * 9 + [12]


def test_chunks_carry_actor_id_policy_version_and_wire_dtypes(
    start_runner: Callable[..., ActorRunner],
) -> None:
    sink = RecordingSink()
    runner = start_runner(config(max_env_steps=64, actor_index=1, num_actors=2), sink, policy(7))
    assert runner.wait_finished(30)
    runner.stop()
    assert {(c.actor_id, c.policy_version) for c in sink.chunks} == {("actor-1", 7)}
    batch = sink.transitions()
    assert (batch.obs.dtype, batch.action.dtype, batch.reward.dtype, batch.discount.dtype) == (
        np.float32,
        np.int64,
        np.float32,
        np.float32,
    )
    assert batch.obs.shape == batch.next_obs.shape == (64, 4)


def test_cartpole_transitions_hold_n_step_returns_and_discounts(
    start_runner: Callable[..., ActorRunner],
) -> None:
    sink = RecordingSink()
    runner = start_runner(config(max_env_steps=400, n_step=3), sink, policy())
    assert runner.wait_finished(30)
    runner.stop()
    batch = sink.transitions()
    # CartPole pays 1 per step: a k-step window returns 1 + g + ... + g^(k-1) and
    # discounts g^k, or 0 when the pole fell inside it.
    returns = {k: sum(GAMMA**j for j in range(k)) for k in (1, 2, 3)}
    for reward, discount in zip(batch.reward, batch.discount, strict=True):
        k = next(k for k, r in returns.items() if abs(r - reward) < 1e-5)
        assert discount == pytest.approx(0.0) or discount == pytest.approx(GAMMA**k)
    assert np.isclose(batch.reward, returns[3]).mean() > 0.9


def test_step_loop_waits_for_the_first_model(start_runner: Callable[..., ActorRunner]) -> None:
    runner = start_runner(config(), RecordingSink())
    time.sleep(0.3)
    status = runner.status()
    assert (status.state, status.env_steps, status.model_version) == ("waiting_for_model", 0, 0)
    runner.set_policy(policy(3))
    wait_for(lambda: runner.status().env_steps > 0)
    assert runner.status().state == "running"


def test_random_until_model_steps_at_once_and_the_first_model_takes_over(
    start_runner: Callable[..., ActorRunner],
) -> None:
    sink = RecordingSink()
    runner = start_runner(config(chunk_size=16, random_until_model=True), sink)
    wait_for(lambda: len(sink.chunks) >= 2)
    assert runner.status().model_version == 0
    assert {c.policy_version for c in sink.chunks} == {0}
    runner.set_policy(policy(1))
    wait_for(lambda: sink.chunks[-1].policy_version == 1)
    assert runner.status().model_version == 1


def test_a_new_policy_is_used_from_the_next_chunk_on(
    start_runner: Callable[..., ActorRunner],
) -> None:
    sink = RecordingSink()
    runner = start_runner(config(chunk_size=16), sink, policy(1))
    wait_for(lambda: len(sink.chunks) >= 2)
    runner.set_policy(policy(2))
    wait_for(lambda: sink.chunks[-1].policy_version == 2)
    versions = [c.policy_version for c in sink.chunks]
    assert versions == sorted(versions)
    assert runner.status().model_version == 2


def test_a_full_send_queue_holds_the_step_loop_back(
    start_runner: Callable[..., ActorRunner],
) -> None:
    gate = threading.Event()
    sink = RecordingSink(gate)
    cfg = config(chunk_size=8, max_pending_chunks=2, max_chunks_per_insert=1, max_env_steps=500)
    runner = start_runner(cfg, sink, policy())
    wait_for(lambda: runner.status().pending_chunks == 3)  # 2 queued + 1 in the blocked insert
    time.sleep(0.3)
    held = runner.status().env_steps
    time.sleep(0.3)
    # Stepping stopped with 2 chunks queued, 1 in flight, 1 waiting to be queued
    # and the n-step windows still open; nothing was dropped.
    assert runner.status().env_steps == held <= 4 * 8 + cfg.n_step
    gate.set()
    assert runner.wait_finished(30)
    runner.stop()
    assert len(sink.transitions()) == 500


def test_stop_sends_the_partly_filled_chunk(start_runner: Callable[..., ActorRunner]) -> None:
    sink = RecordingSink()
    runner = start_runner(config(chunk_size=10_000), sink, policy())
    wait_for(lambda: runner.status().env_steps >= 100)
    runner.stop()
    assert sink.chunks, "the partial chunk was not sent"
    assert len(sink.transitions()) == runner.env_steps


def test_status_breaks_a_step_down_and_reports_progress(
    start_runner: Callable[..., ActorRunner],
) -> None:
    runner = start_runner(config(eps_decay_steps=50), RecordingSink(), policy(5))
    wait_for(lambda: runner.status().episodes >= 2)
    time.sleep(0.3)
    status = runner.status()
    assert status.actor_id == "actor-0" and status.precision == "int8"
    assert status.env == "CartPole-v1" and status.state == "running"
    assert status.breakdown.env_us > 0 and status.breakdown.inference_us > 0
    assert status.breakdown.other_us > 0
    assert status.env_steps_per_s > 0
    assert status.epsilon == pytest.approx(0.05)
    assert status.mean_episode_return > 0
    assert (status.model_version, status.model_bytes) == (5, len(cartpole_balancer()))


def test_same_seed_gives_the_same_transitions(start_runner: Callable[..., ActorRunner]) -> None:
    sinks = [RecordingSink(), RecordingSink(), RecordingSink()]
    for sink, index in zip(sinks, (0, 0, 1), strict=True):
        cfg = config(max_env_steps=200, seed=3, actor_index=index, num_actors=2)
        runner = start_runner(cfg, sink, policy())
        assert runner.wait_finished(30)
        runner.stop()  # the sender may still hold the last chunks: stop() flushes them
    first, again, other = (s.transitions() for s in sinks)
    np.testing.assert_array_equal(first.obs, again.obs)
    np.testing.assert_array_equal(first.action, again.action)
    assert not np.array_equal(first.obs, other.obs)


def test_a_policy_for_another_env_is_refused_and_the_old_one_kept() -> None:
    runner = ActorRunner(config(), RecordingSink(), models=None)
    runner.set_policy(policy(1))
    wrong = OnnxPolicy(mlp_onnx(random_layers([8, 3])), 2, "fp32")
    with pytest.raises(PolicyError, match="CartPole-v1 has 4 and 2"):
        runner.set_policy(wrong)
    assert runner.policy is not None and runner.policy.version == 1


def test_apex_alpha_gives_each_actor_its_own_final_epsilon() -> None:
    cfg = config(num_actors=4, actor_index=3, eps_final=0.4, apex_alpha=7.0)
    runner = ActorRunner(cfg, RecordingSink(), models=None)
    assert runner.epsilon_schedule.final == pytest.approx(0.4**8)


def test_unknown_env_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"'NoSuchEnv-v0'.*pprint_registry"):
        ActorRunner(config(env="NoSuchEnv-v0"), RecordingSink(), models=None)


def test_env_without_box_observations_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'Blackjack-v1' has observation space Tuple"):
        ActorRunner(config(env="Blackjack-v1"), RecordingSink(), models=None)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("precision", "int4", "precision 'int4' is not supported"),
        ("actor_index", 2, "actor_index 2 is outside 0..1"),
        ("n_step", 0, "n_step must be at least 1"),
        ("gamma", 1.5, "gamma must be in"),
        ("eps_final", -0.1, "eps_final must be in"),
        ("chunk_size", 0, "chunk_size must be at least 1"),
        ("replay_address", "nowhere", "replay_address 'nowhere' is not host:port"),
    ],
)
def test_bad_config_values_are_refused_with_a_sentence(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config(num_actors=2, **{field: value})


def test_chunk_too_big_for_one_message_is_refused() -> None:
    with pytest.raises(ConfigError, match="chunk_size 1000000"):
        ActorRunner(config(chunk_size=1_000_000), RecordingSink(), models=None)
