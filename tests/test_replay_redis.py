"""The Redis table in-process, against a real redis-server started by the test.

Covers what only the Redis store has: state that outlives the table object
and the Redis process (AOF), several tables (replicas) on one Redis acting
as one, a Redis that goes away and comes back, and passwords kept out of
every message. The gRPC-level versions (real replay processes) are in
test_replay_redis_service.py.
"""

from __future__ import annotations

import random
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from redis_server import RedisServer

from actorq.config import ConfigError
from services.replay.config import ReplayConfig
from services.replay.errors import (
    RedisRefusedError,
    StoreUnavailableError,
    TableMismatchError,
    WaitTimeoutError,
)
from services.replay.factory import build_table
from services.replay.rate_limiter import SampleToInsertRatio
from services.replay.redis_connection import hmget_command
from services.replay.redis_lua import SLOT_FORMAT
from services.replay.redis_table import RedisTable
from services.replay.store import SignatureError, redact_url

MakeTable = Callable[..., RedisTable]


def chunk(n: int, start: float = 0.0, obs_dim: int = 4) -> dict[str, np.ndarray]:
    """n CartPole-like transitions; obs[:, 0] counts up from start."""
    obs = np.zeros((n, obs_dim), np.float32)
    obs[:, 0] = start + np.arange(n, dtype=np.float32)
    return {
        "obs": obs,
        "action": np.arange(n, dtype=np.int64) % 2,
        "reward": np.ones(n, np.float32),
        "discount": np.full(n, 0.99, np.float32),
        "next_obs": obs + 1,
    }


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One Redis for the tests that do not stop it (each uses its own table)."""
    with RedisServer.start(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis this test may stop, kill and restart."""
    with RedisServer.start(tmp_path / "redis", appendfsync="always") as server:
        yield server


def factory(url: str) -> Iterator[MakeTable]:
    made: list[RedisTable] = []
    name = uuid.uuid4().hex[:12]

    def make(**overrides: object) -> RedisTable:
        """A table (a replica) on url; calls of one factory share one table name."""
        settings: dict[str, object] = {
            "capacity": 1_000,
            "min_size_to_sample": 1,
            "store": url,
            "table": name,
            "redis_poll_s": 0.005,
            "redis_timeout_s": 2.0,
            **overrides,
        }
        table = build_table(ReplayConfig(**settings))  # type: ignore[arg-type]
        assert isinstance(table, RedisTable)
        made.append(table)
        return table

    yield make
    for table in made:
        table.close()


@pytest.fixture
def make_table(shared_redis: RedisServer) -> Iterator[MakeTable]:
    yield from factory(shared_redis.url)


@pytest.fixture
def make_own(own_redis: RedisServer) -> Iterator[MakeTable]:
    yield from factory(own_redis.url)


def in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())
        except Exception as err:
            out.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


# -- the table lives in Redis ---------------------------------------------------------------


def test_a_commit_is_stored_whole_and_read_back_intact(make_table: MakeTable) -> None:
    table = make_table()
    assert table.insert([chunk(3, start=0), chunk(5, start=3)], actor_id="a") == 8
    batch = table.sample(100)
    np.testing.assert_array_equal(batch.columns["obs"][:, 0], batch.keys)
    assert batch.columns["action"].dtype == np.int64
    actions = np.concatenate([np.arange(3) % 2, np.arange(5) % 2])
    np.testing.assert_array_equal(batch.columns["action"], actions[batch.keys])
    stats = table.stats()
    assert (stats.size, stats.inserted, stats.insert_calls, stats.sampled) == (8, 8, 1, 100)
    assert stats.inserted_by_actor == {"a": 8}


def test_the_ring_evicts_oldest_first_with_atari_sized_rows(make_table: MakeTable) -> None:
    # 2 x 84 x 84 float32 + small fields: 56 KiB rows.
    table = make_table(capacity=40, max_insert_transitions=40)
    for i in range(5):
        table.insert([chunk(13, start=13 * i, obs_dim=84 * 84)])
    stats = table.stats()
    assert (stats.size, stats.evicted) == (40, 25)
    batch = table.sample(200)
    assert batch.keys.min() >= 25 and batch.keys.max() < 65
    np.testing.assert_array_equal(batch.columns["obs"][:, 0], batch.keys)
    np.testing.assert_array_equal(batch.columns["next_obs"], batch.columns["obs"] + 1)


def test_continuous_actions_round_trip(make_table: MakeTable) -> None:
    table = make_table()
    c = chunk(4)
    c["action"] = np.arange(8, dtype=np.float32).reshape(4, 2)
    table.insert([c])
    batch = table.sample(16)
    np.testing.assert_array_equal(batch.columns["action"][:, 0], 2 * batch.keys)


