"""Prometheus metrics: every service serves them on ACTORQ_METRICS_PORT; the learner
counts the actors replay heard from recently."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import numpy as np
import pytest
from conftest import ServiceProcess, free_port
from prometheus_client.parser import text_string_to_metric_families

from actorq import metrics
from actorq.clients import ReplayClient
from actorq.rpc import channel
from actorq.transitions import Transitions
from services.learner.actors import ActorCounter


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one /metrics page."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def chunk(n: int) -> Transitions:
    obs = np.zeros((n, 4), np.float32)
    return Transitions(
        obs=obs,
        action=np.zeros(n, np.int64),
        reward=np.ones(n, np.float32),
        discount=np.full(n, 0.99, np.float32),
        next_obs=obs,
    )


def test_replay_serves_its_size_and_per_actor_inserts_as_prometheus_metrics(
    service_factory: Callable[..., ServiceProcess],
) -> None:
    port = free_port()
    replay = service_factory("replay", env={metrics.METRICS_PORT_ENV: str(port)})
    with channel(replay.address) as ch:
        ReplayClient(ch).insert([chunk(5)], actor_id="actor-a")
        ReplayClient(ch).insert([chunk(3)], actor_id="actor-b")
    page = scrape(port)
    assert page[("actorq_replay_size", ())] == 8
    assert page[("actorq_replay_inserted_transitions_total", ())] == 8
    assert page[("actorq_replay_actor_inserted_transitions_total", (("actor_id", "actor-a"),))] == 5
    assert page[("actorq_replay_capacity", ())] > 0


def test_quantizer_serves_versions_built(service_factory: Callable[..., ServiceProcess]) -> None:
    port = free_port()
    service_factory("quantizer", env={metrics.METRICS_PORT_ENV: str(port)})
    assert scrape(port)[("actorq_quantizer_versions_built_total", ())] == 0


def test_metrics_are_off_by_default() -> None:
    assert metrics.port_from_env({}) == 0
    assert metrics.serve_from_env("replay", lambda: [], env={}) is None


def bound_host(env: dict[str, str]) -> str:
    """Where serve_from_env listens with env (on a free port, then left running):
    'loopback' if only 127.0.0.1 answers, 'all' if 127.0.0.2 does too (on Linux all
    of 127/8 is loopback, but a socket bound to 127.0.0.1 answers only there)."""
    import socket

    port = free_port()
    metrics.serve_from_env("replay", lambda: [], env={metrics.METRICS_PORT_ENV: str(port), **env})
    answers = []
    for host in ("127.0.0.1", "127.0.0.2"):
        with socket.socket() as s:
            s.settimeout(1)
            answers.append(s.connect_ex((host, port)) == 0)
    assert answers[0], "nothing listens on 127.0.0.1"
    return "all" if answers[1] else "loopback"


def test_metrics_listen_on_loopback_unless_a_host_is_given() -> None:
    assert bound_host({}) == "loopback"
    assert metrics.DEFAULT_METRICS_HOST == "127.0.0.1"


def test_metrics_listen_where_actorq_metrics_host_says() -> None:
    assert bound_host({metrics.METRICS_HOST_ENV: "0.0.0.0"}) == "all"


def test_a_bad_metrics_port_is_refused_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="ACTORQ_METRICS_PORT='x' is not a port"):
        metrics.port_from_env({metrics.METRICS_PORT_ENV: "x"})


def test_counters_and_labelled_gauges_render_in_the_exposition_format() -> None:
    registry = metrics.registry_for(
        lambda: [
            metrics.Sample("thing_total", "things", 3, "counter"),
            metrics.Sample("speed", "speed", 1.5, labels={"actor_id": "a"}),
            metrics.Sample("speed", "speed", 2.5, labels={"actor_id": "b"}),
        ]
    )
    assert registry.get_sample_value("actorq_thing_total") == 3
    assert registry.get_sample_value("actorq_speed", {"actor_id": "b"}) == 2.5


def test_a_failing_reader_yields_no_metrics_instead_of_an_error() -> None:
    def broken() -> list[metrics.Sample]:
        raise RuntimeError("status unavailable")

    assert metrics.registry_for(broken).get_sample_value("actorq_thing_total") is None


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_an_actor_counts_while_its_inserts_grow_and_stops_counting_after_the_window() -> None:
    clock = FakeClock()
    counter = ActorCounter(window_s=10, clock=clock)
    counter.observe({"a": 5, "b": 7})  # the baseline: who still inserts is not known yet
    assert counter.active() == []
    clock.t = 1
    counter.observe({"a": 6, "b": 8})
    assert counter.active() == ["a", "b"]
    clock.t = 8
    counter.observe({"a": 9, "b": 8})  # b inserted nothing since t=1
    clock.t = 12
    assert counter.active() == ["a"]
    clock.t = 19
    counter.observe({"a": 10, "b": 8, "c": 1})  # c is new: it inserted since t=8
    assert counter.active() == ["a", "c"]
    clock.t = 30
    assert counter.active() == []


def test_a_restarted_learner_counts_only_the_actors_still_inserting() -> None:
    """Replay (in Redis) remembers five actors of which two still run: a learner started
    mid-run counted all five for a whole window, until they aged out."""
    clock = FakeClock()
    counter = ActorCounter(window_s=15, clock=clock)
    remembered = {f"actor-{i}": 1000 for i in range(5)}
    counter.observe(remembered)
    clock.t = 1
    counter.observe({**remembered, "actor-0": 1010, "actor-3": 1020})
    assert counter.active() == ["actor-0", "actor-3"]


def test_an_actor_counts_again_when_a_restarted_replay_counts_from_zero() -> None:
    clock = FakeClock()
    counter = ActorCounter(window_s=10, clock=clock)
    counter.observe({"a": 500})
    clock.t = 1
    counter.observe({"a": 510})
    clock.t = 30  # a memory replay restarted empty; the actor inserted 20 since
    counter.observe({"a": 20})
    assert counter.active() == ["a"]
