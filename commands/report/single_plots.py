"""The one-run report's plots, each as PNG and SVG, each titled with the run's settings.

A plot is drawn only from data the run wrote: a plot with none is not drawn
(its reason is returned instead, for the report to say in one line), a panel
with none is left out of its figure, and an unmeasured figure gets no bar.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from commands.report.plots import COLORS, _pyplot
from commands.report.single_data import OneRun
from commands.train.summary import EvalRecord

# Loss spanning more than this factor is drawn on a log scale.
LOG_SPAN = 100.0


@dataclass
class Figure:
    """One drawn plot: its file stem (STEM.png and STEM.svg) and its full title."""

    stem: str
    title: str

    @property
    def files(self) -> list[str]:
        return [f"{self.stem}.png", f"{self.stem}.svg"]


def _lone(points: Sequence[Any]) -> dict[str, Any]:
    """A marker for a series of one point, which a line alone would not draw (a run
    stopped after its first poll)."""
    return {"marker": "o", "markersize": 3} if len(points) == 1 else {}


def _save(fig: Any, out: Path, stem: str, what: str, run: OneRun, bottom: float = 0.0) -> Figure:
    """Title the figure with what it shows and the run's settings; write PNG and SVG.
    ``bottom``: the share of the figure's height kept free below the axes (a legend)."""
    plt = _pyplot()
    title = f"{what}\n{run.settings.title}"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0.0, bottom, 1.0, 1.0))
    fig.savefig(out / f"{stem}.png", dpi=110)
    # Text kept as text: the SVG stays small, searchable and readable by screen readers.
    with plt.rc_context({"svg.fonttype": "none"}):
        fig.savefig(out / f"{stem}.svg")
    plt.close(fig)
    return Figure(stem, title)


def _episodes(evals: Sequence[EvalRecord]) -> str:
    """'mean of 20 episodes', or 'mean of 3-20 episodes' when the counts differ."""
    counts = sorted({e.episodes for e in evals})
    span = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"mean of {span} episode{'s' * (counts[-1] != 1)}"


def _final_evals(run: OneRun) -> list[tuple[str, EvalRecord]]:
    final = run.summary.eval_detail.final if run.summary else {}
    return [(p, r) for p, r in final.items() if isinstance(r, EvalRecord)]


def plot_return(run: OneRun, out: Path) -> Figure | str:
    """Greedy evaluations (with their episode counts), the final evaluation of each
    precision and the actors' training return, against env steps and wall-clock."""
    evals = sorted(run.evals, key=lambda e: e.t_s)
    train = [r for r in run.metrics if r.train_return is not None and r.env_steps is not None]
    finals = _final_evals(run)
    final_records = [r for _, r in finals]
    if not (evals or train or finals):
        return "no evaluation finished and metrics.jsonl holds no training return"
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    precisions = list(dict.fromkeys(e.precision for e in evals))
    for ax, x in zip(axes, ("env_steps", "t_s"), strict=True):
        if train:
            ax.plot(
                [getattr(r, x) for r in train],
                [r.train_return for r in train],
                color="0.55",
                linewidth=1,
                **_lone(train),
                label="training episodes (actors' recent mean, exploring)",
            )
        for precision in precisions:
            group = [e for e in evals if e.precision == precision]
            color = COLORS.get(precision)
            ax.plot(
                [getattr(e, x) for e in group], [e.mean_return for e in group], "-", color=color
            )
            # Final evaluations are in evals.jsonl too: they get a star, not a dot.
            dots = [e for e in group if e not in final_records]
            full = [e for e in dots if not e.stopped_early]
            early = [e for e in dots if e.stopped_early]
            if full:
                label = f"greedy {precision} ({_episodes(full)})"
                xs, ys = [getattr(e, x) for e in full], [e.mean_return for e in full]
                ax.plot(xs, ys, "o", color=color, markersize=4, label=label)
            if early:
                label = (
                    f"greedy {precision}, stopped early: target out of reach ({_episodes(early)})"
                )
                xs, ys = [getattr(e, x) for e in early], [e.mean_return for e in early]
                ax.plot(xs, ys, "o", color=color, markerfacecolor="none", label=label)
        for precision, r in finals:
            ax.plot(
                [getattr(r, x)],
                [r.mean_return],
                "*",
                markersize=12,
                color=COLORS.get(precision),
                markeredgecolor="black",
                label=f"final {precision}: {r.mean_return:.1f} ({_episodes([r])})",
            )
        if run.settings.target_return is not None:
            target = float(run.settings.target_return)
            ax.axhline(
                target, color="gray", linestyle="--", linewidth=1, label=f"target {target:g}"
            )
        ax.grid(alpha=0.3)
    axes[0].set_xlabel("env steps (all actors)")
    axes[1].set_xlabel("wall-clock s from the start of `actorq train`")
    axes[0].set_ylabel("episode return")
    # One legend for both panels, below them, so that it hides no point.
    handles, labels = axes[0].get_legend_handles_labels()
    columns = min(3, len(labels))
    fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize=7, frameon=False)
    rows = math.ceil(len(labels) / columns)
    return _save(fig, out, "return", "Return vs env steps and wall-clock", run, 0.02 + 0.055 * rows)


def plot_loss(run: OneRun, out: Path) -> Figure | str:
    """The learner's training loss against its update steps (log scale when it spans
    more than LOG_SPAN)."""
    rows = [r for r in run.metrics if r.loss is not None and r.learner_steps]
    if not rows:
        return "metrics.jsonl holds no learner loss (no update was made, or the learner never answered)"
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    losses = [float(r.loss or 0.0) for r in rows]
    steps = [r.learner_steps for r in rows]
    ax.plot(steps, losses, color=COLORS["fp32"], linewidth=1.2, **_lone(rows))
    if min(losses) > 0 and max(losses) > LOG_SPAN * min(losses):
        ax.set_yscale("log")
    ax.set_xlabel("learner update steps")
    ax.set_ylabel("training loss (latest at each poll)")
    ax.grid(alpha=0.3)
    return _save(fig, out, "loss", "Learner loss", run)


