"""The replay's connection layer to Redis, against a real redis-server on a free port."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis_server import RedisServer

from services.replay.errors import RedisRefusedError, StoreUnavailableError
from services.replay.redis_connection import RedisConnection

LOGGER = "services.replay.redis_connection"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer.start(tmp_path / "redis", password="s3cret") as server:
        yield server


def ping(connection: RedisConnection) -> None:
    with connection.errors():
        connection.client.ping()


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    connection = RedisConnection.open(own_redis.url, timeout_s=2.0)
    caplog.set_level(logging.INFO, logger=LOGGER)
    ping(connection)
    own_redis.stop()
    for _ in range(3):
        with pytest.raises(StoreUnavailableError, match="is unavailable"):
            ping(connection)
    own_redis.run()
    ping(connection)
    ping(connection)
    connection.close()
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    where = f"Redis at redis://:***@127.0.0.1:{own_redis.port}/0"
    assert lines == [
        f"{where} failed (ConnectionError); calls fail with UNAVAILABLE until it is back",
        f"{where} works again after 3 failed tries",
    ]


def test_a_wrong_password_is_refused_without_showing_it_or_logging_an_outage(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    connection = RedisConnection.open(own_redis.url.replace("s3cret", "guess"), timeout_s=2.0)
    caplog.set_level(logging.INFO, logger=LOGGER)
    with pytest.raises(RedisRefusedError, match="check the password") as refused:
        ping(connection)
    connection.close()
    assert "guess" not in str(refused.value) and "s3cret" not in str(refused.value)
    assert [r for r in caplog.records if r.name == LOGGER] == []


def test_an_error_redis_answers_with_reaches_the_caller_as_it_is(own_redis: RedisServer) -> None:
    connection = RedisConnection.open(own_redis.url, timeout_s=2.0)
    with pytest.raises(redis.ResponseError, match="unknown command"), connection.errors():
        connection.client.execute_command("NO-SUCH-COMMAND")
    connection.close()
