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
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actorq.network import PRECISIONS
from commands.bench.machine import describe, machine_info

COLORS = {"fp32": "#4C72B0", "int8": "#DD8452"}
BREAKDOWN_STEP = ("env", "inference", "send", "other")
PLOTS = ("return_vs_time.png", "speedup.png", "co2.png", "breakdown.png")
ACTOR_BENCH_FILE = "bench-actor.json"


class ReportError(ValueError):
    """Inputs a report cannot be made from, with the reason."""


@dataclass
class Run:
    """One `actorq train` run directory, read."""

    dir: Path
    summary: dict[str, Any]
    evals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def precision(self) -> str:
        return str(self.summary.get("precision", "?"))

    @property
    def seed(self) -> int:
        return int(self.summary.get("seed", 0))

    def curve(self) -> list[tuple[float, float]]:
        """(wall-clock s, greedy return) of the evaluations made during training.

        An evaluation stopped early (the target out of reach) counts with the
        mean of the episodes it ran.
        """
        wall = float(self.summary.get("wall_s") or math.inf)
        return [
            (float(e["t_s"]), float(e["mean_return"]))
            for e in self.evals
            if e.get("precision") == self.precision and float(e["t_s"]) <= wall
        ]


# ------------------------------------------------------------------ input


def read_run(path: Path) -> Run:
    """A run directory's summary.json and evals.jsonl."""
    try:
        summary = json.loads((path / "summary.json").read_text())
    except (OSError, ValueError) as err:
        raise ReportError(f"{path}: cannot read summary.json ({err})") from None
    evals = []
    evals_path = path / "evals.jsonl"
    if evals_path.exists():
        for line in evals_path.read_text().splitlines():
            if line.strip():
                evals.append(json.loads(line))
    return Run(path, summary, evals)


def find_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Every run under the given paths, each once, in a stable order."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if (path / "summary.json").is_file():
            found.append(path)
        elif path.is_dir():
            below = sorted(p.parent for p in path.rglob("summary.json"))
            if not below:
                raise ReportError(f"{path}: no run directory (summary.json) in it")
            found.extend(below)
        else:
            raise ReportError(f"{path}: not a directory")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return [read_run(p) for p in unique]


def find_actor_bench(paths: Sequence[str | Path]) -> dict[str, Any] | None:
    """The micro-benchmark JSON in one of the given directories (or a given file), if any."""
    for raw in paths:
        path = Path(raw)
        candidate = path if path.is_file() else path / ACTOR_BENCH_FILE
        if candidate.is_file():
            try:
                data: dict[str, Any] = json.loads(candidate.read_text())
                return data
            except ValueError:
                continue
    return None


def read_bench_meta(paths: Sequence[str | Path]) -> dict[str, Any]:
    """bench.json of a bench directory, if one was given."""
    for raw in paths:
        path = Path(raw) / "bench.json"
        if path.is_file():
            try:
                meta: dict[str, Any] = json.loads(path.read_text())
                return meta
            except ValueError:
                continue
    return {}


# ------------------------------------------------------------ aggregation


def _stats(values: Sequence[float | None]) -> dict[str, Any] | None:
    clean = [float(v) for v in values if v is not None]
    if not clean:
        return None
    return {
        "median": statistics.median(clean),
        "mean": statistics.fmean(clean),
        "min": min(clean),
        "max": max(clean),
        "n": len(clean),
    }


