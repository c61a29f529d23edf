"""The evaluator evaluates one policy version in both precisions (the final evaluation
needs the twin of the version that reached the target), also when the quantizer serves a
newer version between its two fetches. A real `actorq serve quantizer` process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import ServiceProcess, start_service

from actorq.clients import FetchedModel, QuantizerClient
from actorq.rpc import channel
from actorq.v1 import common_pb2
from commands.train.evaluator import fetch_pair
from services.quantizer.bench import torch_like_weights

SPEC = common_pb2.NetworkSpec(
    kind="dqn_mlp", obs_dim=4, hidden_sizes=[32, 32], output_dim=2, activation="relu"
)


class RacingClient(QuantizerClient):
    """A real client that runs ``after_first`` (a publish) right after its first fetch
    returns: a newer version served between the evaluator's fetches, every time."""

    def __init__(self, ch: Any, after_first: Callable[[], object] | None = None) -> None:
        super().__init__(ch)
        self.after_first = after_first
        self.fetched: list[tuple[str, int | None]] = []

    def fetch(
        self, precision: str, newer_than: int = 0, wait_s: float = 0.0, timeout: float | None = None
    ) -> FetchedModel | None:
        got = super().fetch(precision, newer_than, wait_s, timeout)
        self.fetched.append((precision, int(got.artifact.version) if got else None))
        if self.after_first is not None:
            step, self.after_first = self.after_first, None
            step()
        return got


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    svc: ServiceProcess = start_service("quantizer", [], tmp_path_factory.mktemp("quantizer"))
    yield svc.address
    svc.stop()


def publish(address: str, version: int, **kw: Any) -> None:
    with channel(address) as ch:
        QuantizerClient(ch).publish(
            policy_version=version,
            learner_step=10 * version,
            network=SPEC,
            weights=torch_like_weights(SPEC, version),
            **kw,
        )


def test_a_version_served_between_the_fetches_moves_the_pair_to_it(address: str) -> None:
    publish(address, 1)
    with channel(address) as ch:
        client = RacingClient(ch, after_first=lambda: publish(address, 2))
        pair = fetch_pair(client, "int8", 0, 0.0)
    assert pair is not None
    fetched, twins = pair
    # The race happened: int8 came at version 1, then version 2 was served.
    assert client.fetched[0] == ("int8", 1)
    assert int(fetched.artifact.version) == 2 and fetched.artifact.precision == "int8"
    assert set(twins) == {"fp32"}
    assert int(twins["fp32"].artifact.version) == 2 and twins["fp32"].artifact.precision == "fp32"


def test_a_version_built_in_one_precision_comes_without_a_twin(address: str) -> None:
    with channel(address) as ch:
        client = QuantizerClient(ch)
        newest = max(a.version for a in client.list_models().artifacts)
        publish(address, newest + 1, precisions=["int8"])
        pair = fetch_pair(client, "int8", 0, 0.0)
    assert pair is not None
    fetched, twins = pair
    assert int(fetched.artifact.version) == newest + 1 and twins == {}


def test_nothing_newer_is_none(address: str) -> None:
    with channel(address) as ch:
        client = QuantizerClient(ch)
        newest = max(a.version for a in client.list_models().artifacts)
        assert fetch_pair(client, "int8", newest, 0.0) is None
