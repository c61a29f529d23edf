"""The learner's sampler against a real replay: batches ready ahead, but never many more
drawn than trained on (the replay's rate limiter counts a batch when it is drawn)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import ServiceProcess, start_service

from actorq.clients import PrefetchingSampler, ReplayClient
from actorq.rpc import channel
from actorq.transitions import Transitions


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplayClient]:
    tmp: Path = tmp_path_factory.mktemp("replay")
    svc: ServiceProcess = start_service(
        "replay", ["--capacity", "10000", "--min-size-to-sample", "1"], tmp
    )
    try:
        with channel(svc.address) as ch:
            replay = ReplayClient(ch)
            n = 2000
            obs = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
            replay.insert(
                [
                    Transitions(
                        obs=obs,
                        action=np.zeros(n, np.int64),
                        reward=np.zeros(n, np.float32),
                        discount=np.ones(n, np.float32),
                        next_obs=obs,
                    )
                ]
            )
            yield replay
    finally:
        svc.stop()


def test_a_slow_learner_has_few_batches_drawn_ahead_of_it(client: ReplayClient) -> None:
    before = client.stats().sample_batches
    sampler = PrefetchingSampler(client, batch_size=8, prefetch=2)
    try:
        taken = [sampler.next(timeout=10) for _ in range(3)]
        time.sleep(2.0)  # a slow update step: the prefetch thread must not run far ahead
        drawn = client.stats().sample_batches - before
    finally:
        sampler.close()
    assert len(taken) == 3
    # Two queued, two in the call in flight, one in the prefetch thread's hands.
    assert drawn <= len(taken) + 2 * 2 + 1, f"{drawn} batches drawn for {len(taken)} taken"


def test_the_sampler_keeps_delivering_across_calls(client: ReplayClient) -> None:
    sampler = PrefetchingSampler(client, batch_size=8, prefetch=2)
    try:
        batches = [sampler.next(timeout=10) for _ in range(9)]
    finally:
        sampler.close()
    assert all(len(b.transitions) == 8 for b in batches)
