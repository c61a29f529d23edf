"""A Sample stream's prefetcher: the replay's draws run ahead on actorq.workers.Prefetcher."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from actorq.v1 import replay_pb2
from services.replay.config import ReplayConfig
from services.replay.errors import WaitAbandonedError
from services.replay.factory import build_table
from services.replay.server import prefetched_batches
from services.replay.table import Table


def chunk(n: int) -> dict[str, np.ndarray]:
    obs = np.zeros((n, 4), np.float32)
    obs[:, 0] = np.arange(n, dtype=np.float32)
    return {
        "obs": obs,
        "action": np.zeros(n, np.int64),
        "reward": np.ones(n, np.float32),
        "discount": np.full(n, 0.99, np.float32),
        "next_obs": obs + 1,
    }


def table(**settings: object) -> Table:
    return build_table(ReplayConfig(capacity=1_000, **settings))  # type: ignore[arg-type]


def request(batch_size: int, num_batches: int = 0) -> replay_pb2.SampleRequest:
    return replay_pb2.SampleRequest(batch_size=batch_size, num_batches=num_batches)


def prefetch_threads() -> int:
    return sum(t.name == "sample-prefetch" for t in threading.enumerate())


def test_a_stream_draws_two_groups_of_sample_prefetch_batches_ahead() -> None:
    t = table(min_size_to_sample=1)
    t.insert([chunk(100)])
    batches = prefetched_batches(t, request(4), lambda: True, depth=2)
    try:
        deadline = time.monotonic() + 5
        while t.stats().sample_batches < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # room to draw more, were it not held back
        assert t.stats().sample_batches == 4  # a group of 2 queued, the next one waiting
        assert list(batches.next(timeout=5).keys.shape) == [4]
    finally:
        batches.close()


def test_a_stream_of_num_batches_ends_after_them() -> None:
    t = table(min_size_to_sample=1)
    t.insert([chunk(100)])
    batches = prefetched_batches(t, request(4, num_batches=3), lambda: True, depth=2)
    try:
        assert len(list(batches)) == 3
        assert t.stats().sample_batches == 3
    finally:
        batches.close()


def test_closing_a_stream_wakes_its_draw_waiting_on_the_limiter() -> None:
    t = table(min_size_to_sample=10)  # empty: the draw waits
    before = prefetch_threads()
    batches = prefetched_batches(t, request(4), lambda: True, depth=2)
    time.sleep(0.2)
    started = time.monotonic()
    batches.close()
    assert time.monotonic() - started < 1.0
    assert prefetch_threads() == before


def test_a_refused_draw_ends_the_stream_with_the_tables_error() -> None:
    t = table(min_size_to_sample=1, samples_per_insert=1.0, error_buffer=8.0)
    batches = prefetched_batches(t, request(100), lambda: True, depth=2)
    try:
        with pytest.raises(ValueError, match="could deadlock"):
            batches.next(timeout=5)
        with pytest.raises(EOFError):
            batches.next(timeout=5)
    finally:
        batches.close()


def test_a_caller_that_goes_away_ends_the_stream_as_abandoned() -> None:
    t = table(min_size_to_sample=10)
    alive = threading.Event()
    alive.set()
    batches = prefetched_batches(t, request(4), alive.is_set, depth=2)
    try:
        alive.clear()
        t.wake()  # what the servicer's RPC-done callback does
        with pytest.raises(WaitAbandonedError):
            batches.next(timeout=5)
    finally:
        batches.close()
