"""`actorq report DIR...`: one run's report, or fp32 vs int8 runs compared.

Which report depends on what is given:

- one ``actorq train`` run directory (summary.json, metrics.jsonl or evals.jsonl
  in it; finished or interrupted): the one-run report (``commands.report.single``:
  return, loss, throughput and time breakdown, PNG and SVG);
- a suite directory (``actorq bench --suite``, with suite.json): the suite
  report (``commands.report.suite``);
- a bench directory (bench.json and runs/*/), any directory holding run
  directories below it, or several run directories: the comparison below.

The comparison groups runs by the precision their actors ran. Writes to ``--out``
(default: the single directory given, else ./report):

    report.md            tables: per precision, ratios, per run, micro-benchmark
    report.json          every number in the tables
    return_vs_time.png   greedy return against wall-clock, mean and min-max over seeds
    speedup.png          fp32/int8 ratios (time to target, CO2, energy, steps/s, bytes, swap)
    co2.png              CO2 per precision normalized to FP32
    breakdown.png        actor step (env, inference, send, other) and model swap (pull, load)

Energy and CO2 come from codecarbon; the power source (RAPL counters or a
CPU-load model) is printed next to every figure, since without RAPL they are
estimates.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from commands import machine
from commands.report.data import (
    ACTOR_BENCH_FILE,
    ReportError,
    Run,
    aggregate,
    find_actor_bench,
    find_runs,
    read_bench_meta,
)
from commands.report.markdown import carbon_note, markdown, table_rows, text_table
from commands.report.plots import plot_breakdown, plot_co2, plot_return_vs_time, plot_speedup
from commands.report.single_data import RUN_FILES, is_run_dir

PLOTS = ("return_vs_time.png", "speedup.png", "co2.png", "breakdown.png")
__all__ = ["PLOTS", "ReportError", "Run", "aggregate", "build", "main"]


def build(
    paths: Sequence[str | Path],
    out: Path,
    actor_bench: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Read the runs under paths, write report.md, report.json and the plots to out."""
    runs = find_runs(paths)
    if not runs:
        raise ReportError("no runs found")
    out.mkdir(parents=True, exist_ok=True)
    agg = aggregate(runs)
    bench = actor_bench if actor_bench is not None else find_actor_bench([*paths, out])
    meta = read_bench_meta(paths)
    agg["machine"] = machine.of_runs(
        [r.summary.machine for r in runs], [r.summary.learner_device for r in runs]
    )
    agg["bench"] = {k: v for k, v in meta.items() if k != "runs"} if meta else None
    agg["actor_bench"] = bench
    plot_return_vs_time(runs, agg, out / "return_vs_time.png")
    plot_speedup(agg, out / "speedup.png")
    plot_co2(agg, out / "co2.png")
    plot_breakdown(agg, out / "breakdown.png")
    (out / "report.json").write_text(json.dumps(agg, indent=2))
    (out / "report.md").write_text(markdown(agg, out, runs))
    return agg


def main(argv: Sequence[str]) -> int:
    """`actorq report DIR... [--out DIR] [--actor-bench FILE] [--name NAME]`."""
    p = argparse.ArgumentParser(
        prog="actorq report",
        description=(
            "One train run's report (return, loss, throughput, time breakdown; PNG and SVG), "
            "or the fp32 vs int8 runs of a bench directory compared: report.md, report.json "
            "and plots."
        ),
    )
    p.add_argument(
        "paths",
        nargs="+",
        help="one train run directory (its own report), or bench directories, parents of "
        "runs or several run directories (compared)",
    )
    p.add_argument(
        "--out", default="", help="output directory (default: the one path given, else ./report)"
    )
    p.add_argument(
        "--actor-bench",
        default="",
        help=f"micro-benchmark JSON (default: {ACTOR_BENCH_FILE} in a given directory)",
    )
    p.add_argument(
        "--name",
        default="report",
        help="file name stem of a suite report (NAME.md, NAME-*.png; e.g. paper-suite)",
    )
    args = p.parse_args(list(argv))
    out = Path(args.out or (args.paths[0] if len(args.paths) == 1 else "report"))
    if len(args.paths) == 1 and (refused := neither(Path(args.paths[0]))):
        print(f"actorq report: {refused}", file=sys.stderr)
        return 2
    if len(args.paths) == 1 and is_run_dir(Path(args.paths[0])):
        return one_run(Path(args.paths[0]), out)
    if len(args.paths) == 1 and (Path(args.paths[0]) / "suite.json").is_file():
        from commands.report.suite import build_suite

        try:
            build_suite(Path(args.paths[0]), out, args.name)
        except ReportError as err:
            print(f"actorq report: {err}", file=sys.stderr)
            return 2
        print(f"suite report: {out / (args.name + '.md')}")
        return 0
    bench = None
    if args.actor_bench:
        try:
            bench = json.loads(Path(args.actor_bench).read_text())
        except (OSError, ValueError) as err:
            print(f"actorq report: --actor-bench {args.actor_bench}: {err}", file=sys.stderr)
            return 2
    try:
        agg = build(args.paths, out, bench)
    except ReportError as err:
        print(f"actorq report: {err}", file=sys.stderr)
        return 2
    header, rows = table_rows(agg)
    print(text_table(header, rows))
    print(carbon_note(agg))
    print(f"report: {out / 'report.md'} (plots: {', '.join(PLOTS)})")
    return 0


def neither(path: Path) -> str:
    """One sentence when path is neither a run, a bench nor a suite directory ('' if it is)."""
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        return f"{path} {what}: give an actorq train run directory or a bench directory."
    if is_run_dir(path) or (path / "suite.json").is_file():
        return ""
    # Run directories below it, finished or not (the comparison needs their summary.json).
    if any(next(path.rglob(name), None) for name in RUN_FILES):
        return ""
    return (
        f"{path} is neither an actorq train run directory ({' or '.join(RUN_FILES)} in it) "
        "nor a bench directory (run directories below it, as in runs/): no run directory to "
        "report on; give one of those."
    )


def one_run(run_dir: Path, out: Path) -> int:
    """The one-run report of a train run directory (``commands.report.single``)."""
    from commands.report.single import build_single, terminal

    try:
        report = build_single(run_dir, out)
    except ReportError as err:
        print(f"actorq report: {err}", file=sys.stderr)
        return 2
    print(terminal(report, out))
    return 0
