"""The Redis replay's guards: resends stored once across replicas, a fresh replica that
checks a batch against the stored layout before drawing, and health that follows Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import start_service
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis_server import RedisServer
from test_replay_core import chunk
from test_replay_guards import rss_mib, transitions

from actorq.clients import ReplayClient
from actorq.retry import dependency_down
from actorq.rpc import LIVENESS, channel
from commands import procs
from commands.procs import free_port
from commands.train.args import TrainArgs
from commands.train.progress import status_line
from services.replay.config import ReplayConfig
from services.replay.factory import build_redis_table
from services.replay.redis_table import RedisTable
from services.replay.resends import check_marks

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer.start(tmp_path / "redis") as server:
        yield server


def replica(server: RedisServer, table: str) -> RedisTable:
    cfg = ReplayConfig(store=server.url, table=table, min_size_to_sample=1, redis_poll_s=0.005)
    return build_redis_table(cfg)


def test_a_resend_through_another_replica_is_not_stored_again(redis_server: RedisServer) -> None:
    name = uuid.uuid4().hex[:12]
    first, second = replica(redis_server, name), replica(redis_server, name)
    marks = check_marks(["actor-0"] * 3, [5] * 3, [1, 2, 3])
    done = first.insert_stream(
        [chunk(2, start=0), chunk(2, start=2)], check_marks(["actor-0"] * 2, [5] * 2, [1, 2])
    )
    again = second.insert_stream([chunk(2, start=0), chunk(2, start=2), chunk(2, start=4)], marks)
    assert (done.stored, again.stored, again.duplicates, again.size) == (4, 2, 4, 6)
    _, columns = first.gather(first.live_keys())
    np.testing.assert_array_equal(columns["obs"][:, 0], np.arange(6))
    assert first.stats().inserted_by_actor == {"actor-0": 6}
    for t in (first, second):
        t.close()


def test_a_fresh_replica_checks_a_batch_against_the_stored_layout_before_drawing(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    name = uuid.uuid4().hex[:12]
    writer = replica(redis_server, name)
    writer.insert([chunk(64, obs_dim=512)])  # 4 KiB rows: a batch of 4096 cannot fit
    fresh = start_service(
        "replay",
        ["--table", name, "--min-size-to-sample", "1"],
        tmp_path,
        env={"ACTORQ_STORE": redis_server.url},
    )
    try:
        before = rss_mib(fresh.pid)
        with channel(fresh.address) as ch:
            client = ReplayClient(ch)
            for batch_size in (4096, 2**26, 2**31 - 1):
                with pytest.raises(grpc.RpcError) as info:
                    list(client.sample_stream(batch_size, num_batches=1))
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert len(next(client.sample_stream(64, num_batches=1)).keys) == 64
        assert rss_mib(fresh.pid) - before < 20
    finally:
        fresh.stop()
        writer.close()


def health(address: str, service: str = "actorq.v1.ReplayService") -> int:
    with channel(address) as ch:
        return int(
            health_pb2_grpc.HealthStub(ch)
            .Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
            .status
        )


def wait_health(address: str, status: int, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if health(address) == status:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{address} did not report {status} within {timeout} s")


def test_replay_reports_not_serving_while_redis_is_down_and_serving_once_it_is_back(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    replay = start_service(
        "replay",
        ["--table", uuid.uuid4().hex[:12]],
        tmp_path,
        env={"ACTORQ_STORE": redis_server.url},
    )
    try:
        assert health(replay.address) == SERVING
        redis_server.stop()
        assert wait_health(replay.address, NOT_SERVING) < 5
        assert health(replay.address, "") == NOT_SERVING  # what readiness checks
        assert health(replay.address, LIVENESS) == SERVING  # not restarted for waiting
        # Calls say what is down, for the launcher's progress line.
        with channel(replay.address) as ch, pytest.raises(grpc.RpcError) as info:
            ReplayClient(ch).stats()
        assert dependency_down(info.value) == f"Redis at redis://127.0.0.1:{redis_server.port}/0"
        redis_server.run()
        assert wait_health(replay.address, SERVING) < 5
        with channel(replay.address) as ch:
            assert ReplayClient(ch).insert([transitions(3)]).size == 3
    finally:
        replay.stop()
    assert "reporting NOT_SERVING: Redis at" in replay.log()


def test_a_replica_started_without_redis_is_not_serving_until_redis_answers(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis", port=free_port())  # not running yet
    replay = procs.start(
        "replay",
        ["--table", "late", "--redis-timeout-s", "0.5"],
        tmp_path,
        port=free_port(),
        env={"ACTORQ_STORE": server.url},
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # wait until it answers health at all (no SERVING to wait for)
            try:
                status = health(replay.address)
                break
            except grpc.RpcError:
                assert replay.alive() and time.monotonic() < deadline, replay.log_tail()
                time.sleep(0.2)
        assert status == NOT_SERVING
        server.run()
        assert wait_health(replay.address, SERVING) < 5
    finally:
        replay.stop()
        server.kill()


def test_the_progress_line_says_which_dependency_is_down() -> None:
    row = {
        "t_s": 12.0,
        "env_steps": 100,
        "env_steps_per_s": None,
        "learner_steps": 10,
        "learner_steps_per_s": None,
        "model_version": 3,
        "replay_size": None,
        "active_actors": 0,
        "eval_return": None,
        "eval_version": None,
        "down": {"replay": "Redis at redis://127.0.0.1:6379/0"},
    }
    line = status_line(TrainArgs(env="CartPole-v1"), row, 12.0)
    assert line.endswith("replay ? | replay: Redis at redis://127.0.0.1:6379/0 down")
