"""`actorq bench --scenario NAME | --suite NAME`: the command line for end-to-end runs.

The scenario model and its runner live in scenario.py, the suite runner in
suite.py; this module only parses the flags and hands over, so neither of
those imports the other's entry point.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from actorq.config import ConfigError
from commands.bench.scenario import (
    check_precisions,
    load_scenario,
    run_bench,
    scenario_names,
)
from commands.bench.suite import load_suite, main_suite, suite_names
from commands.carbon import DEFAULT_COUNTRY, check_country


def main(argv: list[str]) -> int:
    """`actorq bench --scenario NAME --seeds K [--precisions fp32,int8] [--out DIR]`."""
    p = argparse.ArgumentParser(
        prog="actorq bench",
        description="Train a scenario at several precisions and seeds (interleaved), then "
        "write the report. Also: `actorq bench actor` (inference micro-benchmark).",
    )
    p.add_argument("--scenario", help="shipped scenario name or path to a scenario .yaml")
    p.add_argument(
        "--suite",
        help="shipped suite name (e.g. paper) or path to a suite .yaml: several scenarios, "
        "resumable (rerun the same command to continue an interrupted suite)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds per precision (0, 1, ...; default 2, a suite's own for --suite)",
    )
    p.add_argument("--first-seed", type=int, default=0, help="first seed")
    p.add_argument(
        "--precisions", default=None, help="comma-separated (default: the scenario's, fp32,int8)"
    )
    p.add_argument("--out", default="", help="bench directory (default runs/bench-NAME-TIME)")
    p.add_argument(
        "--carbon-country",
        default=DEFAULT_COUNTRY,
        help=f"ISO alpha-3 grid code for CO2 (default {DEFAULT_COUNTRY})",
    )
    p.add_argument(
        "--actor-bench",
        action="store_true",
        help="also run `actorq bench actor` into OUT/bench-actor.json (for the report's table)",
    )
    p.add_argument(
        "--list", action="store_true", help="list the shipped scenarios and suites and exit"
    )
    p.add_argument("--quiet", action="store_true", help="no per-run progress line")
    args = p.parse_args(argv)
    if args.list:
        for name in scenario_names():
            print(f"{name:<32} {load_scenario(name).description}")
        for name in suite_names():
            print(f"suite {name:<26} {load_suite(name).description}")
        return 0
    if args.suite:
        return main_suite(args)
    if not args.scenario:
        p.error(f"--scenario or --suite is required; shipped: {', '.join(scenario_names())}")
    args.seeds = 2 if args.seeds is None else args.seeds
    try:
        scenario = load_scenario(args.scenario)
        precisions = (
            check_precisions(args.precisions.split(","), "--precisions")
            if args.precisions
            else scenario.precisions
        )
        if args.seeds < 1:
            raise ConfigError(f"--seeds {args.seeds}: need at least one seed")
        country = check_country(args.carbon_country)
    except ConfigError as err:
        print(f"actorq bench: {err}", file=sys.stderr)
        return 2
    out = Path(args.out or f"runs/bench-{scenario.name}-{int(time.time())}")
    print(
        f"actorq bench: scenario {scenario.name} ({scenario.description}); precisions "
        f"{', '.join(precisions)}; seeds {args.first_seed}..{args.first_seed + args.seeds - 1}; "
        f"{len(precisions) * args.seeds} runs into {out}",
        file=sys.stderr,
    )
    try:
        if args.actor_bench:
            from commands.bench.actor import main as actor_bench

            actor_bench(["--out", str(out / "bench-actor.json")])
        records = run_bench(
            scenario,
            args.seeds,
            precisions,
            out,
            args.first_seed,
            country,
            args.quiet,
        )
    except KeyboardInterrupt:
        print(f"\nactorq bench: interrupted; finished runs are in {out}/runs", file=sys.stderr)
        return 130
    from commands import report

    code = report.main([str(out), "--out", str(out)])
    failed = [r for r in records if r["returncode"] != 0]
    if failed:
        print(
            f"actorq bench: {len(failed)} run(s) did not end at the target or a budget: "
            + ", ".join(f"{r['precision']} seed {r['seed']} ({r['dir']})" for r in failed),
            file=sys.stderr,
        )
    return code or (1 if failed else 0)