def _get(summary: dict[str, Any], *keys: str) -> Any:
    value: Any = summary
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def aggregate_precision(runs: Sequence[Run]) -> dict[str, Any]:
    """Per-precision numbers over its runs (medians, min/max, counts)."""
    summaries = [r.summary for r in runs]
    precision = runs[0].precision
    reached = [s for s in summaries if s.get("reached_target")]
    carbon_ok = [s for s in summaries if s.get("emissions_kg") is not None]
    carbon_missing = [
        f"seed {s.get('seed')}: {_get(s, 'carbon', 'reason') or 'not recorded'}"
        for s in summaries
        if s.get("emissions_kg") is None
    ]
    swap_total = [
        (_get(s, "model_swap_ms", "pull") or 0.0) + (_get(s, "model_swap_ms", "load") or 0.0)
        for s in summaries
        if _get(s, "model_swap_ms", "swaps")
    ]
    other = [p for p in PRECISIONS if p != precision]
    return {
        "precision": precision,
        "runs": len(runs),
        "seeds": sorted(r.seed for r in runs),
        "reached": len(reached),
        "target_return": summaries[0].get("target_return"),
        "time_to_target_s": _stats([s.get("time_to_target_s") for s in reached]),
        "env_steps_to_target": _stats([s.get("env_steps_to_target") for s in reached]),
        "final_return": _stats([_get(s, "eval", precision) for s in summaries]),
        # The same weights run in the other precision (quantization's effect on return).
        "final_return_other_precision": {
            p: _stats([_get(s, "eval", p) for s in summaries]) for p in other
        },
        "wall_s": _stats([s.get("wall_s") for s in summaries]),
        "actor_env_steps_per_s": _stats([s.get("actor_env_steps_per_s") for s in summaries]),
        "observed_env_steps_per_s": _stats([s.get("observed_env_steps_per_s") for s in summaries]),
        "learner_steps_per_s": _stats([s.get("learner_steps_per_s") for s in summaries]),
        "model_bytes": _stats([_get(s, "model_bytes", precision) for s in summaries]),
        "swap_pull_ms": _stats(
            [
                _get(s, "model_swap_ms", "pull")
                for s in summaries
                if _get(s, "model_swap_ms", "swaps")
            ]
        ),
        "swap_load_ms": _stats(
            [
                _get(s, "model_swap_ms", "load")
                for s in summaries
                if _get(s, "model_swap_ms", "swaps")
            ]
        ),
        "swap_ms": _stats(swap_total),
        "breakdown_us_per_step": {
            k: _stats([_get(s, "breakdown_us_per_step", k) for s in summaries])
            for k in BREAKDOWN_STEP
        },
        # All runs or nothing: a median over the measured runs alone would hide the others.
        "energy_kwh": _stats([s.get("energy_kwh") for s in summaries])
        if not carbon_missing
        else None,
        "emissions_kg": _stats([s.get("emissions_kg") for s in summaries])
        if not carbon_missing
        else None,
        "carbon_unavailable": carbon_missing,
        "carbon_power": next(
            (_get(s, "carbon", "power") for s in carbon_ok if _get(s, "carbon", "power")), ""
        ),
        "carbon_measured": all(_get(s, "carbon", "measured") for s in carbon_ok)
        if carbon_ok
        else None,
        "carbon_country": next((_get(s, "carbon", "country_iso_code") for s in carbon_ok), None),
    }