def test_a_new_table_object_sees_everything_an_earlier_one_stored(make_table: MakeTable) -> None:
    first = make_table()
    first.insert([chunk(10)], actor_id="x")
    first.close()
    second = make_table()
    stats = second.stats()
    assert (stats.size, stats.inserted_by_actor) == (10, {"x": 10})
    assert second.insert([chunk(1, start=10)]) == 11  # keys continue where they were


def test_the_signature_fixed_by_one_replica_binds_the_others(make_table: MakeTable) -> None:
    a, b = make_table(), make_table()
    a.insert([chunk(2, obs_dim=4)])
    with pytest.raises(SignatureError, match=r"obs is float32 with per-transition shape \[6\]"):
        b.insert([chunk(2, obs_dim=6)])
    assert b.size == 2 and b.stats().rejected_calls == 1


def test_a_replica_with_other_settings_is_refused(make_table: MakeTable) -> None:
    make_table(capacity=1_000).attach()
    other = make_table(capacity=2_000)
    with pytest.raises(TableMismatchError, match="capacity=1000.*another --table"):
        other.attach()
    with pytest.raises(TableMismatchError):
        other.insert([chunk(1)])


# -- replicas: two tables on one Redis are one table ---------------------------------------------


def test_concurrent_commits_through_two_replicas_make_one_consistent_table(
    make_table: MakeTable,
) -> None:
    replicas = [make_table(capacity=5_000, max_insert_transitions=64) for _ in range(2)]
    per_thread = 40

    def actor(table: RedisTable, actor_id: int) -> None:
        for i in range(per_thread):
            start = (actor_id * per_thread + i) * 64
            table.insert([chunk(64, start=start)], actor_id=f"actor-{actor_id}")

    threads = [in_thread(lambda r=r, i=i: actor(replicas[r], i)) for i, r in enumerate([0, 1] * 2)]
    for thread, _ in threads:
        thread.join(30)
    assert [out for _, out in threads] == [[None]] * 4
    stats = replicas[1].stats()
    assert (stats.size, stats.evicted, stats.insert_calls) == (
        5_000,
        4 * per_thread * 64 - 5_000,
        160,
    )
    assert stats.inserted_by_actor == {f"actor-{i}": per_thread * 64 for i in range(4)}
    batch = replicas[0].sample(2_000)
    assert batch.keys.min() >= 4 * per_thread * 64 - 5_000
    # Commits never interleave: the 64 keys of a commit hold the 64 rows of one
    # chunk (the same chunk, rows in order).
    rows = batch.columns["obs"][:, 0].astype(np.int64)
    assert (rows % 64 == batch.keys % 64).all()
    block_origin = np.unique(np.stack([batch.keys // 64, rows // 64]), axis=1)
    assert block_origin.shape[1] == np.unique(batch.keys // 64).size


def test_an_insert_held_by_the_ratio_in_one_replica_is_released_by_sampling_in_another(
    make_table: MakeTable,
) -> None:
    settings = {"samples_per_insert": 1.0, "error_buffer": 8.0}
    actor_side, learner_side = make_table(**settings), make_table(**settings)
    actor_side.insert([chunk(20)])  # admitted, 11 past the band: inserts now wait
    with pytest.raises(WaitTimeoutError, match="rate limiter"):
        actor_side.insert([chunk(1)], timeout=0.1)
    thread, out = in_thread(lambda: actor_side.insert([chunk(1)], timeout=5.0))
    time.sleep(0.1)
    assert thread.is_alive()
    learner_side.sample(12)  # diff back to 8: one more insert fits
    thread.join(2.0)
    assert out == [21]
    assert actor_side.stats().insert_blocked_s > 0.1


def test_a_sample_held_for_min_size_is_released_by_an_insert_through_another_replica(
    make_table: MakeTable,
) -> None:
    learner_side, actor_side = make_table(min_size_to_sample=10), make_table(min_size_to_sample=10)
    thread, out = in_thread(lambda: learner_side.sample(4, timeout=5.0))
    time.sleep(0.1)
    actor_side.insert([chunk(10)])
    thread.join(2.0)
    assert len(out) == 1 and len(out[0].keys) == 4  # type: ignore[attr-defined]


@pytest.mark.parametrize("seed", range(3))
def test_the_lua_limiter_decides_as_the_python_one(make_table: MakeTable, seed: int) -> None:
    """Random commits and batches: Redis admits exactly what SampleToInsertRatio admits."""
    rng = random.Random(seed)
    spi = rng.choice([0.5, 2.0, 8.0])
    buffer = max(1.0, spi) * rng.choice([1.0, 3.0])
    min_size = rng.randint(1, 20)
    table = make_table(
        capacity=100_000, samples_per_insert=spi, error_buffer=buffer, min_size_to_sample=min_size
    )
    model = SampleToInsertRatio(spi, min_size, buffer)
    batch = rng.randint(1, int(2 * buffer - spi))
    for _ in range(60):
        if rng.random() < 0.5:
            n = rng.randint(1, 30)
            allowed = model.can_insert(1)
            try:
                table.insert([chunk(n)], timeout=0.0)
                model.insert(n)
                assert allowed
            except WaitTimeoutError:
                assert not allowed
        else:
            allowed = model.can_sample(batch)
            try:
                table.sample(batch, timeout=0.0)
                model.sample(batch)
                assert allowed
            except WaitTimeoutError:
                assert not allowed


def test_a_prioritized_sampler_is_served_while_another_replica_commits_without_pause(
    make_table: MakeTable,
) -> None:
    """Each commit moves the priorities on; the sampler's lease still gets it served."""
    actor_side = make_table(sampler="prioritized", capacity=10_000)
    learner_side = make_table(sampler="prioritized", capacity=10_000)
    actor_side.insert([chunk(64)])
    stop = threading.Event()

    def commit_forever() -> int:
        commits = 0
        while not stop.is_set():
            actor_side.insert([chunk(8)])
            commits += 1
        return commits

    thread, commits = in_thread(commit_forever)
    try:
        started = time.monotonic()
        batches = [learner_side.sample(32, timeout=5.0) for _ in range(30)]
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join(5.0)
    assert commits[0] >= 10  # type: ignore[operator]  # commits kept coming meanwhile
    assert elapsed < 5.0
    for batch in batches:  # every row is the one its key names
        np.testing.assert_array_equal(batch.columns["next_obs"], batch.columns["obs"] + 1)


def test_a_replica_follows_priority_changes_made_through_another(make_table: MakeTable) -> None:
    writer = make_table(sampler="prioritized", capacity=100, priority_exponent=1.0)
    reader = make_table(sampler="prioritized", capacity=100, priority_exponent=1.0)
    writer.insert([chunk(10)])
    reader.sample(8)  # the reader now has the table's priorities at this version
    for round_ in range(300):  # more changes than one STALE reply carries: a reload
        writer.update_priorities(np.array([round_ % 10], np.int64), np.ones(1, np.float32))
    writer.update_priorities(np.arange(10, dtype=np.int64), np.full(10, 1e-6, np.float32))
    writer.update_priorities(np.array([4], np.int64), np.array([1.0], np.float32))
    assert (reader.sample(64).keys == 4).all()


def test_a_replica_reloads_when_the_table_is_made_anew(
    own_redis: RedisServer, make_own: MakeTable
) -> None:
    first = make_own(sampler="prioritized", capacity=100)
    first.insert([chunk(10)])
    first.sample(4)
    own_redis.client().flushdb()  # e.g. a Redis restarted without persistence
    second = make_own(sampler="prioritized", capacity=100)
    second.insert([chunk(3, start=50)])
    batch = first.sample(16)
    assert set(batch.keys.tolist()) <= {0, 1, 2}
    np.testing.assert_array_equal(batch.columns["obs"][:, 0], batch.keys + 50)


# -- Redis restarts and outages -------------------------------------------------------------------


def test_a_clean_redis_restart_keeps_the_whole_table(
    own_redis: RedisServer, make_own: MakeTable
) -> None:
    table = make_own(sampler="prioritized")
    table.insert([chunk(100)], actor_id="a")
    table.update_priorities(np.array([7], np.int64), np.array([1e6], np.float32))
    own_redis.restart()
    stats = table.stats()  # the same object reconnects by itself
    assert (stats.size, stats.inserted_by_actor) == (100, {"a": 100})
    assert (table.sample(64).keys == 7).mean() > 0.9  # the priority came back too


def test_redis_killed_with_appendfsync_always_loses_no_acknowledged_insert(
    own_redis: RedisServer, make_own: MakeTable
) -> None:
    table = make_own()
    acknowledged = sum(table.insert([chunk(10, start=10 * i)]) > 0 for i in range(30)) * 10
    own_redis.restart(kill=True)  # SIGKILL: only what reached the AOF survives
    assert table.size == acknowledged == 300
    batch = table.sample(300)
    np.testing.assert_array_equal(batch.columns["obs"][:, 0], batch.keys)


def test_with_redis_down_calls_fail_as_unavailable_and_work_again_when_it_returns(
    own_redis: RedisServer, make_own: MakeTable
) -> None:
    table = make_own()
    table.insert([chunk(5)])
    own_redis.stop()
    for call in (
        lambda: table.insert([chunk(5)]),
        lambda: table.sample(2),
        table.stats,
    ):
        with pytest.raises(
            StoreUnavailableError, match=f"Redis at redis://127.0.0.1:{own_redis.port}/0"
        ):
            call()
    own_redis.run()
    assert table.insert([chunk(5)]) == 10  # the refused insert stored nothing


def test_an_insert_waiting_on_the_limiter_fails_as_unavailable_when_redis_goes(
    own_redis: RedisServer, make_own: MakeTable
) -> None:
    table = make_own(samples_per_insert=1.0, error_buffer=8.0)
    table.insert([chunk(20)])
    thread, out = in_thread(lambda: table.insert([chunk(1)], timeout=10.0))
    time.sleep(0.1)
    own_redis.stop()
    thread.join(5.0)
    assert isinstance(out[0], StoreUnavailableError)


# -- credentials ------------------------------------------------------------------------------


def test_passwords_never_show_in_stats_or_errors(tmp_path: Path) -> None:
    secret = "s3cret-Pa55"
    with RedisServer.start(tmp_path / "redis", password=secret) as server:
        for make in factory(server.url):
            table = make()
            table.insert([chunk(3)])
            assert table.stats().store == f"redis://:***@127.0.0.1:{server.port}/0"
            wrong = make(store=server.url.replace(secret, "wrong"))
            with pytest.raises(RedisRefusedError) as refused:
                wrong.attach()
            server.stop()
            with pytest.raises(StoreUnavailableError) as down:
                table.insert([chunk(3)])
            for err in (refused.value, down.value):
                assert secret not in str(err) and "wrong" not in str(err)


def test_a_tls_store_with_a_password_works(tmp_path: Path) -> None:
    with RedisServer.start(tmp_path / "redis", password="tls-secret", tls=True) as server:
        for make in factory(server.url):
            table = make()
            table.insert([chunk(5)])
            batch = table.sample(8)
            np.testing.assert_array_equal(batch.columns["obs"][:, 0], batch.keys)
            assert table.stats().store.startswith(f"rediss://:***@127.0.0.1:{server.port}/0?")


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("rediss://user:pw@h:1/2", "rediss://user:***@h:1/2"),
        ("redis://pw@h/0", "redis://:***@h/0"),
        ("redis://h:1/0?password=pw&db=0", "redis://h:1/0?password=***&db=0"),
        ("memory", "memory"),
    ],
)
def test_store_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_bad_store_url_is_refused_without_echoing_its_password() -> None:
    with pytest.raises(ConfigError) as info:
        ReplayConfig(store="redis://:hunter2@host:99999/0")
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


def test_persistence_settings_that_lose_data_are_named(make_table: MakeTable) -> None:
    table = make_table()
    assert table.persistence_warnings() == []  # the test Redis runs AOF, noeviction
    table.connection.client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        assert "maxmemory-policy allkeys-lru" in table.persistence_warnings()[0]
    finally:
        table.connection.client.config_set("maxmemory-policy", "noeviction")


def test_the_hand_packed_hmget_is_the_command_redis_py_would_send() -> None:
    slots = np.array([0, 7, 65_535, 4_000_000_000], dtype=np.int64)
    assert SLOT_FORMAT == "<I4"  # Lua's struct: 4-byte little-endian unsigned
    fields = [struct.pack("<I", int(s)) for s in slots]
    expected = b"".join(redis.Connection().pack_command("HMGET", "actorq:{t}:rows", *fields))
    assert hmget_command("actorq:{t}:rows", slots) == expected


def test_sampling_goes_on_after_redis_forgets_the_scripts(
    make_table: MakeTable, shared_redis: RedisServer
) -> None:
    # A restarted (or SCRIPT FLUSHed) Redis answers NOSCRIPT inside the sample's
    # MULTI/EXEC: the table loads its scripts again and the draw is served once.
    table = make_table()
    table.insert([chunk(50)])
    before = table.stats().sampled
    client = redis.Redis.from_url(shared_redis.url)
    try:
        client.script_flush()
    finally:
        client.close()
    batches = table.sample_many(20, 2)
    assert len(batches) == 2
    np.testing.assert_array_equal(batches[1].columns["obs"][:, 0], batches[1].keys)
    assert table.stats().sampled - before == 40
