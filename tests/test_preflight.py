"""Bad input to ``actorq train`` is refused before anything starts: exit code 2, one line
naming the problem, within 3 seconds, no service process (no DIR/logs/)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
import yaml
from conftest import free_port
from redis_server import RedisServer

from commands.train import preflight, run

BASE = ["--env", "CartPole-v1", "--quiet", "--no-carbon"]


def refused(argv: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``actorq train`` in this process; assert it was refused at once; its message."""
    started = time.monotonic()
    code = run.main([*BASE, *argv, "--out", str(out)])
    took = time.monotonic() - started
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert took < 3.0, f"took {took:.1f}s"
    assert len(err.splitlines()) == 1, err
    assert not (out / "logs").exists()
    return err


def config(tmp_path: Path, data: object) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_an_unknown_train_setting_names_the_file_key_and_the_closest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, {"train": {"eval_episode": 5}})
    err = refused(["--config", path], tmp_path / "run", capsys)
    assert path in err and "'eval_episode'" in err and "did you mean 'eval_episodes'?" in err


def test_an_unknown_service_setting_names_the_file_key_and_the_closest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, {"replay": {"capacty": 5000}})
    err = refused(["--config", path], tmp_path / "run", capsys)
    assert path in err and "'capacty'" in err and "did you mean 'capacity'?" in err


def test_an_unknown_section_names_the_closest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(["--config", config(tmp_path, {"learnr": {}})], tmp_path / "run", capsys)
    assert "unknown section 'learnr'; did you mean 'learner'?" in err


def test_a_bad_value_names_the_setting_and_the_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, {"replay": {"min_size_to_sample": 10, "capacity": 5}})
    err = refused(["--config", path], tmp_path / "run", capsys)
    assert "replay refuses its settings" in err and "min_size_to_sample 10" in err


@pytest.mark.parametrize(
    ("flag", "value", "way_out"),
    [
        ("--max-env-steps", "0", "give --max-env-steps none"),
        ("--max-env-steps", "-5", "give --max-env-steps none"),
        ("--max-seconds", "0", "leave it out"),
        ("--max-seconds", "-1.5", "leave it out"),
    ],
)
def test_a_budget_of_zero_or_less_is_refused_naming_the_way_out(
    flag: str, value: str, way_out: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused([flag, value], tmp_path / "run", capsys)
    assert f"{flag} {value}: must be > 0" in err and way_out in err


def test_a_bad_train_value_names_the_flag_the_value_and_what_is_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(
        ["--config", config(tmp_path, {"train": {"actors": "two"}})], tmp_path / "run", capsys
    )
    assert "actors" in err and "'two'" in err and "int" in err


def test_a_missing_config_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(["--config", str(tmp_path / "nope.yaml")], tmp_path / "run", capsys)
    assert "nope.yaml" in err and "No such file" in err


def test_an_unparsable_config_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train: [unclosed\n")
    err = refused(["--config", str(path)], tmp_path / "run", capsys)
    assert "not valid YAML" in err


def test_an_out_that_cannot_be_written_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("not a directory")
    err = refused([], tmp_path / "file" / "run", capsys)
    assert "cannot be written" in err


def test_an_algorithm_that_cannot_act_in_the_env_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(["--env", "Pendulum-v1", "--algo", "dqn"], tmp_path / "run", capsys)
    assert "--algo dqn needs discrete actions" in err and "use --algo d4pg" in err


def test_an_unreachable_redis_store_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    err = refused(["--replay-store", store], tmp_path / "run", capsys)
    assert "no Redis answered a PING" in err and "hunter2" not in err


def test_a_redis_table_holding_another_runs_transitions_is_refused_and_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fresh run would silently learn from an old run's table; nothing is deleted."""
    with RedisServer.start(tmp_path / "redis") as server:
        client = redis.Redis.from_url(server.url)
        client.hset("actorq:{replay}:state", mapping={"end_key": 1200, "size": 1000})
        err = refused(["--replay-store", server.url], tmp_path / "run", capsys)
        assert "table 'replay' already holds 1,200 transitions" in err
        assert "--resume" in err and "another table" in err
        assert client.hget("actorq:{replay}:state", "end_key") == b"1200"
        preflight.check_fresh_table(server.url, "fresh")  # another table of that Redis is fine
