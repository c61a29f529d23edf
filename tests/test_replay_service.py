"""The replay as a real `actorq serve replay` process, spoken to over gRPC.

Most tests share one module-scoped server (a process per test would dominate
the run time); each reads the size before it acts, so they do not depend on
their order. Every refused call is checked for its status code, a message
naming the problem, an unchanged size, and that the service still serves.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
from conftest import ROOT, ServiceProcess, start_service

from actorq.clients import PrefetchingSampler, ReplayClient, split_batches
from actorq.rpc import CHANNEL_OPTIONS, MAX_MESSAGE_BYTES, channel
from actorq.transitions import Transitions
from actorq.v1 import replay_pb2, replay_pb2_grpc

MAX_INSERT = 1_000


def transitions(n: int, start: float = 0.0, obs_dim: int = 4) -> Transitions:
    """n CartPole-like transitions; obs[:, 0] counts up from start."""
    obs = np.zeros((n, obs_dim), np.float32)
    obs[:, 0] = start + np.arange(n, dtype=np.float32)
    return Transitions(
        obs=obs,
        action=np.arange(n, dtype=np.int64) % 2,
        reward=np.ones(n, np.float32),
        discount=np.full(n, 0.99, np.float32),
        next_obs=obs + 1,
    )


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    svc = start_service(
        "replay",
        [
            *("--capacity", "10000", "--min-size-to-sample", "1"),
            *("--max-insert-transitions", str(MAX_INSERT)),
        ],
        tmp_path_factory.mktemp("replay"),
    )
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def client(replay: ServiceProcess) -> Iterator[ReplayClient]:
    with channel(replay.address) as ch:
        yield ReplayClient(ch)


@pytest.fixture
def size(client: ReplayClient) -> int:
    """The size now, after making sure the table's signature (obs dim 4) is fixed."""
    return int(client.insert([transitions(1)], actor_id="fixture").size)


