"""`actorq report RUN_DIR...`: fp32 vs int8 runs -> report.md, report.json and PNG plots.

Each argument is a run directory (with summary.json), a bench directory (with
bench.json and runs/*/), or any directory holding run directories below it.
Runs are grouped by the precision their actors ran. Writes to ``--out``
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

from commands.bench.machine import machine_info
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
    agg["machine"] = machine_info(("numpy", "onnxruntime", "torch", "codecarbon"))
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
    """`actorq report RUN_DIR... [--out DIR] [--actor-bench FILE]`."""
    p = argparse.ArgumentParser(
        prog="actorq report",
        description="Turn actorq train/bench runs into report.md, report.json and PNG plots.",
    )
    p.add_argument(
        "paths", nargs="+", help="run directories, bench directories, or parents of runs"
    )
    p.add_argument(
        "--out", default="", help="output directory (default: the one path given, else ./report)"
    )
    p.add_argument(
        "--actor-bench",
        default="",
        help=f"micro-benchmark JSON (default: {ACTOR_BENCH_FILE} in a given directory)",
    )
    args = p.parse_args(list(argv))
    out = Path(args.out or (args.paths[0] if len(args.paths) == 1 else "report"))
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
