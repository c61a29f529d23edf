"""Real `actorq serve replay` processes on a real redis-server, spoken to over gRPC.

What the Redis store is for: a replay process that is killed and started
again loses no acknowledged transition, several replay processes serve one
table, and a Redis outage turns into UNAVAILABLE answers (logged once, no
password anywhere) followed by recovery.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import ROOT, ServiceProcess, start_service
from redis_server import RedisServer

from actorq.clients import ReplayClient
from actorq.rpc import channel
from actorq.transitions import Transitions
from services.replay.config import ReplayConfig
from services.replay.factory import build_redis_table
from services.replay.redis_table import RedisTable

CHUNK = 64
SECRET = "pa55-w0rd-for-tests"


def transitions(ids: np.ndarray) -> Transitions:
    """Transitions whose obs[:, 0] carries a unique id (next_obs = obs + 1)."""
    obs = np.zeros((len(ids), 4), np.float32)
    obs[:, 0] = ids
    return Transitions(
        obs=obs,
        action=np.asarray(ids, dtype=np.int64) % 2,
        reward=np.ones(len(ids), np.float32),
        discount=np.full(len(ids), 0.99, np.float32),
        next_obs=obs + 1,
    )


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer.start(tmp_path / "redis", appendfsync="always", password=SECRET) as server:
        yield server


@pytest.fixture
def start_replay(
    tmp_path: Path, redis_server: RedisServer
) -> Iterator[Callable[..., ServiceProcess]]:
    """Start replay processes on redis_server (table name per test, URL via environment)."""
    started: list[ServiceProcess] = []
    table = uuid.uuid4().hex[:12]

    def start(*args: str, port: int | None = None) -> ServiceProcess:
        svc = start_service(
            "replay",
            ["--table", table, "--redis-poll-s", "0.005", *args],
            tmp_path,
            env={"ACTORQ_STORE": redis_server.url},  # not on the command line: ps shows it
            port=port,
        )
        started.append(svc)
        return svc

    start.table = table  # type: ignore[attr-defined]
    yield start
    for svc in reversed(started):
        svc.stop()
    for svc in started:
        assert SECRET not in svc.log(), "the Redis password reached a log"


def inspector(redis_server: RedisServer, table: str, **settings: object) -> RedisTable:
    """An in-process view of the shared table, to read every row it holds."""
    cfg = ReplayConfig(store=redis_server.url, table=table, **settings)  # type: ignore[arg-type]
    return build_redis_table(cfg)


def stored_ids(view: RedisTable) -> np.ndarray:
    _, columns = view.gather(view.live_keys())
    np.testing.assert_array_equal(columns["next_obs"], columns["obs"] + 1)  # whole rows
    return columns["obs"][:, 0].astype(np.int64)


class Actor:
    """Inserts chunks of unique ids until stopped or refused; remembers what was acknowledged."""

    def __init__(self, address: str, actor: int, chunks_per_insert: int = 4) -> None:
        self.address = address
        self.actor = actor
        self.per_insert = chunks_per_insert
        self.acknowledged: list[int] = []
        self.errors: list[grpc.StatusCode] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        next_id = self.actor * 1_000_000  # float32 obs hold ids exactly below 2**24
        with channel(self.address) as ch:
            client = ReplayClient(ch)
            while not self.stop.is_set():
                ids = np.arange(next_id, next_id + CHUNK * self.per_insert)
                chunks = [transitions(part) for part in np.split(ids, self.per_insert)]
                try:
                    client.insert(chunks, actor_id=f"actor-{self.actor}", timeout=5)
                except grpc.RpcError as err:
                    self.errors.append(err.code())
                    if err.code() != grpc.StatusCode.UNAVAILABLE:
                        return
                    time.sleep(0.02)
                    continue
                self.acknowledged += ids.tolist()
                next_id += len(ids)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(10)


def test_a_replay_killed_mid_insert_loses_no_acknowledged_transition(
    start_replay: Callable[..., ServiceProcess], redis_server: RedisServer
) -> None:
    replay = start_replay("--capacity", "1000000", "--max-insert-transitions", "4096")
    actors = [Actor(replay.address, i, chunks_per_insert=16) for i in range(2)]
    time.sleep(0.7)
    replay.proc.kill()  # SIGKILL while both actors have inserts in flight
    replay.proc.wait()
    time.sleep(0.2)
    for actor in actors:
        actor.finish()
    acknowledged = [i for actor in actors for i in actor.acknowledged]
    assert len(acknowledged) > 1_000
    restarted = start_replay("--capacity", "1000000", port=replay.port)
    with channel(restarted.address) as ch:
        assert ReplayClient(ch).stats().size >= len(acknowledged)
    view = inspector(redis_server, start_replay.table, capacity=1_000_000)  # type: ignore[attr-defined]
    ids = stored_ids(view)
    assert set(acknowledged) <= set(ids.tolist())
    # A commit is there whole or not at all: ids come in complete 64-row chunks.
    assert (np.bincount(ids // CHUNK - ids.min() // CHUNK) % CHUNK == 0).all()
    view.close()


def test_two_replicas_on_one_redis_serve_one_table(
    start_replay: Callable[..., ServiceProcess], redis_server: RedisServer
) -> None:
    replicas = [start_replay("--capacity", "20000") for _ in range(2)]
    actors = [Actor(replicas[i % 2].address, i) for i in range(4)]
    time.sleep(1.0)
    for actor in actors:
        actor.finish()
    assert all(actor.errors == [] for actor in actors)
    stats = []
    for replica in replicas:
        with channel(replica.address) as ch:
            stats.append(ReplayClient(ch).stats())
    inserted = sum(len(actor.acknowledged) for actor in actors)
    for s in stats:
        assert (s.inserted, s.size) == (inserted, min(inserted, 20_000))
        assert s.evicted == inserted - s.size
        assert dict(s.inserted_by_actor) == {
            f"actor-{a.actor}": len(a.acknowledged) for a in actors
        }
    view = inspector(redis_server, start_replay.table, capacity=20_000)  # type: ignore[attr-defined]
    ids = stored_ids(view)
    everything = np.array(sorted(i for a in actors for i in a.acknowledged))
    assert set(ids.tolist()) <= set(everything.tolist()) and len(set(ids.tolist())) == len(ids)
    view.close()


def test_the_samples_per_insert_limit_holds_across_replicas(
    start_replay: Callable[..., ServiceProcess],
) -> None:
    limits = ("--min-size-to-sample", "1", "--samples-per-insert", "1", "--error-buffer", "8")
    actor_side, learner_side = start_replay(*limits), start_replay(*limits)
    with channel(actor_side.address) as a_ch, channel(learner_side.address) as l_ch:
        actor, learner = ReplayClient(a_ch), ReplayClient(l_ch)
        actor.insert([transitions(np.arange(20))])  # admitted, 11 past the band
        with pytest.raises(grpc.RpcError) as info:
            actor.insert([transitions(np.arange(20, 21))], timeout=0.5)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        list(learner.sample_stream(batch_size=12, num_batches=1))  # the other replica samples
        assert actor.insert([transitions(np.arange(20, 21))], timeout=5).size == 21
        assert learner.stats().sampled == 12


def test_redis_down_means_unavailable_inserts_then_recovery_without_loss(
    start_replay: Callable[..., ServiceProcess], redis_server: RedisServer
) -> None:
    replay = start_replay("--capacity", "1000000", "--max-insert-transitions", "4096")
    actor = Actor(replay.address, 0)
    time.sleep(0.3)
    redis_server.stop()
    time.sleep(0.5)
    with channel(replay.address) as ch:
        client = ReplayClient(ch)
        with pytest.raises(grpc.RpcError) as info:
            client.insert([transitions(np.arange(3))])
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"Redis at redis://:***@127.0.0.1:{redis_server.port}/0" in str(info.value.details())
        with pytest.raises(grpc.RpcError) as info:
            list(client.sample_stream(batch_size=4, num_batches=1))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        redis_server.run()
        during_outage = len(actor.acknowledged)
        time.sleep(0.5)
        actor.finish()
        assert len(actor.acknowledged) > during_outage  # inserting again
        assert replay.alive()
        assert grpc.StatusCode.UNAVAILABLE in actor.errors
        stats = client.stats()
        assert stats.store == f"redis://:***@127.0.0.1:{redis_server.port}/0"
    view = inspector(redis_server, start_replay.table, capacity=1_000_000)  # type: ignore[attr-defined]
    assert set(actor.acknowledged) <= set(stored_ids(view).tolist())
    view.close()
    log = replay.log()
    # actorq.retry.Outage's words: once per outage, not per call, and once when it ends.
    assert log.count(f"127.0.0.1:{redis_server.port}/0 failed (") == 1, log
    assert f"127.0.0.1:{redis_server.port}/0 works again" in log


def test_learner_priorities_reach_the_shared_table(
    start_replay: Callable[..., ServiceProcess],
) -> None:
    replicas = [
        start_replay("--sampler", "prioritized", "--min-size-to-sample", "1") for _ in range(2)
    ]
    with channel(replicas[0].address) as a_ch, channel(replicas[1].address) as b_ch:
        first, second = ReplayClient(a_ch), ReplayClient(b_ch)
        first.insert([transitions(np.arange(64))])
        assert second.update_priorities(np.arange(64), np.full(64, 1e-3, np.float32)) == 64
        assert second.update_priorities(np.array([5]), np.array([1e3], np.float32)) == 1
        batch = next(iter(first.sample_stream(batch_size=256, num_batches=1)))
        assert (batch.keys == 5).mean() > 0.9
        assert batch.weights.dtype == np.float32 and batch.weights.max() == 1.0


def _serve(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "commands.cli", "serve", "replay", "--port", "0", *args],
        cwd=ROOT,
        env={**os.environ, "ACTORQ_STORE": url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_replica_with_other_settings_stops_at_start_naming_them(
    start_replay: Callable[..., ServiceProcess], redis_server: RedisServer
) -> None:
    start_replay("--capacity", "5000")
    table = start_replay.table  # type: ignore[attr-defined]
    result = _serve(redis_server.url, "--table", table, "--capacity", "6000")
    assert result.returncode != 0
    assert "capacity=5000" in result.stderr and "another --table" in result.stderr


def test_a_wrong_password_stops_the_replay_without_printing_it(redis_server: RedisServer) -> None:
    result = _serve(redis_server.url.replace(SECRET, "not-the-password"))
    assert result.returncode != 0
    assert "refused us" in result.stderr and "check the password" in result.stderr
    assert "not-the-password" not in result.stderr + result.stdout
