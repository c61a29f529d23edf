"""How the actor's sender meets each failed Insert, against a sink that fails on cue.

The sink raises grpc.RpcError subclasses the way a ReplayClient does; the
same sender against a real replay is in test_actor_service.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import grpc
import pytest
from test_actor_runner import RecordingSink, config, policy, wait_for

from actorq.v1 import replay_pb2
from services.actor.runner import ActorRunner


class StatusError(grpc.RpcError):
    """A failed call as grpc raises it: a status code and details."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return f"{self._code.name.lower()} on cue"


class FailingSink(RecordingSink):
    """Fails its first Inserts with the given codes, then (unless ``fail``) records."""

    def __init__(self, codes: Sequence[grpc.StatusCode] = ()) -> None:
        super().__init__()
        self.codes = list(codes)
        self.fail = threading.Event()  # while set, every Insert fails UNAVAILABLE

    def insert_protos(
        self, chunks: Sequence[replay_pb2.TransitionChunk], timeout: float | None = None
    ) -> replay_pb2.InsertResponse:
        if self.fail.is_set():
            raise StatusError(grpc.StatusCode.UNAVAILABLE)
        if self.codes:
            raise StatusError(self.codes.pop(0))
        return super().insert_protos(chunks, timeout)


def run_to_end(sink: FailingSink, steps: int = 64) -> ActorRunner:
    runner = ActorRunner(config(max_env_steps=steps), sink, models=None)
    runner.set_policy(policy())
    runner.start()
    assert runner.wait_finished(30)
    return runner


def test_an_insert_held_past_its_deadline_is_sent_again_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = FailingSink([grpc.StatusCode.DEADLINE_EXCEEDED] * 2)
    runner = run_to_end(sink)
    runner.stop(flush_s=10)
    assert len(sink.transitions()) == 64
    assert runner.status().send_failures == 2
    # Backpressure from the replay's rate limiter, not an outage.
    assert "replay insert failed" not in caplog.text


def test_an_outage_is_retried_until_replay_answers_and_logged_once_each_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="services.actor")
    sink = FailingSink([grpc.StatusCode.UNAVAILABLE] * 3)
    runner = run_to_end(sink)
    # Stepping ended long before the replay answered (backoff 0.2 + 0.4 + 0.8 s).
    wait_for(lambda: runner.status().transitions_sent == 64)
    runner.stop(flush_s=10)
    assert len(sink.transitions()) == 64  # nothing lost, nothing sent twice
    assert caplog.text.count("replay insert failed (UNAVAILABLE: unavailable on cue)") == 1
    assert "replay reachable again after 3 failed inserts" in caplog.text
    assert runner.status().error == ""


def test_a_replay_gone_at_shutdown_ends_the_flush_without_waiting_it_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = FailingSink()
    runner = ActorRunner(config(chunk_size=10_000), sink, models=None)
    runner.set_policy(policy())
    runner.start()
    wait_for(lambda: runner.status().env_steps >= 100)
    sink.fail.set()
    started = time.monotonic()
    runner.stop(flush_s=60)
    assert time.monotonic() - started < 10
    assert sink.calls == []
    assert f"{runner.env_steps} transitions were not sent before shutdown" in caplog.text