def _median(agg: dict[str, Any] | None, key: str) -> float | None:
    stats = agg.get(key) if agg else None
    return float(stats["median"]) if stats else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def ratios(by_precision: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """fp32/int8 of medians (int8/fp32 for rates, so >1 always favours int8)."""
    fp32, int8 = by_precision.get("fp32"), by_precision.get("int8")
    if fp32 is None or int8 is None:
        return {}
    return {
        "time_to_target": _ratio(
            _median(fp32, "time_to_target_s"), _median(int8, "time_to_target_s")
        ),
        "emissions": _ratio(_median(fp32, "emissions_kg"), _median(int8, "emissions_kg")),
        "energy": _ratio(_median(fp32, "energy_kwh"), _median(int8, "energy_kwh")),
        "actor_env_steps_per_s": _ratio(
            _median(int8, "actor_env_steps_per_s"), _median(fp32, "actor_env_steps_per_s")
        ),
        "model_bytes": _ratio(_median(fp32, "model_bytes"), _median(int8, "model_bytes")),
        "swap_ms": _ratio(_median(fp32, "swap_ms"), _median(int8, "swap_ms")),
        "env_steps_to_target": _ratio(
            _median(fp32, "env_steps_to_target"), _median(int8, "env_steps_to_target")
        ),
    }


def aggregate(runs: Sequence[Run]) -> dict[str, Any]:
    """Everything report.json holds: per precision, ratios, per run."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.precision, []).append(run)
    order = [p for p in PRECISIONS if p in groups] + sorted(set(groups) - set(PRECISIONS))
    by_precision = {p: aggregate_precision(groups[p]) for p in order}
    return {
        "precisions": by_precision,
        "ratios": ratios(by_precision),
        "runs": [
            {
                "dir": str(r.dir),
                "precision": r.precision,
                "seed": r.seed,
                "stop_reason": r.summary.get("stop_reason"),
                "reached_target": r.summary.get("reached_target"),
                "time_to_target_s": r.summary.get("time_to_target_s"),
                "env_steps_to_target": r.summary.get("env_steps_to_target"),
                "final_return": _get(r.summary, "eval", r.precision),
                "wall_s": r.summary.get("wall_s"),
                "energy_kwh": r.summary.get("energy_kwh"),
                "emissions_kg": r.summary.get("emissions_kg"),
                "carbon_status": _get(r.summary, "carbon", "status"),
            }
            for p in order
            for r in sorted(groups[p], key=lambda r: r.seed)
        ],
    }


# ------------------------------------------------------------- formatting


def _num(value: float | None, fmt: str = ".1f", scale: float = 1.0) -> str:
    return "n/a" if value is None else format(value * scale, fmt)


def _spread(stats: dict[str, Any] | None, fmt: str = ".1f", scale: float = 1.0) -> str:
    """'median [min-max]', or the value alone for one run."""
    if not stats:
        return "n/a"
    med = format(stats["median"] * scale, fmt)
    if stats["n"] == 1 or stats["min"] == stats["max"]:
        return med
    return f"{med} [{format(stats['min'] * scale, fmt)}-{format(stats['max'] * scale, fmt)}]"


def _x(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def table_rows(agg: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the main table (shared by the terminal and report.md)."""
    by_p = agg["precisions"]
    ratio = agg["ratios"]
    names = list(by_p)
    header = ["", *names, "fp32/int8" if ratio else ""]

    def row(label: str, cell: Callable[[dict[str, Any]], str], r: str = "") -> list[str]:
        return [label, *(cell(by_p[p]) for p in names), r]

    unavailable = any(a["carbon_unavailable"] for a in by_p.values())
    first = next(iter(by_p.values()))
    estimated = first.get("carbon_measured") is False
    tag = " (est.)" if estimated else ""
    country = first.get("carbon_country") or ""

    def carbon_cell(key: str, scale: float, fmt: str) -> Callable[[dict[str, Any]], str]:
        def cell(a: dict[str, Any]) -> str:
            if a[key] is None:
                return "unavailable"
            return _spread(a[key], fmt, scale)

        return cell

    rows = [
        row("runs (seeds)", lambda a: f"{a['runs']} ({','.join(map(str, a['seeds']))})"),
        row("reached target", lambda a: f"{a['reached']}/{a['runs']}"),
        row(
            "time to target s, median [min-max]",
            lambda a: _spread(a["time_to_target_s"]),
            _x(ratio.get("time_to_target")),
        ),
        row(
            "env steps to target",
            lambda a: _spread(a["env_steps_to_target"], ".0f"),
            _x(ratio.get("env_steps_to_target")),
        ),
        row("final greedy return", lambda a: _spread(a["final_return"])),
        row(
            "actor env steps/s (sum of actors)",
            lambda a: _spread(a["actor_env_steps_per_s"], ".0f"),
            _x(ratio.get("actor_env_steps_per_s")) + (" (int8/fp32)" if ratio else ""),
        ),
        row("learner steps/s", lambda a: _spread(a["learner_steps_per_s"], ".1f")),
        row(
            "model bytes",
            lambda a: _spread(a["model_bytes"], ".0f"),
            _x(ratio.get("model_bytes")),
        ),
        row(
            "model swap ms (pull + load)",
            lambda a: (
                f"{_num(_median(a, 'swap_pull_ms'), '.2f')} + {_num(_median(a, 'swap_load_ms'), '.2f')}"
                if a["swap_ms"]
                else "n/a"
            ),
            _x(ratio.get("swap_ms")),
        ),
        row(
            f"energy Wh{tag}",
            carbon_cell("energy_kwh", 1000.0, "#.3g"),
            _x(ratio.get("energy")) if not unavailable else "",
        ),
        row(
            f"CO2e g{tag}{', ' + country if country else ''}",
            carbon_cell("emissions_kg", 1000.0, "#.3g"),
            _x(ratio.get("emissions")) if not unavailable else "",
        ),
        row("wall s per run", lambda a: _spread(a["wall_s"])),
    ]
    return header, rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """A fixed-width table for the terminal."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for r in [header, *rows]:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    out = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def carbon_note(agg: dict[str, Any]) -> str:
    """How energy was obtained (or why it is missing), in one paragraph."""
    by_p = agg["precisions"]
    missing = [f"{p} {m}" for p, a in by_p.items() for m in a["carbon_unavailable"]]
    if missing:
        return (
            "Carbon unavailable for some runs, so no energy/CO2 figure is shown for them: "
            + "; ".join(missing)
            + "."
        )
    power = next((a["carbon_power"] for a in by_p.values() if a["carbon_power"]), "")
    country = next((a["carbon_country"] for a in by_p.values() if a["carbon_country"]), "")
    return (
        f"Energy and CO2e: codecarbon OfflineEmissionsTracker in every service process "
        f"(tracking_mode=process), grid {country}; {power}. Evaluation (in the launcher) is not "
        "included."
    )


def micro_rows(bench: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The actor micro-benchmark as a table: median us per call and speedups."""
    header = [
        "width^3",
        "batch",
        "ort fp32 us",
        "ort int8 us",
        "torch fp32 us",
        "torch int8 us",
        "ort int8 vs ort fp32",
        "ort int8 vs torch int8",
    ]
    rows = []
    for r in bench.get("inference", []):
        us = r["us"]

        def sp(a: str, b: str, us: dict[str, float] = us) -> str:
            return _x(_ratio(us.get(a), us.get(b)))

        rows.append(
            [
                str(r["width"]),
                str(r["batch"]),
                *(
                    _num(us.get(k), ".1f")
                    for k in ("ort_fp32", "ort_int8", "torch_fp32", "torch_int8")
                ),
                sp("ort_fp32", "ort_int8"),
                sp("torch_int8", "ort_int8"),
            ]
        )
    for r in bench.get("step", []):
        us = r["us"]
        rows.append(
            [
                str(r["width"]),
                f"step ({r.get('env', 'env')})",
                *(
                    _num(us.get(k), ".1f")
                    for k in ("ort_fp32", "ort_int8", "torch_fp32", "torch_int8")
                ),
                _x(_ratio(us.get("ort_fp32"), us.get("ort_int8"))),
                _x(_ratio(us.get("torch_int8"), us.get("ort_int8"))),
            ]
        )
    return header, rows


# ------------------------------------------------------------------ plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: no display, files only
    import matplotlib.pyplot as plt

    return plt


def plot_return_vs_time(runs: Sequence[Run], agg: dict[str, Any], path: Path) -> None:
    """Greedy return vs wall-clock: per precision the mean over seeds and the min-max band.

    Each run's curve holds its latest evaluation until the next; a run that
    stopped (target reached or budget) holds its last value to the end.
    """
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.precision, []).append(r)
    t_end = max((float(r.summary.get("wall_s") or 0.0) for r in runs), default=1.0) or 1.0
    grid = np.linspace(0.0, t_end, 400)
    for precision, group in groups.items():
        curves = []
        for r in group:
            pts = r.curve()
            values = np.full(grid.shape, np.nan)
            for t, ret in pts:
                values[grid >= t] = ret
            curves.append(values)
            if pts:
                ax.plot(
                    [t for t, _ in pts],
                    [v for _, v in pts],
                    ".",
                    color=COLORS.get(precision),
                    alpha=0.35,
                    markersize=3,
                )
        stack = np.array(curves)
        with np.errstate(all="ignore"):
            valid = ~np.all(np.isnan(stack), axis=0)
            mean = np.where(valid, np.nanmean(np.where(valid, stack, 0.0), axis=0), np.nan)
            lo = np.where(valid, np.nanmin(np.where(valid, stack, 0.0), axis=0), np.nan)
            hi = np.where(valid, np.nanmax(np.where(valid, stack, 0.0), axis=0), np.nan)
        label = f"{precision} (mean of {len(group)} seed{'s' if len(group) > 1 else ''})"
        ax.plot(grid, mean, color=COLORS.get(precision), label=label, linewidth=2)
        ax.fill_between(grid, lo, hi, color=COLORS.get(precision), alpha=0.18, linewidth=0)
        ttt = agg["precisions"].get(precision, {}).get("time_to_target_s")
        if ttt:
            ax.axvline(ttt["median"], color=COLORS.get(precision), linestyle=":", linewidth=1)
    target = next(
        (r.summary.get("target_return") for r in runs if r.summary.get("target_return")), None
    )
    if target is not None:
        ax.axhline(
            float(target), color="gray", linestyle="--", linewidth=1, label=f"target {target:g}"
        )
    ax.set_xlim(0.0, t_end)
    ax.set_xlabel("wall-clock time (s), service start-up included")
    ax.set_ylabel("greedy return (mean over eval episodes)")
    ax.set_title(
        "Return vs wall-clock (band: min-max over seeds; dotted: median time to target)", fontsize=9
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _annotate(ax: Any, bars: Any, texts: Sequence[str]) -> None:
    for bar, text in zip(bars, texts, strict=True):
        ax.annotate(
            text,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )


def plot_speedup(agg: dict[str, Any], path: Path) -> None:
    """fp32/int8 ratios as bars (rates as int8/fp32): above 1 favours int8."""
    plt = _pyplot()
    ratio = agg["ratios"]
    labels = {
        "time_to_target": "time to\ntarget",
        "actor_env_steps_per_s": "actor env\nsteps/s",
        "model_bytes": "model\nbytes",
        "swap_ms": "model swap\n(pull+load)",
        "energy": "energy",
        "emissions": "CO2e",
    }
    keys = [k for k in labels if ratio.get(k) is not None]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    if keys:
        values = [float(ratio[k]) for k in keys]
        bars = ax.bar([labels[k] for k in keys], values, color=COLORS["int8"])
        _annotate(ax, bars, [f"{v:.2f}x" for v in values])
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_ylim(0, 1.12 * max(values))
    else:
        ax.text(
            0.5, 0.5, "needs fp32 and int8 runs", ha="center", va="center", transform=ax.transAxes
        )
    estimated = any(a.get("carbon_measured") is False for a in agg["precisions"].values())
    ax.set_ylabel("fp32 / int8 (rates: int8 / fp32)")
    ax.set_title(
        "int8 advantage (medians over seeds)"
        + ("; energy/CO2e estimated by codecarbon's CPU-load model" if estimated else ""),
        fontsize=9,
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_co2(agg: dict[str, Any], path: Path) -> None:
    """CO2e per precision normalized to FP32's median, min-max over seeds as error bars."""
    plt = _pyplot()
    by_p = agg["precisions"]
    fig, ax = plt.subplots(figsize=(5, 3.8))
    base = _median(by_p.get("fp32"), "emissions_kg")
    names = [p for p, a in by_p.items() if a["emissions_kg"] is not None]
    if base and names:
        stats = [by_p[p]["emissions_kg"] for p in names]
        heights = [s["median"] / base for s in stats]
        err = [
            [h - s["min"] / base for h, s in zip(heights, stats, strict=True)],
            [s["max"] / base - h for h, s in zip(heights, stats, strict=True)],
        ]
        bars = ax.bar(names, heights, yerr=err, capsize=4, color=[COLORS.get(p) for p in names])
        for bar, h, st in zip(bars, heights, stats, strict=True):
            # Above the error bar, not the median.
            ax.annotate(
                f"{h:.2f} ({1000 * st['median']:.3g} g)",
                (bar.get_x() + bar.get_width() / 2, st["max"] / base),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 3),
                textcoords="offset points",
            )
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_ylim(0, 1.15 * max(s["max"] / base for s in stats))
    else:
        reason = (
            "; ".join(m for a in by_p.values() for m in a["carbon_unavailable"]) or "no fp32 run"
        )
        ax.text(
            0.5,
            0.5,
            f"CO2e unavailable:\n{reason[:120]}",
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=8,
            wrap=True,
        )
    measured = all(a.get("carbon_measured") for a in by_p.values() if a["emissions_kg"] is not None)
    ax.set_ylabel("CO2e relative to fp32 (median)")
    ax.set_title(
        "CO2e per run" + ("" if measured and names else " (ESTIMATED: no RAPL, CPU-load model)"),
        fontsize=9,
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _grouped(ax: Any, groups: Sequence[str], by_p: dict[str, list[float]], fmt: str) -> None:
    """Bars per group, one per precision side by side, annotated with their values."""
    names = list(by_p)
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs = [g + (i - (len(names) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, by_p[name], width, label=name, color=COLORS.get(name))
        _annotate(ax, bars, [format(v, fmt) for v in by_p[name]])
    ax.set_xticks(list(range(len(groups))), groups)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def plot_breakdown(agg: dict[str, Any], path: Path) -> None:
    """Per actor step: us in env, inference, send, other; per model swap: ms pull and load.

    Log scale for the step: waiting on replay's rate limiter (inside "send")
    can be a hundred times the inference it would otherwise hide.
    """
    plt = _pyplot()
    by_p = agg["precisions"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.9), gridspec_kw={"width_ratios": [2, 1]})
    step = {
        p: [max(_median(a["breakdown_us_per_step"], k) or 0.0, 1e-3) for k in BREAKDOWN_STEP]
        for p, a in by_p.items()
    }
    _grouped(ax1, ["env step", "inference", "send\n(incl. rate-limit wait)", "other"], step, ".1f")
    ax1.set_yscale("log")
    ax1.set_ylabel("us per actor env step (median over seeds)")
    ax1.set_title("Actor step breakdown", fontsize=9)
    swap = {
        p: [_median(a, "swap_pull_ms") or 0.0, _median(a, "swap_load_ms") or 0.0]
        for p, a in by_p.items()
    }
    _grouped(ax2, ["pull", "load"], swap, ".1f")
    ax2.set_ylabel("ms per model update (median over seeds)")
    ax2.set_title("Model swap: pull from quantizer, load session", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------- report


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


def markdown(agg: dict[str, Any], out: Path, runs: Sequence[Run]) -> str:
    """report.md's text."""
    header, rows = table_rows(agg)
    first = runs[0].summary
    scenario = (agg.get("bench") or {}).get("scenario") or {}
    title = scenario.get("name") or f"{first.get('env')} {first.get('algo')}"
    lines = [
        f"# ActorQ report: {title}",
        "",
        scenario.get("description", "") or "",
        "",
        f"Machine: {describe(agg['machine'])}; onnxruntime {agg['machine']['versions'].get('onnxruntime')}, "
        f"torch {agg['machine']['versions'].get('torch')}, codecarbon {agg['machine']['versions'].get('codecarbon')}.",
        f"Runs: {len(runs)} ({first.get('env')}, {first.get('algo')}, {first.get('actors')} actors, "
        f"target {first.get('target_return')})."
        + (
            f" Command: `{(agg.get('bench') or {}).get('command')}`."
            if (agg.get("bench") or {}).get("command")
            else ""
        ),
        "",
        "## fp32 vs int8",
        "",
        md_table(header, rows),
        "",
        carbon_note(agg),
        "",
        "Time to target is wall-clock from the launcher's start (service start-up included) to the "
        "end of the greedy evaluation that first reached the target; actor env steps/s is the "
        "step-loop rate summed over actors.",
        "",
        "![return vs wall-clock](return_vs_time.png)",
        "",
        "![speedup](speedup.png) ![CO2](co2.png)",
        "",
        "![runtime breakdown](breakdown.png)",
        "",
        "## Runtime breakdown (median over seeds)",
        "",
    ]
    bd_header = ["", "env us", "inference us", "send us", "other us", "pull ms", "load ms"]
    bd_rows = [
        [
            p,
            *(_num(_median(a["breakdown_us_per_step"], k), ".1f") for k in BREAKDOWN_STEP),
            _num(_median(a, "swap_pull_ms"), ".2f"),
            _num(_median(a, "swap_load_ms"), ".2f"),
        ]
        for p, a in agg["precisions"].items()
    ]
    lines += [md_table(bd_header, bd_rows), "", "## Runs", ""]
    run_header = [
        "precision",
        "seed",
        "stop",
        "time to target s",
        "env steps to target",
        "final return",
        "wall s",
        "energy Wh",
        "CO2e g",
        "dir",
    ]
    run_rows = [
        [
            r["precision"],
            str(r["seed"]),
            str(r["stop_reason"]),
            _num(r["time_to_target_s"]),
            _num(r["env_steps_to_target"], ".0f"),
            _num(r["final_return"]),
            _num(r["wall_s"]),
            _num(r["energy_kwh"], "#.3g", 1000.0) if r["energy_kwh"] is not None else "unavailable",
            _num(r["emissions_kg"], "#.3g", 1000.0)
            if r["emissions_kg"] is not None
            else "unavailable",
            _relative(Path(r["dir"]), out),
        ]
        for r in agg["runs"]
    ]
    lines += [md_table(run_header, run_rows), ""]
    bench = agg.get("actor_bench")
    if bench:
        mh, mr = micro_rows(bench)
        m = bench.get("machine", {})
        lines += [
            "## Actor micro-benchmark (`actorq bench actor`)",
            "",
            f"Median us per call, 1 thread, obs {bench.get('obs_dim')} -> {bench.get('num_actions')} "
            f"actions, 3 hidden layers of the width; int8 = {bench.get('int8_method')} (ours) and "
            f"torch.ao dynamic quantization. Machine: {describe(m) if m else 'n/a'}.",
            "",
            md_table(mh, mr),
            "",
        ]
    return "\n".join(lines)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


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
