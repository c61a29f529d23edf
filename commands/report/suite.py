"""The suite report: every scenario of an ``actorq bench --suite`` run, with intervals.

Per scenario, over its seeds (``commands.bench.stats``):

- time to target per precision (median, range) and the fp32/int8 ratio of the
  medians with a percentile-bootstrap 95% interval; a run that missed the
  target counts conservatively (``stats.time_to_target``);
- final return: the final full greedy evaluation of each run's *int8* policy
  (the version that reached the target, or the last one), median per
  precision with its 95% interval, and whether the two precisions' runs are
  equivalent within 5% (90% interval of the relative difference inside +-5%);
- energy and CO2 ratios fp32/int8 (codecarbon's offline tracker per service
  process; its method is stated with the numbers) with intervals;
- the regime of each precision's runs (which side bounded them).

Writes NAME.md, NAME.json and NAME-*.png into the output directory;
``actorq report SUITE_DIR`` rebuilds them from the run directories alone.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actorq.network import PRECISIONS
from commands import machine
from commands.bench.stats import equivalent
from commands.report.data import (
    ReportError,
    Run,
    find_runs,
    ratio_interval,
    time_ratio_interval,
)
from commands.report.suite_plots import plot_curves, plot_ratios

SUITE_FILE = "suite.json"
MARGIN = 0.05


def _median(values: Sequence[float | None]) -> float | None:
    clean = [float(v) for v in values if v is not None]
    return statistics.median(clean) if clean else None


def _range(values: Sequence[float | None]) -> list[float] | None:
    clean = [float(v) for v in values if v is not None]
    return [min(clean), max(clean)] if clean else None


def _median_interval(values: Sequence[float]) -> dict[str, Any] | None:
    """The median of values with its bootstrap 95% interval (as a ratio to 1.0)."""
    return ratio_interval(values, [1.0])


def final_int8_return(run: Run) -> float | None:
    """The run's final full evaluation of its int8 policy."""
    value = run.summary.eval.get("int8")
    return float(value) if value is not None else None


def twin_gap(run: Run) -> float | None:
    """(int8 - fp32) / |fp32| of the run's final policy evaluated in both precisions (the
    same weights): what quantization cost that policy in return; None without both."""
    int8, fp32 = run.summary.eval.get("int8"), run.summary.eval.get("fp32")
    if int8 is None or fp32 is None:
        return None
    return (float(int8) - float(fp32)) / max(abs(float(fp32)), 1e-9)


def precision_figures(runs: Sequence[Run]) -> dict[str, Any]:
    """One precision's numbers over its seeds."""
    s = [r.summary for r in runs]
    reached = [x for x in s if x.reached_target]
    twin_gaps = [twin_gap(r) for r in runs]
    bounds = Counter(x.regime.bound for x in s if x.regime is not None and x.regime.bound)
    return {
        "runs": len(runs),
        "seeds": sorted(x.seed for x in s),
        "reached": len(reached),
        "time_to_target_s": _median([x.time_to_target_s for x in reached]),
        "time_to_target_range": _range([x.time_to_target_s for x in reached]),
        "env_steps_to_target": _median([x.env_steps_to_target for x in reached]),
        "final_int8_return": _median_interval(
            [v for r in runs if (v := final_int8_return(r)) is not None]
        ),
        "twin_gap": _median(twin_gaps),
        "twin_gap_range": _range(twin_gaps),
        "actor_env_steps_per_s": _median([x.observed_env_steps_per_s for x in s]),
        "learner_steps_per_s": _median([x.learner_steps_per_s for x in s]),
        "energy_kwh": _median([x.energy_kwh for x in s]),
        "emissions_kg": _median([x.emissions_kg for x in s]),
        "bound": dict(bounds),
        "actor_wait_share": _median([x.regime.actor_wait_share for x in s if x.regime is not None]),
        "learner_wait_share": _median(
            [x.regime.learner_wait_share for x in s if x.regime is not None]
        ),
        "cpu_share_total": _median(
            [x.regime.cpu_share.get("total") for x in s if x.regime is not None]
        ),
        "regime_sentences": [x.regime.sentence for x in s if x.regime is not None][:1],
        "carbon_power": next((x.carbon.power for x in s if x.carbon.power), None),
    }