def plot_throughput(run: OneRun, out: Path) -> Figure | str:
    """Env steps/s (sum over actors) and learner updates/s against wall-clock, one panel
    each, the median dashed; a rate never polled gets no panel."""
    panels = [
        (name, unit, [(r.t_s, v) for r in run.metrics if (v := getattr(r, name)) is not None])
        for name, unit in (
            ("env_steps_per_s", "env steps/s (all actors)"),
            ("learner_steps_per_s", "learner updates/s"),
        )
    ]
    panels = [p for p in panels if p[2]]
    if not panels:
        return "metrics.jsonl holds no env step or learner update rates"
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.4 + 1.6 * len(panels)), sharex=True)
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, (name, unit, points) in zip(axes, panels, strict=True):
        color = COLORS["int8"] if name.startswith("env") else COLORS["fp32"]
        xs, ys = [t for t, _ in points], [v for _, v in points]
        ax.plot(xs, ys, color=color, linewidth=1.2, **_lone(points))
        values = sorted(v for _, v in points)
        mid = values[len(values) // 2]
        ax.axhline(mid, color=color, linestyle="--", linewidth=1, label=f"median {mid:,.1f}")
        ax.set_ylim(bottom=0)  # a rate read against zero, not against its own wiggle
        ax.set_ylabel(unit, fontsize=8)
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("wall-clock s from the start of `actorq train`")
    return _save(fig, out, "throughput", "Throughput", run)


def _bars(ax: Any, bars: Sequence[tuple[str, float]], fmt: Callable[[float], str]) -> None:
    """Horizontal bars, first on top, each with its value written after it."""
    labels = [label for label, _ in bars][::-1]
    values = [value for _, value in bars][::-1]
    drawn = ax.barh(labels, values, color=COLORS["fp32"])
    for bar, value in zip(drawn, values, strict=True):
        ax.annotate(
            fmt(value),
            (bar.get_width(), bar.get_y() + bar.get_height() / 2),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.set_xlim(0, 1.25 * max(values) if max(values) > 0 else 1.0)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", alpha=0.3)


def breakdown_panels(run: OneRun) -> list[tuple[str, list[tuple[str, float]], str]]:
    """(panel title, bars, unit) of what the summary measured: the regime's waiting
    shares, the processes' CPU shares and the actors' step breakdown; nothing unmeasured."""
    s = run.measured
    if s is None:
        return []
    panels = []
    regime = s.regime
    if regime is not None:
        shares = [
            ("actors: waiting on replay\n(share of step time)", regime.actor_wait_share),
            ("learner: waiting for batches\n(share of loop time)", regime.learner_wait_share),
            ("learner: updating\n(share of loop time)", regime.learner_update_share),
        ]
        bars = [(label, value) for label, value in shares if value is not None]
        if bars:
            bound = f" ({regime.bound}-bound)" if regime.bound in ("learner", "actors") else ""
            panels.append((f"Waiting and working{bound}", bars, "%"))
        cpu = [(group, share) for group, share in regime.cpu_share.items() if group != "total"]
        if cpu:
            total = regime.cpu_share.get("total")
            of = f"{regime.cpus} CPUs" if regime.cpus else "the CPUs"
            used = f", {total:.0%} in all" if total is not None else ""
            panels.append((f"CPU used, share of {of}{used}", cpu, "%"))
    step = s.breakdown_us_per_step
    parts = (
        [
            ("env step", step.env),
            ("inference", step.inference),
            ("send\n(incl. rate-limit wait)", step.send),
            ("other", step.other),
        ]
        if step is not None
        else []
    )
    # All zero: no actor was polled, so nothing was measured.
    if any(value > 0 for _, value in parts):
        panels.append(("Actor step, us per env step", parts, "us"))
    return panels


def plot_breakdown(run: OneRun, out: Path) -> Figure | str:
    """Where the run's time went (summary.json's regime and step breakdown), a panel per
    measured group and a bar per measured figure."""
    panels = breakdown_panels(run)
    if not panels:
        why = "summary.json holds no measurements" if run.measured is None else "none measured"
        return f"no regime or actor step breakdown ({why})"
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, (title, bars, unit) in zip(axes, panels, strict=True):
        if unit == "%":
            _bars(ax, [(label, 100 * v) for label, v in bars], lambda v: f"{v:.0f}%")
            ax.set_xlabel("%")
        else:
            _bars(ax, bars, lambda v: f"{v:,.1f}")
            ax.set_xlabel("us per env step (mean over actors' steps)")
        ax.set_title(title, fontsize=9)
    return _save(fig, out, "breakdown", "Where the time went", run)


# Stem -> (what the plot shows, its plotter), in the report's order.
PLOTTERS: dict[str, tuple[str, Callable[[OneRun, Path], Figure | str]]] = {
    "return": ("greedy and training return", plot_return),
    "loss": ("learner loss", plot_loss),
    "throughput": ("env steps/s and learner updates/s", plot_throughput),
    "breakdown": ("time breakdown", plot_breakdown),
}


def draw(run: OneRun, out: Path) -> tuple[list[Figure], dict[str, str]]:
    """Every plot the run has data for, written to out; and, per plot not drawn, why."""
    drawn, skipped = [], {}
    for stem, (_what, plotter) in PLOTTERS.items():
        result = plotter(run, out)
        if isinstance(result, Figure):
            drawn.append(result)
        else:
            skipped[stem] = result
    return drawn, skipped
