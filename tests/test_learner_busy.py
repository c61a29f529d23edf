"""The learner backs off from a busy replay or quantizer (all slots of a method in use)
instead of failing: the same as from an outage."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import grpc
import pytest
from test_actor_sender import BusyError, StatusError

from services.learner.loop import LearnerFailure, TrainingLoop
from services.learner.publisher import refused, worth_retrying


def check(err: grpc.RpcError) -> None:
    loop = SimpleNamespace(cfg=SimpleNamespace(replay_address="replay:50051", batch_size=32))
    TrainingLoop._check_sample_error(cast(Any, loop), err)


def test_a_busy_replay_is_retried_by_the_sampler_not_a_failure() -> None:
    check(BusyError())  # no LearnerFailure: the loop backs off and samples again
    with pytest.raises(LearnerFailure, match="refuses to sample batches of 32"):
        check(StatusError(grpc.StatusCode.RESOURCE_EXHAUSTED))  # too big: no retry helps


def test_a_busy_quantizer_is_retried_by_the_publisher_and_not_counted_as_refused() -> None:
    assert worth_retrying(BusyError()) and not refused(BusyError())
    assert refused(StatusError(grpc.StatusCode.OUT_OF_RANGE))
