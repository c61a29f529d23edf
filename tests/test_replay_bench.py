"""`actorq bench replay`: its table and its command line (the runs themselves are manual)."""

from __future__ import annotations

import pytest

from commands.bench.replay import Row, _parse, _phases, format_table, medians, memory_ratios


def test_the_table_shows_how_many_times_faster_memory_is() -> None:
    rows = [
        Row("memory", "uniform", "insert", 1, 200_000.0, None, 0),
        Row("memory", "uniform", "together", 4, 150_000.0, 120_000.0, 0),
        Row("redis://h:1/0", "uniform", "insert", 1, 100_000.0, None, 0),
        Row("redis://h:1/0", "uniform", "together", 4, 100_000.0, 40_000.0, 0),
    ]
    table = format_table(rows)
    assert "200,000" in table
    assert "insert    1 actor(s): insert 2.00x" in table
    assert "together  4 actor(s): insert 1.50x, sample 3.00x" in table


def test_repeats_give_medians_and_paired_ratios() -> None:
    # Three repeats; the machine slowed down in repeat 1 for both stores alike.
    rows = []
    for repeat, (mem, red) in enumerate([(900.0, 450.0), (300.0, 100.0), (800.0, 500.0)]):
        rows.append(Row("memory", "uniform", "sample", 0, None, mem, repeat))
        rows.append(Row("redis://h:1/0", "uniform", "sample", 0, None, red, repeat))
    by_store = {r.store: r for r in medians(rows)}
    assert by_store["memory"].sampled_per_s == 800.0
    assert by_store["redis://h:1/0"].sampled_per_s == 450.0
    assert by_store["memory"].repeat is None
    # Ratios per repeat 2.0, 3.0, 1.6: the median is 2.0 (the ratio of medians, 1.78, is not).
    assert memory_ratios(rows) == {("redis://h:1/0", "sample", 0): {"sample": 2.0}}
    table = format_table(rows)
    assert "medians of 3 interleaved repeat(s)" in table
    assert "300-900k" not in table and "0-1k" in table  # ranges in thousands


def test_every_repeat_runs_each_phase_once() -> None:
    assert _phases([1, 4]) == [
        ("insert", 1, False),
        ("insert", 4, False),
        ("sample", 0, True),
        ("together", 1, True),
        ("together", 4, True),
    ]


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
    assert _parse([]).repeats == 3


def test_repeats_below_one_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(["--repeats", "0"])
    assert "--repeats must be at least 1" in capsys.readouterr().err


def test_the_memory_store_with_its_journal_is_a_store_to_compare() -> None:
    args = _parse(["--store", "memory", "--store", "memory+journal"])
    assert args.store == ["memory", "memory+journal"]
