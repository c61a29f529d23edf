"""The report's plots (PNG): return against wall-clock, the int8 advantage, CO2, step breakdown."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from commands.report.data import BREAKDOWN_STEP, Run, median

COLORS = {"fp32": "#4C72B0", "int8": "#DD8452"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: no display, files only
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    t_end = max((float(r.summary.wall_s or 0.0) for r in runs), default=1.0) or 1.0
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
    target = next((r.summary.target_return for r in runs if r.summary.target_return), None)
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
    _save(plt, fig, path)


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
    _save(plt, fig, path)


def plot_co2(agg: dict[str, Any], path: Path) -> None:
    """CO2e per precision normalized to FP32's median, min-max over seeds as error bars."""
    plt = _pyplot()
    by_p = agg["precisions"]
    fig, ax = plt.subplots(figsize=(5, 3.8))
    base = median(by_p.get("fp32"), "emissions_kg")
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
    _save(plt, fig, path)


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
        p: [max(median(a["breakdown_us_per_step"], k) or 0.0, 1e-3) for k in BREAKDOWN_STEP]
        for p, a in by_p.items()
    }
    _grouped(ax1, ["env step", "inference", "send\n(incl. rate-limit wait)", "other"], step, ".1f")
    ax1.set_yscale("log")
    ax1.set_ylabel("us per actor env step (median over seeds)")
    ax1.set_title("Actor step breakdown", fontsize=9)
    swap = {
        p: [median(a, "swap_pull_ms") or 0.0, median(a, "swap_load_ms") or 0.0]
        for p, a in by_p.items()
    }
    _grouped(ax2, ["pull", "load"], swap, ".1f")
    ax2.set_ylabel("ms per model update (median over seeds)")
    ax2.set_title("Model swap: pull from quantizer, load session", fontsize=9)
    _save(plt, fig, path)