def scenario_figures(name: str, runs: Sequence[Run]) -> dict[str, Any]:
    """Everything the suite report says about one scenario."""
    by: dict[str, list[Run]] = {p: [r for r in runs if r.precision == p] for p in PRECISIONS}
    fp32, int8 = by["fp32"], by["int8"]
    finals = {p: [v for r in by[p] if (v := final_int8_return(r)) is not None] for p in PRECISIONS}
    co2 = {p: [r.summary.emissions_kg for r in by[p]] for p in PRECISIONS}
    energy = {p: [r.summary.energy_kwh for r in by[p]] for p in PRECISIONS}
    measured = all(v is not None for p in PRECISIONS for v in co2[p]) and fp32 and int8
    eq = equivalent(finals["fp32"], finals["int8"], MARGIN)
    first = (fp32 or int8)[0].summary if (fp32 or int8) else None
    return {
        "name": name,
        "env": first.env if first else "",
        "algo": first.algo if first else "",
        "target_return": first.target_return if first else None,
        "precisions": {p: precision_figures(by[p]) for p in PRECISIONS if by[p]},
        "time_ratio": time_ratio_interval(by["fp32"], by["int8"]),
        "time_ratio_eval_start": time_ratio_interval(by["fp32"], by["int8"], at_eval_start=True),
        "co2_ratio": ratio_interval(
            [float(v) for v in co2["fp32"] if v is not None],
            [float(v) for v in co2["int8"] if v is not None],
        )
        if measured
        else None,
        "energy_ratio": ratio_interval(
            [float(v) for v in energy["fp32"] if v is not None],
            [float(v) for v in energy["int8"] if v is not None],
        )
        if measured
        else None,
        "final_return_equivalence": eq.as_dict() if eq else None,
    }


def read_suite(out: Path) -> tuple[dict[str, Any], dict[str, list[Run]]]:
    """suite.json and the runs of each of its scenarios (those finished so far)."""
    try:
        meta: dict[str, Any] = json.loads((out / SUITE_FILE).read_text())
    except (OSError, ValueError) as err:
        raise ReportError(f"{out}: cannot read {SUITE_FILE} ({err})") from None
    runs: dict[str, list[Run]] = {}
    for name in meta.get("scenarios", []):
        directory = out / name / "runs"
        if directory.is_dir() and any(directory.rglob("summary.json")):
            found = [r for r in find_runs([directory]) if ".incomplete-" not in r.dir.name]
            runs[name] = found
    return meta, runs


def build_suite(out: Path, dest: Path | None = None, name: str = "report") -> dict[str, Any]:
    """Write NAME.md, NAME.json and the plots for the suite in ``out`` into dest."""
    dest = dest or out
    dest.mkdir(parents=True, exist_ok=True)
    meta, runs = read_suite(out)
    if not runs:
        raise ReportError(f"{out}: no finished run in the suite yet")
    scenarios = [scenario_figures(n, r) for n, r in runs.items()]
    result = {
        "suite": meta.get("suite"),
        "description": meta.get("description"),
        "command": meta.get("command"),
        "seeds": meta.get("seeds"),
        "machine": machine.of_runs(
            [r.summary.machine for rs in runs.values() for r in rs],
            [r.summary.learner_device for rs in runs.values() for r in rs],
        ),
        "scenarios": scenarios,
    }
    plots = {}
    for scenario in scenarios:
        path = dest / f"{name}-{scenario['name']}.png"
        plot_curves(runs[scenario["name"]], scenario, path)
        plots[scenario["name"]] = path.name
    plot_ratios(scenarios, dest / f"{name}-ratios.png")
    (dest / f"{name}.json").write_text(json.dumps(result, indent=2))
    (dest / f"{name}.md").write_text(markdown(result, plots, f"{name}-ratios.png"))
    return result


# ------------------------------------------------------------------ markdown