def assert_refused(
    call: Callable[[], object], code: grpc.StatusCode, words: str, client: ReplayClient, size: int
) -> None:
    """The call fails with code and a message containing words; nothing was stored."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code, info.value.details()
    assert words in (info.value.details() or ""), info.value.details()
    assert client.stats().size == size
    assert client.insert([transitions(2)]).size == size + 2  # still serving


# -- inserting, sampling, stats ------------------------------------------------------------


def test_insert_commits_all_chunks_and_reports_the_size(client: ReplayClient, size: int) -> None:
    resp = client.insert([transitions(64), transitions(64)], actor_id="actor-7")
    assert (resp.chunks, resp.transitions, resp.size) == (2, 128, size + 128)


def test_stats_report_counts_settings_and_actors(client: ReplayClient, size: int) -> None:
    before = client.stats()
    client.insert([transitions(5)], actor_id="actor-stats")
    stats = client.stats()
    assert stats.inserted == before.inserted + 5
    assert stats.insert_calls == before.insert_calls + 1
    assert (stats.capacity, stats.min_size_to_sample, stats.store) == (10_000, 1, "memory")
    assert stats.inserted_by_actor["actor-stats"] == 5
    assert abs(stats.actor_last_seen_unix["actor-stats"] - time.time()) < 30


def test_a_prefetching_sample_stream_draws_no_more_than_the_asked_batches(
    client: ReplayClient, size: int
) -> None:
    # Each stream draws sample_prefetch (default 4) batches at a time, but never past
    # num_batches: the table counts exactly what was asked for.
    before = client.stats()
    assert len(list(client.sample_stream(batch_size=16, num_batches=5))) == 5
    after = client.stats()
    assert after.sample_batches - before.sample_batches == 5
    assert after.sampled - before.sampled == 5 * 16


def test_sample_stream_sends_the_asked_number_of_batches(client: ReplayClient, size: int) -> None:
    batches = list(client.sample_stream(batch_size=32, num_batches=3))
    assert len(batches) == 3
    for batch in batches:
        assert len(batch.transitions) == 32
        assert batch.transitions.obs.dtype == np.float32
        assert batch.transitions.obs.shape == (32, 4)
        assert batch.transitions.action.dtype == np.int64
        assert batch.keys.dtype == np.int64 and (batch.weights == 1).all()
        # Stored rows come back intact: next_obs = obs + 1 for every row inserted.
        np.testing.assert_array_equal(batch.transitions.next_obs, batch.transitions.obs + 1)


def test_batches_packed_several_to_a_message_arrive_whole_and_one_by_one(
    client: ReplayClient, replay: ServiceProcess, size: int
) -> None:
    with channel(replay.address) as ch:
        stub = replay_pb2_grpc.ReplayServiceStub(ch)
        request = replay_pb2.SampleRequest(batch_size=16, num_batches=10, batches_per_message=4)
        messages = list(stub.Sample(request))
    assert sum(m.batch_count for m in messages) == 10  # what was asked, in fewer messages
    assert len(messages) < 10 and all(1 <= m.batch_count <= 4 for m in messages)
    assert all(len(split_batches(m)) == m.batch_count for m in messages)
    before = client.stats()
    batches = list(client.sample_stream(batch_size=16, num_batches=10, per_message=4))
    assert client.stats().sample_batches - before.sample_batches == 10
    assert [len(b.transitions) for b in batches] == [16] * 10
    for batch in batches:
        assert len(batch.keys) == len(batch.weights) == 16
        np.testing.assert_array_equal(batch.transitions.next_obs, batch.transitions.obs + 1)
    sampler = PrefetchingSampler(client, batch_size=16, prefetch=8, per_message=4)
    try:
        assert all(len(sampler.next(timeout=10).keys) == 16 for _ in range(20))
    finally:
        sampler.close()


@pytest.mark.parametrize("per_message", [-1, 65, 2**31 - 1])
def test_a_batches_per_message_out_of_range_is_refused(
    client: ReplayClient, size: int, per_message: int
) -> None:
    # The fuzzer found it: 2**31 - 1 batches of one row drawn at once took the replay down.
    assert_refused(
        lambda: list(client.sample_stream(batch_size=1, num_batches=0, per_message=per_message)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "batches_per_message in [0, 64]",
        client,
        size,
    )


def test_prefetching_sampler_delivers_batches_and_closes_promptly(
    client: ReplayClient, size: int
) -> None:
    before = client.stats().sample_batches
    sampler = PrefetchingSampler(client, batch_size=16, prefetch=2)
    try:
        batches = [sampler.next(timeout=10) for _ in range(5)]
    finally:
        started = time.monotonic()
        sampler.close()
    assert time.monotonic() - started < 2.0
    assert all(len(b.transitions) == 16 for b in batches)
    assert client.stats().sample_batches >= before + 5


# -- refused inserts -----------------------------------------------------------------------


def _bad(field: str, value: np.ndarray) -> Transitions:
    t = transitions(8)
    setattr(t, field, value)
    return t


@pytest.mark.parametrize(
    "chunk, words",
    [
        (_bad("obs", np.zeros((8, 4), np.float64)), "chunk 0: obs is float64, expected float32"),
        (_bad("reward", np.zeros((8, 2), np.float32)), "chunk 0: reward has shape [8, 2]"),
        (_bad("action", np.zeros(7, np.int64)), "action has shape [7] but obs has 8 rows"),
        (_bad("next_obs", np.full((8, 4), np.nan, np.float32)), "next_obs contains NaN"),
        (_bad("discount", np.full(8, 1.5, np.float32)), "discount must be in [0, 1]"),
        (transitions(8, obs_dim=6), "obs is float32 with per-transition shape [6]"),
    ],
    ids=["dtype", "shape", "mismatched-n", "nan", "discount", "signature"],
)
def test_invalid_chunk_is_refused_naming_the_problem(
    client: ReplayClient, size: int, chunk: Transitions, words: str
) -> None:
    assert_refused(
        lambda: client.insert([chunk]), grpc.StatusCode.INVALID_ARGUMENT, words, client, size
    )


def test_a_bad_chunk_in_the_middle_of_a_stream_stores_nothing(
    client: ReplayClient, size: int
) -> None:
    chunks = [transitions(8), _bad("reward", np.full(8, np.inf, np.float32)), transitions(8)]
    assert_refused(
        lambda: client.insert(chunks),
        grpc.StatusCode.INVALID_ARGUMENT,
        "chunk 1: reward contains NaN or infinity",
        client,
        size,
    )


def test_a_missing_tensor_is_refused(client: ReplayClient, size: int) -> None:
    msg = transitions(4).to_proto()
    msg.ClearField("discount")
    assert_refused(
        lambda: client.insert_protos([msg]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "discount missing",
        client,
        size,
    )


def test_a_tensor_whose_bytes_do_not_match_its_shape_is_refused(
    client: ReplayClient, size: int
) -> None:
    msg = transitions(4).to_proto()
    msg.action.data = msg.action.data[:-8]
    assert_refused(
        lambda: client.insert_protos([msg]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "chunk 0: action: tensor 'action': 24 bytes of data",
        client,
        size,
    )


def test_an_empty_insert_stream_is_refused(client: ReplayClient, size: int) -> None:
    assert_refused(
        lambda: client.insert_protos([]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "no chunks",
        client,
        size,
    )


def test_too_many_transitions_in_one_stream_is_resource_exhausted(
    client: ReplayClient, size: int
) -> None:
    chunks = [transitions(400)] * 3  # 1200 > MAX_INSERT
    assert_refused(
        lambda: client.insert(chunks),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"more than max_insert_transitions {MAX_INSERT}",
        client,
        size,
    )


def test_a_message_over_16_mib_is_refused_by_grpc(
    replay: ServiceProcess, client: ReplayClient, size: int
) -> None:
    n = MAX_MESSAGE_BYTES // (2 * 4 * 4) + 1  # obs + next_obs alone exceed the limit
    big = transitions(n).to_proto()
    # A channel allowed to send more than the server takes: the refusal is the server's.
    options = [(k, v) for k, v in CHANNEL_OPTIONS if k != "grpc.max_send_message_length"]
    options.append(("grpc.max_send_message_length", 4 * MAX_MESSAGE_BYTES))
    with grpc.insecure_channel(replay.address, options=options) as ch:
        stub = replay_pb2_grpc.ReplayServiceStub(ch)
        assert_refused(
            lambda: stub.Insert(iter([big]), timeout=30),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "larger than max",
            client,
            size,
        )


# -- refused samples and priority updates --------------------------------------------------


def test_a_zero_batch_size_is_refused(client: ReplayClient, size: int) -> None:
    assert_refused(
        lambda: list(client.sample_stream(batch_size=0, num_batches=1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "batch_size must be >= 1",
        client,
        size,
    )


def test_a_batch_over_the_message_limit_is_resource_exhausted(
    client: ReplayClient, size: int
) -> None:
    assert_refused(
        lambda: list(client.sample_stream(batch_size=1_000_000, num_batches=1)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "use batch_size <=",
        client,
        size,
    )


def test_update_priorities_with_uniform_sampling_is_failed_precondition(
    client: ReplayClient, size: int
) -> None:
    assert_refused(
        lambda: client.update_priorities(np.array([0], np.int64), np.ones(1, np.float32)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "prioritized sampler",
        client,
        size,
    )


def test_refused_calls_are_counted(client: ReplayClient, size: int) -> None:
    before = client.stats().rejected_calls
    with pytest.raises(grpc.RpcError):
        client.insert([_bad("obs", np.zeros((8, 4), np.float64))])
    assert client.stats().rejected_calls == before + 1


# -- waiting on the rate limiter -------------------------------------------------------------


def _blocked_growth(client: ReplayClient) -> tuple[float, float]:
    """Growth of insert and sample blocked seconds over 0.2 s (> 0: someone is waiting)."""
    a = client.stats()
    time.sleep(0.2)
    b = client.stats()
    return (
        b.insert_blocked_s - a.insert_blocked_s,
        b.sample_blocked_s - a.sample_blocked_s,
    )


def _nobody_waits_within(client: ReplayClient, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _blocked_growth(client) == (0.0, 0.0):
            return True
    return False


def test_a_cancelled_sample_stream_stops_waiting_at_once(
    service_factory: Callable[..., ServiceProcess],
) -> None:
    svc = service_factory("replay", ["--min-size-to-sample", "1000"])
    with channel(svc.address) as ch:
        client = ReplayClient(ch)
        stream = client.sample_stream(batch_size=8)
        time.sleep(0.3)
        assert _blocked_growth(client)[1] > 0.1  # the stream waits for min size
        stream.cancel()
        assert _nobody_waits_within(client, 1.0)
        assert client.insert([transitions(3)]).size == 3


def test_an_insert_held_by_the_ratio_times_out_and_stores_nothing(
    service_factory: Callable[..., ServiceProcess],
) -> None:
    svc = service_factory(
        "replay",
        ["--min-size-to-sample", "1", "--samples-per-insert", "1", "--error-buffer", "8"],
    )
    with channel(svc.address) as ch:
        client = ReplayClient(ch)
        client.insert([transitions(20)])  # admitted, 11 past the band: inserts now wait
        with pytest.raises(grpc.RpcError) as info:
            client.insert([transitions(1)], timeout=0.5)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert _nobody_waits_within(client, 1.0)  # the server gave up too
        assert client.stats().size == 20
        list(client.sample_stream(batch_size=12, num_batches=1))  # the learner catches up
        assert client.insert([transitions(1)], timeout=5).size == 21
        assert client.stats().insert_blocked_s > 0.2


def test_a_deadlock_prone_config_stops_the_service_with_the_fix() -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "commands.cli", "serve", "replay", "--port", "0"),
            *("--samples-per-insert", "16", "--error-buffer", "4"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "error_buffer >= max(1, samples_per_insert) = 16" in result.stderr
