"""What a replay refuses to let one caller do: unbounded allocations, half-stored
streams, duplicates after resends, rewards or layouts that poison the table.

The service tests speak raw bytes where a well-behaved client never would (a
broken message mid-stream, a message over the limit, a stream without its
commit marker) and check that nothing of such a stream is stored.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import ServiceProcess, start_service
from test_replay_core import chunk, table

from actorq.clients import COMMIT, ReplayClient
from actorq.retry import is_busy
from actorq.rpc import MAX_MESSAGE_BYTES, channel
from actorq.transitions import Transitions
from actorq.v1 import replay_pb2
from commands.train.args import TrainArgs
from commands.train.configs import resolve_run
from services.replay.config import ReplayConfig
from services.replay.errors import BatchTooLargeError, InvalidChunkError
from services.replay.factory import build_table
from services.replay.resends import SenderMarks, check_marks
from services.replay.store import SignatureError

INSERT = "/actorq.v1.ReplayService/Insert"
MAX_INSERT_BYTES = 64 * 1024
BUFFERED_BYTES = 3 * MAX_INSERT_BYTES


# --- in the table, no network ---------------------------------------------------


def test_a_reward_beyond_max_abs_reward_is_refused_naming_the_row() -> None:
    t = build_table(ReplayConfig(min_size_to_sample=1, max_abs_reward=100.0))
    columns = chunk(4)
    columns["reward"][2] = 1e30  # finite, but it would drive the loss to ~1e28
    with pytest.raises(InvalidChunkError, match=r"reward 1e\+30 \(row 2\).*max_abs_reward 100"):
        t.insert([columns])
    assert t.stats().size == 0


def test_a_configured_layout_refuses_a_first_insert_of_another_shape() -> None:
    t = build_table(ReplayConfig(min_size_to_sample=1, obs_dim=4, action_dim=0))
    with pytest.raises(SignatureError, match="obs is float32 with per-transition shape \\[3\\]"):
        t.insert([chunk(2, obs_dim=3)])  # the first caller does not get to choose
    assert t.insert([chunk(2, obs_dim=4)]) == 2


def test_a_configured_layout_bounds_a_batch_before_anything_is_stored() -> None:
    # 4-dim obs: 48-byte transitions + 12 bytes of key and weight per row.
    t = build_table(ReplayConfig(obs_dim=4, action_dim=0), max_batch_bytes=60 * 100)
    with pytest.raises(BatchTooLargeError, match="use batch_size <= 100"):
        t.sample(101, timeout=0.1)


def test_a_batch_that_could_not_fit_even_the_smallest_rows_is_refused_on_an_empty_table() -> None:
    t = table(max_batch_bytes=MAX_MESSAGE_BYTES)
    with pytest.raises(BatchTooLargeError, match="at the least"):
        t.sample(2**31 - 1, timeout=0.1)
    assert t.stats().rejected_calls == 1


def marks(*sequences: int, session: int = 7, actor: str = "actor-0") -> SenderMarks:
    return check_marks([actor] * len(sequences), [session] * len(sequences), list(sequences))


def test_a_resend_of_committed_chunks_is_acknowledged_and_not_stored_again() -> None:
    t = table()
    first = t.insert_stream([chunk(3), chunk(5)], marks(1, 2))
    again = t.insert_stream([chunk(3), chunk(5)], marks(1, 2))
    assert (first.stored, first.duplicates) == (8, 0)
    assert (again.stored, again.duplicates, again.size) == (0, 8, 8)


def test_a_resend_that_overlaps_a_commit_stores_only_the_chunks_after_it() -> None:
    t = table()
    t.insert_stream([chunk(2, start=0), chunk(2, start=2)], marks(1, 2))
    done = t.insert_stream(
        [chunk(2, start=0), chunk(2, start=2), chunk(2, start=4)], marks(1, 2, 3)
    )
    assert (done.stored, done.duplicates, done.size) == (2, 4, 6)
    stored = t.store.gather(np.arange(6))["obs"][:, 0]
    np.testing.assert_array_equal(stored, [0, 1, 2, 3, 4, 5])


def test_a_restarted_actor_with_a_new_session_starts_afresh() -> None:
    t = table()
    t.insert_stream([chunk(2)], marks(1, session=1))
    assert t.insert_stream([chunk(2)], marks(1, session=2)).stored == 2


@pytest.mark.parametrize(
    ("actors", "sessions", "sequences", "words"),
    [
        (["a", "b"], [1, 1], [1, 2], "differ from the stream's first"),
        (["a", "a"], [1, 2], [1, 2], "differ from the stream's first"),
        (["a", "a"], [1, 1], [2, 2], "does not follow 2"),
        (["a"], [0], [3], "a sequence but no session"),
        ([""], [5], [1], "a session but no actor_id"),
        (["x" * 200], [0], [0], "at most 128"),
    ],
)
def test_resend_marks_that_break_the_rules_are_refused(
    actors: list[str], sessions: list[int], sequences: list[int], words: str
) -> None:
    with pytest.raises(InvalidChunkError, match=words):
        check_marks(actors, sessions, sequences)


# --- a real replay process --------------------------------------------------------


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    svc = start_service(
        "replay",
        [
            *("--capacity", "100000", "--min-size-to-sample", "1"),
            *("--max-insert-bytes", str(MAX_INSERT_BYTES)),
            *("--max-buffered-insert-bytes", str(BUFFERED_BYTES)),
        ],
        tmp_path_factory.mktemp("replay"),
    )
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def client(replay: ServiceProcess) -> Iterator[ReplayClient]:
    with channel(replay.address) as ch:
        yield ReplayClient(ch)


def transitions(n: int, start: float = 0.0) -> Transitions:
    return Transitions(**chunk(n, start))  # type: ignore[arg-type]


def numbered(n: int, sequence: int, session: int = 99, actor: str = "resender") -> bytes:
    msg = transitions(n, start=100 * sequence).to_proto(actor)
    msg.sequence, msg.session = sequence, session
    return msg.SerializeToString()


def raw_insert(address: str, messages: list[bytes], max_send: int = MAX_MESSAGE_BYTES) -> bytes:
    """An Insert stream of raw messages (no commit marker unless among them)."""
    options = [("grpc.max_send_message_length", max_send)]
    with grpc.insecure_channel(address, options=options) as ch:
        call = ch.stream_unary(INSERT, lambda b: b, lambda b: b)
        return call(iter(messages), timeout=10)  # type: ignore[no-any-return]


def refused(call: object, code: grpc.StatusCode) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    assert info.value.code() == code, info.value.details()
    return info.value


def size(client: ReplayClient) -> int:
    return int(client.stats().size)


def test_garbage_bytes_mid_stream_store_nothing_of_the_stream(
    replay: ServiceProcess, client: ReplayClient
) -> None:
    before = size(client)
    good = transitions(4).to_proto("garbage").SerializeToString()
    err = refused(
        lambda: raw_insert(replay.address, [good, good, b"\xff\xfe\xfd", good]),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "not a valid message" in str(err.details())
    assert size(client) == before
    assert "Traceback" not in replay.log()  # one warning line, no traceback


def test_an_oversized_message_mid_stream_stores_nothing_of_the_stream(
    replay: ServiceProcess, client: ReplayClient
) -> None:
    before = size(client)
    good = transitions(4).to_proto("oversized").SerializeToString()
    huge = transitions(1).to_proto("oversized")
    huge.obs.data = b"\0" * (MAX_MESSAGE_BYTES + 1)
    refused(
        lambda: raw_insert(
            replay.address,
            [good, good, huge.SerializeToString(), COMMIT.SerializeToString()],
            max_send=4 * MAX_MESSAGE_BYTES,
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    time.sleep(0.2)
    assert size(client) == before
    assert replay.alive()


def test_a_stream_without_its_commit_marker_stores_nothing(
    replay: ServiceProcess, client: ReplayClient
) -> None:
    before = size(client)
    good = transitions(4).to_proto("unmarked").SerializeToString()
    err = refused(
        lambda: raw_insert(replay.address, [good, good]), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "without its commit marker" in str(err.details())
    assert size(client) == before


def test_a_resend_after_a_cut_stream_stores_each_transition_once(
    replay: ServiceProcess, client: ReplayClient
) -> None:
    before = size(client)
    commit = COMMIT.SerializeToString()
    # Cut before its marker: nothing stored.
    refused(
        lambda: raw_insert(replay.address, [numbered(4, 1), numbered(4, 2)]),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert size(client) == before
    # Stored, but say the reply was lost: the sender resends, with one chunk more.
    raw_insert(replay.address, [numbered(4, 1), numbered(4, 2), commit])
    resent = replay_pb2.InsertResponse.FromString(
        raw_insert(replay.address, [numbered(4, 1), numbered(4, 2), numbered(4, 3), commit])
    )
    assert (resent.transitions, resent.duplicates) == (12, 8)
    assert size(client) == before + 12
    assert client.stats().inserted_by_actor["resender"] == 12


def test_an_insert_past_max_insert_bytes_is_refused_before_it_is_buffered(
    replay: ServiceProcess, client: ReplayClient
) -> None:
    before = size(client)
    per_chunk = len(transitions(256).to_proto("big").SerializeToString())
    count = MAX_INSERT_BYTES // per_chunk + 2
    err = refused(
        lambda: client.insert([transitions(256)] * count, actor_id="big"),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert f"max_insert_bytes {MAX_INSERT_BYTES}" in str(err.details())
    assert not is_busy(err)  # too big, not busy: the sender splits, never retries as is
    assert size(client) == before


def test_streams_past_the_shared_insert_buffer_are_refused_busy(
    replay: ServiceProcess, client: ReplayClient
) -> None:
    """Open streams that hold (almost) max_insert_bytes each fill the shared buffer; the
    next is told to back off, and nothing of it is stored."""
    before = size(client)
    piece = transitions(256).to_proto("holder")
    per_stream = (MAX_INSERT_BYTES // piece.ByteSize()) * piece.ByteSize()
    holders = BUFFERED_BYTES // per_stream
    release = []
    with channel(replay.address) as ch:
        stub = ReplayClient(ch)._stub

        def held(n: int) -> Iterator[replay_pb2.TransitionChunk]:
            import threading

            gate = threading.Event()
            release.append(gate)
            for _ in range(n):
                yield piece
            gate.wait(20)

        calls = [stub.Insert.future(held(per_stream // piece.ByteSize())) for _ in range(holders)]
        time.sleep(1.0)
        err = refused(
            lambda: client.insert([transitions(256)] * 4, actor_id="late"),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        assert is_busy(err), err.details()
        for gate in release:
            gate.set()
        for call in calls:
            with pytest.raises(grpc.RpcError):  # ended without a marker
                call.result(timeout=20)
    assert size(client) == before
    assert client.insert([transitions(256)] * 4, actor_id="late").size == before + 1024


@pytest.mark.parametrize("batch_size", [2**31 - 1, 2**26])
def test_a_sample_that_could_never_fit_a_message_is_refused_before_any_draw(
    replay: ServiceProcess, client: ReplayClient, batch_size: int
) -> None:
    client.insert([transitions(8)], actor_id="sampled")
    rss_before = rss_mib(replay.pid)
    err = refused(
        lambda: list(client.sample_stream(batch_size, num_batches=1)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert "exceeds the" in str(err.details())
    assert rss_mib(replay.pid) - rss_before < 20


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@pytest.mark.parametrize(("env", "layout"), [("CartPole-v1", (4, 0)), ("Pendulum-v1", (3, 1))])
def test_actorq_train_fixes_the_tables_layout_from_the_env(
    env: str, layout: tuple[int, int], tmp_path: Path
) -> None:
    plan = resolve_run(TrainArgs(env=env), tmp_path / "run")
    assert (plan.replay.obs_dim, plan.replay.action_dim) == layout
