"""`actorq bench replay`: its table and its command line (the runs themselves are manual)."""

from __future__ import annotations

import pytest

from actorq.bench.replay import Row, _parse, format_table


def test_the_table_shows_how_many_times_faster_memory_is() -> None:
    rows = [
        Row("memory", "uniform", "insert", 1, 200_000.0, None),
        Row("memory", "uniform", "together", 4, 150_000.0, 120_000.0),
        Row("redis://h:1/0", "uniform", "insert", 1, 100_000.0, None),
        Row("redis://h:1/0", "uniform", "together", 4, 100_000.0, 40_000.0),
    ]
    table = format_table(rows)
    assert "200,000" in table
    assert "insert    1 actor(s): insert 2.00x" in table
    assert "together  4 actor(s): insert 1.50x, sample 3.00x" in table


def test_a_bad_store_is_refused_without_printing_its_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        _parse(["--store", "redis://:hunter2@host:99999/0"])
    err = capsys.readouterr().err
    assert "hunter2" not in err and "***" in err


def test_actor_counts_are_read_from_a_list() -> None:
    assert _parse(["--actors", "1,2,8"]).actors == [1, 2, 8]
    assert _parse([]).store == ["memory"]
