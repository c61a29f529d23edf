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
from commands import report
from commands.bench.scenario import (
    check_precisions,
    load_scenario,
    run_bench,
    scenario_names,
)
from commands.bench.suite import load_suite, run_suite, suite_names
from commands.carbon import DEFAULT_COUNTRY, check_country
from commands.report import build
from commands.report.suite import build_suite


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
        return _main_suite(args)
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
        country = _check_seeds_and_country(args.seeds, args.carbon_country)
    except ConfigError as err:
        return _refuse(err)
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

    code = report.main([str(out), "--out", str(out)])
    failed = [r for r in records if r["returncode"] != 0]
    if failed:
        print(
            f"actorq bench: {len(failed)} run(s) did not end at the target or a budget: "
            + ", ".join(f"{r['precision']} seed {r['seed']} ({r['dir']})" for r in failed),
            file=sys.stderr,
        )
    return code or (1 if failed else 0)


def _check_seeds_and_country(seeds: int, carbon_country: str) -> str:
    """The grid code to use; ConfigError for fewer than one seed or an unknown country."""
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: need at least one seed")
    return check_country(carbon_country)


def _refuse(err: ConfigError) -> int:
    print(f"actorq bench: {err}", file=sys.stderr)
    return 2


def _main_suite(args: argparse.Namespace) -> int:
    """``actorq bench --suite NAME [--seeds K] [--out DIR]``: run (or continue) a suite,
    then write every scenario's report and the suite's."""
    try:
        suite = load_suite(args.suite)
        seeds = suite.seeds if args.seeds is None else args.seeds
        country = _check_seeds_and_country(seeds, args.carbon_country)
    except ConfigError as err:
        return _refuse(err)
    out = Path(args.out or f"runs/suite-{suite.name}")
    total = sum(len(s.precisions) for s in suite.scenarios) * seeds
    print(
        f"actorq bench: suite {suite.name} ({suite.description}); "
        f"{len(suite.scenarios)} scenarios x seeds {args.first_seed}..{args.first_seed + seeds - 1}"
        f"; {total} runs into {out} (finished runs there are kept)",
        file=sys.stderr,
    )
    command = " ".join(["actorq", "bench", *sys.argv[2:]]) if sys.argv[1:2] == ["bench"] else ""
    try:
        state = run_suite(suite, seeds, out, args.first_seed, country, command)
    except ConfigError as err:  # a scenario changed under its finished runs
        return _refuse(err)
    except KeyboardInterrupt:
        print(
            f"\nactorq bench: interrupted; rerun the same command to continue ({out})",
            file=sys.stderr,
        )
        return 130
    for scenario in suite.scenarios:
        done = [out / r.dir for r in state.runs if r.scenario == scenario.name and r.stop_reason]
        if done:
            build(done, out / scenario.name)
    build_suite(out)
    failed = [r for r in state.runs if r.status == "failed"]
    for r in failed:
        print(
            f"actorq bench: {r.scenario} {r.precision} s{r.seed} failed ({r.dir})", file=sys.stderr
        )
    print(f"suite report: {out / 'report.md'}")
    return 1 if failed else 0
