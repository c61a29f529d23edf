"""`actorq report RUN_DIR` on one train run: plots from what the run wrote, and nothing else.

The run directories here are written with the launcher's own writers: config.yaml
from ``resolve_run``, metrics.jsonl rows from ``Watch.record`` on status messages,
evals.jsonl from ``append_eval`` and summary.json from ``RunSummary.write``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from actorq.v1 import actor_pb2, learner_pb2
from commands import report
from commands.report.single import build_single, not_plotted
from commands.report.single_data import MetricsRow, read_metrics, read_one_run
from commands.report.single_plots import PLOTTERS, breakdown_panels
from commands.train.args import TrainArgs
from commands.train.configs import resolve_run
from commands.train.monitor import Snapshot, Watch
from commands.train.regime import Regime
from commands.train.state import RunState
from commands.train.summary import (
    METRICS_FILE,
    EvalRecord,
    RunSummary,
    StepBreakdown,
    append_eval,
    eval_figures,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# What every title must name: env, algorithm, precision and the network size of the overlay.
TITLE_PARTS = ("CartPole-v1", "DQN", "int8", "Q-network 64x32")


def write_config(run: Path, tmp_path: Path) -> TrainArgs:
    """config.yaml as the launcher writes it, for a DQN run with a 64x32 Q-network."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"learner": {"dqn": {"hidden_sizes": [64, 32]}}}))
    args = TrainArgs(
        env="CartPole-v1", algo="dqn", precision="int8", seed=3, target_return=100.0,
        actors=1, config=str(overlay),
    )  # fmt: skip
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(yaml.safe_dump(resolve_run(args, run).file(), sort_keys=False))
    return args


def write_metrics(run: Path, polls: list[tuple[float, int, bool]]) -> None:
    """metrics.jsonl rows built by the launcher's own ``Watch.record``: per poll (seconds,
    env steps, whether the learner answered)."""
    # A Watch without services: record() reads only its state, its actors' names and the poll.
    watch = Watch.__new__(Watch)
    watch.state = RunState()
    watch.actors = {"actor-0": None}  # type: ignore[dict-item]
    with open(run / METRICS_FILE, "a") as f:
        for t_s, env_steps, learner_answered in polls:
            watch.state.t0 = time.monotonic() - t_s
            learner = None
            if learner_answered:
                learner = learner_pb2.LearnerStatus(
                    learner_steps=env_steps // 4,
                    learner_steps_per_s=120.0 + t_s,
                    loss=1.0 / (1.0 + t_s),
                )
            actor = actor_pb2.ActorStatus(env_steps=env_steps, env_steps_per_s=900.0 - t_s)
            f.write(json.dumps(watch.record(Snapshot(learner=learner, actors=[actor]))) + "\n")


def evaluation(t_s: float, ret: float, episodes: int = 5, early: bool = False) -> EvalRecord:
    return EvalRecord(
        t_s=t_s, version=int(t_s), precision="int8", mean_return=ret, episodes=episodes,
        stopped_early=early, env_steps=int(t_s * 800), duration_s=0.5,
    )  # fmt: skip


def finished_run(tmp_path: Path) -> Path:
    """A run that reached its target, with every file the launcher writes."""
    run = tmp_path / "run"
    args = write_config(run, tmp_path)
    write_metrics(run, [(t, int(t * 800), True) for t in (1.0, 2.0, 3.0, 4.0, 5.0)])
    history = [evaluation(2.0, 20.0), evaluation(3.0, 40.0, 2, early=True), evaluation(5.0, 120.0)]
    for record in history:
        append_eval(run, record)
    final = {"int8": history[-1], "fp32": EvalRecord(**{**vars(history[-1]), "precision": "fp32"})}
    RunSummary(
        env=args.env, algo=args.algo, precision=args.precision, seed=args.seed,
        target_return=args.target_return, stop_reason="target_reached", env_steps=4000,
        learner_steps=1000, wall_s=5.5, **eval_figures(final, history, history[-1]),
        actor_env_steps_per_s=850.0, model_bytes={"int8": 7000, "fp32": 21000},
        breakdown_us_per_step=StepBreakdown(env=20.0, inference=15.0, send=900.0, other=5.0),
        regime=Regime(actor_wait_share=0.9, learner_wait_share=0.05, learner_update_share=0.8,
                      cpu_share={"actors": 0.4, "learner": 0.5, "total": 0.9}, cpus=2,
                      bound="learner", sentence="Learner-bound: the actors waited."),
    ).write(run)  # fmt: skip
    return run


@pytest.fixture(scope="module")
def reported_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run and its report, made by `actorq report RUN_DIR`'s entry point."""
    run = finished_run(tmp_path_factory.mktemp("single"))
    assert report.main([str(run)]) == 0
    return run


def test_one_run_report_writes_every_plot_as_png_and_svg_titled_with_env_algo_precision_size(
    reported_run: Path,
) -> None:
    run = reported_run
    rep = json.loads((run / "report.json").read_text())
    assert rep["kind"] == "train_run"
    assert set(rep["plots"]) == set(PLOTTERS)
    text = (run / "report.md").read_text()
    for stem, plot in rep["plots"].items():
        assert (run / f"{stem}.png").read_bytes().startswith(PNG_MAGIC)
        svg = (run / f"{stem}.svg").read_text()
        for part in TITLE_PARTS:
            assert part in plot["title"], (stem, part)
            assert part in svg, (stem, part)
        assert f"]({stem}.png)" in text and f"]({stem}.svg)" in text
    assert "Learner-bound: the actors waited." in text
    # Evaluations carry their episode counts; the final ones both precisions.
    svg = (run / "return.svg").read_text()
    assert "greedy int8 (mean of 5 episodes)" in svg
    assert "stopped early: target out of reach (mean of 2 episodes)" in svg
    assert "final fp32: 120.0 (mean of 5 episodes)" in svg
    assert rep["figures"]["final_eval"]["int8"] == {"mean_return": 120.0, "episodes": 5}


