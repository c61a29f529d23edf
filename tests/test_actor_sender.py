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
from test_actor_policy import cartpole_balancer
from test_actor_runner import RecordingSink, config, policy, wait_for

from actorq.clients import FetchedModel
from actorq.retry import BUSY_METADATA
from actorq.v1 import common_pb2, replay_pb2
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
    caplog.set_level(logging.INFO, logger="services.actor")
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
    # The run is ending: the replay stopping too is no error.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class BusyError(StatusError):
    """RESOURCE_EXHAUSTED with the replay's busy marker (actorq.limits)."""

    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.RESOURCE_EXHAUSTED)

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return (BUSY_METADATA,)


class BusySink(FailingSink):
    """Refuses its first ``busy`` Inserts as a full replay does."""

    def __init__(self, busy: int) -> None:
        super().__init__()
        self.busy = busy

    def insert_protos(
        self, chunks: Sequence[replay_pb2.TransitionChunk], timeout: float | None = None
    ) -> replay_pb2.InsertResponse:
        if self.busy:
            self.busy -= 1
            raise BusyError()
        return super().insert_protos(chunks, timeout)


def test_a_busy_replay_is_backed_off_from_and_the_same_chunks_resent() -> None:
    sink = BusySink(busy=2)
    runner = run_to_end(sink)
    wait_for(lambda: runner.status().transitions_sent == 64)
    runner.stop(flush_s=10)
    assert len(sink.transitions()) == 64  # none dropped, none sent twice
    assert runner.status().send_failures == 2


class HoldingSink(FailingSink):
    """Holds every Insert until its deadline (at most 0.2 s), as a rate limiter that
    the learner never relieves does."""

    def insert_protos(
        self, chunks: Sequence[replay_pb2.TransitionChunk], timeout: float | None = None
    ) -> replay_pb2.InsertResponse:
        time.sleep(min(timeout or 0.2, 0.2))
        raise StatusError(grpc.StatusCode.DEADLINE_EXCEEDED)


def test_inserts_held_by_the_limiter_through_the_flush_end_with_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="services.actor")
    sink = HoldingSink()
    runner = run_to_end(sink)
    runner.stop(flush_s=0.5)
    assert "transitions were not sent before shutdown (the replay's rate limiter" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


class BusyModels:
    """A quantizer whose GetModel slots are all taken for the first ``busy`` polls."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.polls = 0

    def fetch(
        self, precision: str, newer_than: int = 0, wait_s: float = 0.0, timeout: float | None = None
    ) -> FetchedModel | None:
        self.polls += 1
        if self.busy:
            self.busy -= 1
            raise BusyError()
        if newer_than >= 1:
            time.sleep(0.05)
            return None
        artifact = common_pb2.ModelArtifact(version=1, precision="fp32")
        return FetchedModel(artifact, cartpole_balancer())


def test_a_busy_quantizer_is_backed_off_from_and_polled_again() -> None:
    models = BusyModels(busy=2)
    runner = ActorRunner(config(precision="fp32"), FailingSink(), models)
    runner.start()
    wait_for(lambda: runner.policy is not None and runner.policy.version == 1)
    runner.stop(flush_s=1)
    assert models.polls >= 3
