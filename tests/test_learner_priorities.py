"""The learner's priority write-back: each update's |TD error| + eps goes to the
replay as new priorities, from a background writer that never blocks the
update step, merges what waits, and drops (and counts) the oldest when the
replay falls behind. The replay here is a real gRPC server in this process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from actorq.clients import ReplayClient
from actorq.rpc import channel
from actorq.transitions import SampledBatch, Transitions
from commands.procs import free_port
from services.learner.config import LearnerConfig
from services.learner.hyperparams import DQNConfig
from services.learner.learner import Learner
from services.learner.priorities import PriorityWriter
from services.replay.config import ReplayConfig
from services.replay.sampler import PrioritizedSampler
from services.replay.server import build_server
from services.replay.table import ReplayTable

ALPHA = 0.6


def transitions(n: int, seed: int = 0) -> Transitions:
    rng = np.random.default_rng(seed)
    return Transitions(
        obs=rng.normal(size=(n, 4)).astype(np.float32),
        action=rng.integers(0, 2, n).astype(np.int64),
        reward=np.ones(n, np.float32),
        discount=np.full(n, 0.97, np.float32),
        next_obs=rng.normal(size=(n, 4)).astype(np.float32),
    )


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


@pytest.fixture
def replay(request: pytest.FixtureRequest) -> Iterator[tuple[ReplayClient, ReplayTable]]:
    """An in-process replay server (sampler from the test's param) holding 100 items."""
    cfg = ReplayConfig(
        port=0, capacity=100, min_size_to_sample=1, sampler=request.param, priority_exponent=ALPHA
    )
    server, _, table, port = build_server(cfg)
    server.start()
    assert isinstance(table, ReplayTable)
    with channel(f"127.0.0.1:{port}") as ch:
        client = ReplayClient(ch)
        client.insert([transitions(100)])
        yield client, table
    server.stop(None)
    table.close()


def leaves(table: ReplayTable, keys: list[int]) -> np.ndarray:
    sampler = table.sampler
    assert isinstance(sampler, PrioritizedSampler)
    return sampler.tree.leaves(np.asarray(keys) % sampler.capacity)


# -- the learner's part -----------------------------------------------------------


def learner() -> Learner:
    return Learner(LearnerConfig(dqn=DQNConfig(hidden_sizes=[16], batch_size=8)), 4, 2)


def test_a_sampled_batch_yields_its_keys_with_td_error_plus_epsilon() -> None:
    lr = learner()
    keys = np.arange(10, 18, dtype=np.int64)
    lr.train_step(SampledBatch(transitions(8), keys, np.ones(8, np.float32)))
    assert lr.new_priorities is not None
    got_keys, priorities = lr.new_priorities
    td = lr.agent.last_td_abs
    assert td is not None
    np.testing.assert_array_equal(got_keys, keys)
    np.testing.assert_allclose(priorities, td + lr.cfg.priority_epsilon, rtol=1e-6)
    assert (priorities > 0).all()


def test_a_batch_without_keys_yields_no_priorities() -> None:
    lr = learner()
    lr.train_step(transitions(8))
    assert lr.new_priorities is None


# -- the writer -----------------------------------------------------------------------


@pytest.mark.parametrize("replay", ["prioritized"], indirect=True)
def test_written_priorities_reach_the_replays_sum_tree(
    replay: tuple[ReplayClient, ReplayTable],
) -> None:
    client, table = replay
    writer = PriorityWriter(client)
    writer.start()
    try:
        writer.submit(np.array([3, 4], np.int64), np.array([2.0, 0.5], np.float32))
        assert writer.wait_idle(10)
    finally:
        writer.stop()
    np.testing.assert_allclose(
        leaves(table, [3, 4, 5]), [2.0**ALPHA, 0.5**ALPHA, 1.0]
    )  # 5 untouched
    assert writer.sent == 2 and writer.dropped == 0


@pytest.mark.parametrize("replay", ["prioritized"], indirect=True)
def test_a_key_submitted_twice_ends_with_its_newest_priority(
    replay: tuple[ReplayClient, ReplayTable],
) -> None:
    client, table = replay
    writer = PriorityWriter(client)
    writer.start()
    try:
        writer.submit(np.array([7, 8], np.int64), np.array([3.0, 1.0], np.float32))
        writer.submit(np.array([7], np.int64), np.array([0.25], np.float32))
        assert writer.wait_idle(10)
    finally:
        writer.stop()
    np.testing.assert_allclose(leaves(table, [7, 8]), [0.25**ALPHA, 1.0])


@pytest.mark.parametrize("replay", ["uniform"], indirect=True)
def test_a_uniform_replay_turns_the_writer_off_without_failing(
    replay: tuple[ReplayClient, ReplayTable],
) -> None:
    client, _ = replay
    writer = PriorityWriter(client)
    writer.start()
    try:
        writer.submit(np.array([1], np.int64), np.array([1.0], np.float32))
        assert wait_until(lambda: not writer.enabled)
        writer.submit(np.array([2], np.int64), np.array([1.0], np.float32))
        assert writer.pending == 0 and writer.sent == 0 and writer.failures == 0
    finally:
        writer.stop()


def test_an_unreachable_replay_never_blocks_submit_and_drops_the_oldest_counted() -> None:
    with channel(f"127.0.0.1:{free_port()}") as ch:  # nothing listens there
        writer = PriorityWriter(ReplayClient(ch), max_pending=256, timeout_s=0.5)
        writer.start()
        try:
            started = time.perf_counter()
            for i in range(10):
                keys = np.arange(64 * i, 64 * (i + 1), dtype=np.int64)
                writer.submit(keys, np.ones(64, np.float32))
            assert time.perf_counter() - started < 0.1
            # Everything is either still waiting (at most max_pending) or dropped.
            assert wait_until(lambda: writer.dropped + writer.pending == 640)
            assert writer.pending <= 256 and writer.dropped >= 640 - 256
            assert writer.sent == 0
        finally:
            writer.stop(timeout=1.0)


@pytest.mark.parametrize("replay", ["prioritized"], indirect=True)
def test_priorities_the_replay_refuses_are_dropped_and_counted_then_sending_goes_on(
    replay: tuple[ReplayClient, ReplayTable],
) -> None:
    client, table = replay
    writer = PriorityWriter(client)
    writer.start()
    try:
        writer.submit(np.array([1, 2], np.int64), np.array([np.inf, 1.0], np.float32))
        assert writer.wait_idle(10)
        writer.submit(np.array([3], np.int64), np.array([2.0], np.float32))
        assert writer.wait_idle(10)
    finally:
        writer.stop()
    assert (writer.dropped, writer.failures, writer.sent) == (2, 1, 1)
    np.testing.assert_allclose(leaves(table, [3]), [2.0**ALPHA])