def _s(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def _ci(interval: dict[str, Any] | None, fmt: str = ".2f", suffix: str = "x") -> str:
    if not interval:
        return "-"
    return f"{interval['point']:{fmt}}{suffix} [{interval['low']:{fmt}}-{interval['high']:{fmt}}]"


def _time_cell(p: dict[str, Any] | None) -> str:
    if not p:
        return "-"
    text = f"{_s(p['time_to_target_s'])} ({p['reached']}/{p['runs']})"
    if p["time_to_target_range"]:
        lo, hi = p["time_to_target_range"]
        text += f" [{lo:.0f}-{hi:.0f}]"
    return text


def _bound_cell(p: dict[str, Any] | None) -> str:
    if not p or not p["bound"]:
        return "-"
    return ", ".join(f"{k} {v}" for k, v in sorted(p["bound"].items()))


def _equivalence_cell(eq: dict[str, Any] | None) -> str:
    if not eq:
        return "-"
    d = eq["difference"]
    verdict = (
        "yes" if eq["shown"] else ("within 5% (point), not shown" if eq["within_point"] else "no")
    )
    return f"{verdict}: {d['point']:+.1%} [{d['low']:+.1%}, {d['high']:+.1%}]"


def summary_table(scenarios: Sequence[dict[str, Any]]) -> list[str]:
    """The headline table: one row per scenario."""
    lines = [
        "| scenario | target | time to target s, fp32 (reached) [range] | int8 | fp32/int8 time "
        "[95% CI] | final int8-policy return, fp32 runs / int8 runs | equivalent within 5% | "
        "CO2 fp32/int8 [95% CI] | bound (fp32 / int8) |",
        "|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for sc in scenarios:
        p = sc["precisions"]
        finals = " / ".join(
            _s((p.get(q, {}).get("final_int8_return") or {}).get("point")) for q in PRECISIONS
        )
        lines.append(
            f"| {sc['name']} | {_s(sc['target_return'], 'g')} | {_time_cell(p.get('fp32'))} | "
            f"{_time_cell(p.get('int8'))} | {_ci(sc['time_ratio'])} | {finals} | "
            f"{_equivalence_cell(sc['final_return_equivalence'])} | {_ci(sc['co2_ratio'])} | "
            f"{_bound_cell(p.get('fp32'))} / {_bound_cell(p.get('int8'))} |"
        )
    return lines


def _twin_cell(p: dict[str, Any] | None) -> str:
    if not p or p.get("twin_gap") is None:
        return "n/a"
    low, high = p["twin_gap_range"]
    return f"{p['twin_gap']:+.1%} [{low:+.1%}, {high:+.1%}]"


def _scenario_section(sc: dict[str, Any], plot: str) -> list[str]:
    lines = [f"### {sc['name']}", "", f"`{sc['env']}`, {sc['algo']}. ![{sc['name']}]({plot})", ""]
    lines += [
        "| | fp32 | int8 |",
        "|---|---:|---:|",
    ]
    p = sc["precisions"]

    def row(label: str, key: str, fmt: str = ".1f", scale: float = 1.0) -> str:
        cells = [
            _s(None if p.get(q, {}).get(key) is None else p[q][key] * scale, fmt)
            for q in PRECISIONS
        ]
        return f"| {label} | {' | '.join(cells)} |"

    lines += [
        row("env steps to target (median)", "env_steps_to_target", ",.0f"),
        "| final policy's int8 twin vs its fp32 twin, median [range] | "
        + " | ".join(_twin_cell(p.get(q)) for q in PRECISIONS)
        + " |",
        row("actor env steps/s (median of polls)", "actor_env_steps_per_s", ",.0f"),
        row("learner updates/s", "learner_steps_per_s", ".2f"),
        row("actors' time waiting on replay", "actor_wait_share", ".0%"),
        row("learner's time waiting for data", "learner_wait_share", ".0%"),
        row("share of all CPUs used", "cpu_share_total", ".0%"),
        row("energy Wh (median)", "energy_kwh", ".3g", 1000.0),
        row("CO2e g (median)", "emissions_kg", ".3g", 1000.0),
        "",
        f"Energy ratio fp32/int8: {_ci(sc['energy_ratio'])}. Time ratio counted to the start "
        "of the evaluation that reached the target (its own length, longer for an fp32 policy, "
        f"left out): {_ci(sc.get('time_ratio_eval_start'))}.",
    ]
    for q in PRECISIONS:
        for sentence in p.get(q, {}).get("regime_sentences", []):
            lines.append(f"- {q} (seed {p[q]['seeds'][0]}): {sentence}")
    return [*lines, ""]


def markdown(result: dict[str, Any], plots: dict[str, str], ratios_plot: str) -> str:
    """The suite report."""
    scenarios = result["scenarios"]
    power = next(
        (
            q.get("carbon_power")
            for sc in scenarios
            for q in sc["precisions"].values()
            if q.get("carbon_power")
        ),
        None,
    )
    lines = [
        f"# ActorQ suite `{result['suite']}`: fp32 vs int8 actors",
        "",
        str(result.get("description") or ""),
        "",
        f"Machine: {result['machine']}. Seeds: {result.get('seeds')}. "
        f"Command: `{result.get('command') or 'actorq bench --suite ...'}`.",
        "",
        *summary_table(scenarios),
        "",
        f"![fp32/int8 ratios with 95% intervals]({ratios_plot})",
        "",
        "How to read it: times are from the start of `actorq train` (services included) to "
        "the first evaluation whose full episodes reached the target with the run's own "
        "precision. The fp32/int8 time ratio is median(fp32) / median(int8) with a "
        "percentile-bootstrap 95% interval, resampling each precision's seeds (10,000 "
        "resamples); a run that missed its target counts as its wall time on the fp32 side "
        "and as never on the int8 side, so a miss can only make int8 look slower. The final "
        "return is each run's final full greedy evaluation of its int8 policy; 'equivalent "
        "within 5%' means the 90% bootstrap interval of the relative difference of medians "
        "(int8 runs vs fp32 runs) lies inside +-5% (two one-sided tests at 5%). A run that "
        "reached its target ends there, so its final return sits near the target by "
        "construction: across runs it says little about where training converges. Each "
        "scenario's twin row says what quantization costs a policy: every run's final "
        "version evaluated as int8 and as fp32 (the same weights), as (int8 - fp32) / |fp32| "
        "(positive: the int8 twin scored higher).",
        "",
        f"Energy and CO2: {power or 'codecarbon offline tracker per service process'}; the "
        "ratio is of the medians, with the same bootstrap.",
        "",
        "## Scenarios",
        "",
    ]
    for sc in scenarios:
        lines += _scenario_section(sc, plots[sc["name"]])
    return "\n".join(lines) + "\n"
