"""The suite report's plots: per scenario the return curves of every seed, and the ratios."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from commands.report.data import Run
from commands.report.plots import COLORS, _pyplot, _save


def _curve(run: Run) -> tuple[list[float], list[float], list[float]]:
    """(wall-clock s, env steps, return) of the run's evaluations of its own precision."""
    evals = [e for e in run.evals if e.precision == run.precision]
    return (
        [float(e.t_s) for e in evals],
        [float(e.env_steps) for e in evals],
        [float(e.mean_return) for e in evals],
    )


def plot_curves(runs: Sequence[Run], scenario: dict[str, Any], path: Path) -> None:
    """Greedy return against wall-clock and against env steps, one thin line per seed,
    the target dashed; a marker where a run reached it."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for run in sorted(runs, key=lambda r: (r.precision, r.seed)):
        t, steps, ret = _curve(run)
        color = COLORS.get(run.precision)
        label = f"{run.precision} s{run.seed}"
        axes[0].plot(t, ret, "-", color=color, alpha=0.7, linewidth=1.2, label=label)
        axes[1].plot(steps, ret, "-", color=color, alpha=0.7, linewidth=1.2)
        s = run.summary
        if s.reached_target and s.time_to_target_s is not None:
            reached = float(s.target_return or 0.0)
            axes[0].plot([s.time_to_target_s], [reached], "o", color=color, markersize=5)
            axes[1].plot([s.env_steps_to_target or 0], [reached], "o", color=color, markersize=5)
    target = scenario.get("target_return")
    for ax in axes:
        if target is not None:
            ax.axhline(float(target), color="grey", linestyle="--", linewidth=1)
        ax.grid(alpha=0.3)
    axes[0].set_xlabel("wall-clock s (from `actorq train`)")
    axes[1].set_xlabel("env steps (all actors)")
    axes[0].set_ylabel("greedy return (run's own precision)")
    axes[0].legend(fontsize=7, ncol=2, loc="best")
    fig.suptitle(f"{scenario['name']}: {scenario['env']} {scenario['algo']}", fontsize=10)
    _save(plt, fig, path)


def plot_ratios(scenarios: Sequence[dict[str, Any]], path: Path) -> None:
    """fp32/int8 time-to-target and CO2 ratios per scenario with their 95% intervals (log y)."""
    plt = _pyplot()
    names = [sc["name"] for sc in scenarios]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(names) + 2), 4.2))
    width = 0.38
    for k, (key, label, color) in enumerate(
        (("time_ratio", "time to target", COLORS["int8"]), ("co2_ratio", "CO2", "#55A868"))
    ):
        for i, sc in enumerate(scenarios):
            interval = sc.get(key)
            if not interval or not math.isfinite(interval["point"]) or interval["point"] <= 0:
                continue
            x = i + (k - 0.5) * width
            low = max(interval["low"], 1e-2)
            high = interval["high"] if math.isfinite(interval["high"]) else interval["point"] * 10
            ax.bar(x, interval["point"], width, color=color, label=label if i == 0 else None)
            ax.errorbar(
                x,
                interval["point"],
                yerr=[[interval["point"] - low], [high - interval["point"]]],
                color="black",
                capsize=3,
                linewidth=1,
            )
            ax.annotate(f"{interval['point']:.2f}x", (x, high), ha="center",
                        va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")  # fmt: skip
    ax.axhline(1.0, color="grey", linewidth=1)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("fp32 / int8 (> 1: int8 better)")
    ax.set_title("fp32/int8 ratios over seeds, 95% bootstrap intervals", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    _save(plt, fig, path)


__all__ = ["plot_curves", "plot_ratios"]
