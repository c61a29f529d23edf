"""``actorq --version``, ``actorq --help`` and ``actorq serve --help``: help, not errors."""

from __future__ import annotations

import pytest

import actorq
from commands import cli


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"actorq {actorq.__version__}"


def test_help_gives_every_command_a_one_line_description(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("train", "serve", "attach", "health", "bench", "report", "eval", "export"):
        assert any(line.startswith(f"  {name} ") for line in out.splitlines()), name


def test_serve_help_lists_the_services(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.SERVICES) and "--help" in out


def test_train_help_shows_defaults_dmc_ids_and_redis_urls(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["train", "--help"])
    assert done.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "dmc:DOMAIN-TASK" in out and "redis://" in out
    assert "(default: int8)" in out and "--resume DIR" in out