def test_interrupted_run_without_summary_skips_each_plot_it_has_no_data_for(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    write_config(run, tmp_path)
    # The learner never answered; the launcher was killed in the middle of a line.
    write_metrics(run, [(1.0, 500, False), (2.0, 1500, False)])
    with open(run / METRICS_FILE, "a") as f:
        f.write('{"t_s": 3.0, "env_st')
    (run / "return.png").write_bytes(PNG_MAGIC)  # an earlier report's plot
    rep = build_single(run, run)
    assert set(rep["plots"]) == {"throughput"}
    for stem in ("return", "loss", "breakdown"):
        assert not (run / f"{stem}.png").exists() and not (run / f"{stem}.svg").exists()
    assert "learner updates/s" not in (run / "throughput.svg").read_text()
    assert rep["figures"]["env_steps"] == 1500 and rep["figures"]["wall_s"] == 2.0
    text = (run / "report.md").read_text()
    for what in ("greedy and training return", "learner loss", "time breakdown"):
        assert f"- {what}: not plotted, " in text
    assert "no summary.json" in text
    assert "1 line(s) of metrics.jsonl could not be read" in text
    for part in TITLE_PARTS:
        assert part in rep["plots"]["throughput"]["title"]


def test_a_bare_ctrl_c_summary_reports_from_metrics_and_draws_no_breakdown(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    write_config(run, tmp_path)
    write_metrics(run, [(1.0, 500, True), (2.0, 1500, True)])
    RunSummary(env="CartPole-v1", algo="dqn", precision="int8", stop_reason="interrupted").write(
        run
    )
    rep = build_single(run, run)
    assert set(rep["plots"]) == {"loss", "throughput"}
    assert rep["figures"]["learner_steps"] == 375
    assert any("holds no measurements (stop reason: interrupted)" in n for n in rep["notes"])


def test_a_run_stopped_after_one_poll_draws_its_single_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A series of one point is a dot: a line alone would leave the plot empty."""
    import matplotlib.pyplot as plt

    run = tmp_path / "run"
    write_config(run, tmp_path)
    write_metrics(run, [(1.0, 500, True)])
    row = json.loads((run / METRICS_FILE).read_text())
    (run / METRICS_FILE).write_text(json.dumps({**row, "train_return": 21.5}) + "\n")
    one = read_one_run(run)
    drawn: list[Any] = []
    monkeypatch.setattr(plt, "close", drawn.append)  # keep each figure to look at
    for stem in ("return", "loss", "throughput"):
        assert not isinstance(PLOTTERS[stem][1](one, run), str), stem
        series = [
            ln for ax in drawn.pop().axes for ln in ax.get_lines() if len(ln.get_xdata()) == 1
        ]
        assert series and all(ln.get_marker() not in ("None", "", None) for ln in series), stem


def test_the_breakdown_has_no_bar_for_a_figure_that_was_not_measured(reported_run: Path) -> None:
    one = read_one_run(reported_run)
    assert one.summary is not None
    one.summary.regime = Regime(actor_wait_share=0.3, learner_update_share=0.6)
    one.summary.breakdown_us_per_step = StepBreakdown()  # no actor polled: all zero
    panels = breakdown_panels(one)
    assert [[label for label, _ in bars] for _title, bars, _unit in panels] == [
        [
            "actors: waiting on replay\n(share of step time)",
            "learner: updating\n(share of loop time)",
        ]
    ]


def test_launcher_metrics_rows_read_back_with_their_values(tmp_path: Path) -> None:
    write_metrics(tmp_path, [(1.0, 800, True), (2.0, 1600, False)])
    rows, bad = read_metrics(tmp_path)
    assert bad == 0
    assert [(r.env_steps, r.env_steps_per_s, r.learner_steps) for r in rows] == [
        (800, 899.0, 200),
        (1600, 898.0, 200),
    ]
    assert rows[0].loss == pytest.approx(0.5) and rows[0].learner_steps_per_s == 121.0
    assert rows[1].loss is None and rows[1].learner_steps_per_s is None


def test_a_missing_training_return_is_said_in_one_line(reported_run: Path) -> None:
    one = read_one_run(reported_run)
    one.metrics = [MetricsRow(t_s=1.0, env_steps=100)]
    assert sum("training episode return" in line for line in not_plotted(one, {})) == 1
    one.metrics = [MetricsRow(t_s=1.0, env_steps=100, train_return=12.0)]
    assert not any("training episode return" in line for line in not_plotted(one, {}))


def test_report_tells_a_run_directory_from_a_bench_directory_and_refuses_neither(
    reported_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run directory gets the one-run report (``reported_run``), a directory with
    runs below it the fp32-vs-int8 comparison, anything else one sentence."""
    bench = tmp_path / "bench"
    run = bench / "runs" / "int8-s0"
    shutil.copytree(reported_run, run)
    assert report.main([str(run / "summary.json")]) == 2
    assert report.main([str(bench)]) == 0
    assert "int8" in json.loads((bench / "report.json").read_text())["precisions"]
    capsys.readouterr()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report.main([str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "is neither an actorq train run directory" in err and "nor a bench directory" in err
