"""`actorq report`: report.md, report.json and plots from real runs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from commands import machine, report

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "commands.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """One small real int8 run with a target it reaches, inside a bench-like directory
    (BENCH/runs/int8-s0), and the comparison report of that directory (in BENCH)."""
    bench = tmp_path_factory.mktemp("report")
    out = bench / "runs" / "int8-s0"
    res = cli(
        "train",
        "--env",
        "CartPole-v1",
        "--actors",
        "1",
        # Past what the rate limiter lets actors insert before the learner must train
        # (min_size_to_sample + error_buffer = 4,200): random steps before the first
        # model can spend a smaller budget before the learner's first update.
        "--max-env-steps",
        "8000",
        "--eval-episodes",
        "3",
        "--target-return",
        "30",
        # Held for 3 evaluations: the initial policy can score 30 at the first one, and a
        # run that stopped there would have no learner update (no loss) to report.
        "--sustain",
        "3",
        "--out",
        str(out),
        "--quiet",
    )
    assert res.returncode == 0, res.stderr
    rep = cli("report", str(bench))
    assert rep.returncode == 0, rep.stderr
    yield bench, json.loads((out / "summary.json").read_text())


def test_report_writes_markdown_json_and_every_plot_as_a_non_empty_png(
    small_run: tuple[Path, dict[str, Any]],
) -> None:
    out, _ = small_run
    assert (out / "report.md").stat().st_size > 0
    assert (out / "report.json").stat().st_size > 0
    for name in report.PLOTS:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 5_000, f"{name} is only {len(data)} bytes"
        assert f"({name})" in (out / "report.md").read_text()


def test_report_numbers_match_the_runs_summary(small_run: tuple[Path, dict[str, Any]]) -> None:
    out, summary = small_run
    rep = json.loads((out / "report.json").read_text())
    agg = rep["precisions"]["int8"]
    assert agg["runs"] == 1 and agg["seeds"] == [summary["seed"]]
    assert agg["reached"] == int(summary["reached_target"])
    if summary["reached_target"]:
        assert agg["time_to_target_s"]["median"] == summary["time_to_target_s"]
        assert agg["env_steps_to_target"]["median"] == summary["env_steps_to_target"]
    assert agg["final_return"]["median"] == summary["eval"]["int8"]
    assert agg["actor_env_steps_per_s"]["median"] == summary["actor_env_steps_per_s"]
    assert agg["learner_steps_per_s"]["median"] == summary["learner_steps_per_s"]
    assert agg["model_bytes"]["median"] == summary["model_bytes"]["int8"]
    assert agg["swap_pull_ms"]["median"] == summary["model_swap_ms"]["pull"]
    assert agg["swap_load_ms"]["median"] == summary["model_swap_ms"]["load"]
    for part, value in summary["breakdown_us_per_step"].items():
        assert agg["breakdown_us_per_step"][part]["median"] == value
    assert agg["energy_kwh"]["median"] == summary["energy_kwh"]
    assert agg["emissions_kg"]["median"] == summary["emissions_kg"]


def test_a_run_records_its_machine_and_the_report_quotes_it(
    small_run: tuple[Path, dict[str, Any]],
) -> None:
    out, summary = small_run
    here = machine.run_machine()
    assert summary["machine"]["cpu_model"] == here["cpu_model"]
    assert summary["machine"]["versions"]["onnxruntime"] == here["versions"]["onnxruntime"]
    # The learner said where it trained (no GPU here): the CPU and its torch threads.
    assert (
        summary["learner_device"].startswith("cpu (")
        and "torch thread" in summary["learner_device"]
    )
    md = (out / "report.md").read_text()
    assert (
        f"Machine: {machine.line(summary['machine'])}; learner on {summary['learner_device']}."
        in md
    )


def test_a_report_names_the_runs_machine_not_the_one_it_is_built_on(tmp_path: Path) -> None:
    elsewhere = {
        **machine.run_machine(),
        "cpu_model": "Some GPU Host CPU",
        "usable_cpus": 16,
        "versions": {"onnxruntime": "9.9.9", "torch": "9.9.9+cu", "codecarbon": None},
    }
    runs = [
        report.Run(
            tmp_path / n,
            {
                **_summary(p, 0, 30.0, 3.0, 100.0),
                "machine": elsewhere,
                "learner_device": "cuda:0 (Some GPU)",
            },
        )
        for n, p in (("a", "fp32"), ("b", "int8"))
    ]
    for run in runs:
        run.dir.mkdir()
        (run.dir / "summary.json").write_text(json.dumps(run.summary.to_dict()))
    agg = report.build([tmp_path], tmp_path / "report")
    assert agg["machine"].startswith("Some GPU Host CPU, 16 CPUs")
    assert "onnxruntime 9.9.9, torch 9.9.9+cu" in agg["machine"]
    assert agg["machine"].endswith("; learner on cuda:0 (Some GPU)")
    assert machine.run_machine()["cpu_model"] not in agg["machine"]


def test_the_machine_sentence_says_when_runs_differ_or_recorded_none() -> None:
    a = {**machine.run_machine(), "cpu_model": "A"}
    b = {**a, "cpu_model": "B"}
    assert machine.of_runs([{}, {}], ["", ""]).startswith("not recorded in these runs")
    assert machine.of_runs([a, b], []).startswith("the runs differ: A, ")
    assert machine.of_runs([a, {}], ["cpu (1 torch threads)"]).endswith(
        "; learner on cpu (1 torch threads) (1 run(s) did not record one)"
    )
    assert machine.of_runs([a, a], []) == machine.line(a)


def test_report_markdown_shows_the_summarys_figures_and_how_power_was_obtained(
    small_run: tuple[Path, dict[str, Any]],
) -> None:
    out, summary = small_run
    text = (out / "report.md").read_text()
    assert f"| {1000 * summary['energy_kwh']:#.3g} |" in text
    assert f"| {1000 * summary['emissions_kg']:#.3g} |" in text
    assert f"| {summary['model_bytes']['int8']} |" in text
    assert f"| {summary['eval']['int8']:.1f} |" in text
    assert summary["carbon"]["power"] in text
    if not summary["carbon"]["measured"]:
        assert "(est.)" in text


def test_report_says_carbon_is_unavailable_instead_of_zero(
    small_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    bench, summary = small_run
    src = bench / "runs" / "int8-s0"
    run = tmp_path / "runs" / "int8-s0"
    run.mkdir(parents=True)
    untracked = {
        **summary,
        "energy_kwh": None,
        "emissions_kg": None,
        "carbon": {"status": "unavailable", "reason": "tracker failed to start: boom"},
    }
    (run / "summary.json").write_text(json.dumps(untracked))
    (run / "evals.jsonl").write_text((src / "evals.jsonl").read_text())
    res = cli("report", str(tmp_path))
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "report.md").read_text()
    assert "unavailable" in text and "tracker failed to start: boom" in text
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["precisions"]["int8"]["energy_kwh"] is None
    assert rep["precisions"]["int8"]["emissions_kg"] is None
    assert "| unavailable | unavailable |" in text.split("## Runs")[1]


def test_report_of_a_directory_without_runs_is_refused(tmp_path: Path) -> None:
    res = cli("report", str(tmp_path))
    assert res.returncode == 2
    assert "is neither an actorq train run directory" in res.stderr


def test_one_run_report_of_a_real_run(
    small_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """`actorq report RUN_DIR` on the real run: every plot it has data for, as PNG and SVG,
    titled with the run's env, algorithm, precision and network size."""
    bench, summary = small_run
    res = cli("report", str(bench / "runs" / "int8-s0"), "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["kind"] == "train_run"
    # A real run has evaluations, loss, rates and a measured regime: all but nothing skipped
    # except, with a launcher that records no training return, that one curve.
    assert set(rep["plots"]) == {"return", "loss", "throughput", "breakdown"}
    for stem, plot in rep["plots"].items():
        assert (tmp_path / f"{stem}.png").read_bytes().startswith(PNG_MAGIC)
        svg = (tmp_path / f"{stem}.svg").read_text()
        for part in ("CartPole-v1", "DQN", "int8", "Q-network 256x256"):
            assert part in plot["title"] and part in svg, (stem, part)
    assert rep["figures"]["env_steps"] == summary["env_steps"]
    assert rep["figures"]["final_eval"]["int8"]["mean_return"] == summary["eval"]["int8"]


def _summary(
    precision: str, seed: int, ttt: float | None, co2: float, sps: float
) -> dict[str, Any]:
    return {
        "precision": precision,
        "seed": seed,
        "target_return": 475.0,
        "reached_target": ttt is not None,
        "time_to_target_s": ttt,
        "env_steps_to_target": 1000 if ttt else None,
        "eval": {precision: 480.0},
        "actor_env_steps_per_s": sps,
        "model_bytes": {precision: 4000 if precision == "int8" else 16000},
        "model_swap_ms": {"pull": 1.0, "load": 2.0, "swaps": 3},
        "energy_kwh": co2 * 3,
        "emissions_kg": co2,
        "carbon": {"status": "ok", "measured": False, "power": "estimated"},
    }


def _two_fp32_three_int8_one_missed(tmp_path: Path) -> list[report.Run]:
    """fp32 seeds 0-1 at 30 and 50 s; int8 seeds 0-2 at 10 s, 30 s and missed."""
    return [
        report.Run(tmp_path / "a", _summary("fp32", 0, 30.0, 3.0, 100.0)),
        report.Run(tmp_path / "b", _summary("int8", 0, 10.0, 1.0, 300.0)),
        report.Run(tmp_path / "c", _summary("fp32", 1, 50.0, 5.0, 100.0)),
        report.Run(tmp_path / "d", _summary("int8", 1, 30.0, 3.0, 500.0)),
        report.Run(tmp_path / "e", _summary("int8", 2, None, 9.0, 400.0)),
    ]


def test_ratios_are_fp32_over_int8_of_the_medians_over_seeds(tmp_path: Path) -> None:
    agg = report.aggregate(_two_fp32_three_int8_one_missed(tmp_path))
    int8 = agg["precisions"]["int8"]
    assert int8["reached"] == 2
    # Time to target: over the runs that reached it (int8 median of 10 and 30).
    assert int8["time_to_target_s"] == {
        "median": 20.0,
        "mean": 20.0,
        "min": 10.0,
        "max": 30.0,
        "n": 2,
    }
    # The time ratio counts int8's missed run as never (int8 median 30 of 10, 30, inf).
    assert agg["ratios"]["time_to_target"] == pytest.approx(40.0 / 30.0)
    assert agg["ratios"]["emissions"] == pytest.approx(4.0 / 3.0)
    assert agg["ratios"]["actor_env_steps_per_s"] == pytest.approx(400.0 / 100.0)
    assert agg["ratios"]["model_bytes"] == pytest.approx(4.0)
    assert [(r["precision"], r["seed"]) for r in agg["runs"]] == [
        ("fp32", 0),
        ("fp32", 1),
        ("int8", 0),
        ("int8", 1),
        ("int8", 2),
    ]


def test_the_time_ratio_has_a_bootstrap_interval_and_a_missed_int8_run_counts_against_int8(
    tmp_path: Path,
) -> None:
    agg = report.aggregate(_two_fp32_three_int8_one_missed(tmp_path))
    interval = agg["time_ratio_interval"]
    # int8's missed run counts as never: its median is 30 (10, 30, inf), not 20.
    assert interval["point"] == pytest.approx(40.0 / 30.0)
    assert interval["low"] <= interval["point"] <= interval["high"]
    assert (interval["n_a"], interval["n_b"]) == (2, 3)
    _, rows = report.table_rows(agg)
    time_row = next(r for r in rows if r[0].startswith("time to target"))
    assert time_row[-1] == (f"1.33x [{interval['low']:.2f}-{interval['high']:.2f}]")


def test_one_precision_alone_has_no_time_ratio_interval(tmp_path: Path) -> None:
    runs = [report.Run(tmp_path / "a", _summary("int8", 0, 10.0, 1.0, 300.0))]
    assert report.aggregate(runs)["time_ratio_interval"] is None
