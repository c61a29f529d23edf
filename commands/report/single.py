"""`actorq report RUN_DIR` on one ``actorq train`` run: report.md, report.json and plots.

For a run finished or interrupted (``commands.report.single_data`` reads what
it wrote). Writes to the output directory:

    report.md        the run's settings and headline numbers, the plots, and one
                     line for each thing not plotted and why
    report.json      the same numbers, the plots' titles and files, the lines
    return.png/.svg      greedy evaluations (episode counts), final evaluations and
                         training return, against env steps and against wall-clock
    loss.png/.svg        the learner's loss against its update steps
    throughput.png/.svg  env steps/s and learner updates/s against wall-clock
    breakdown.png/.svg   where the time went: summary.json's regime and actor step

A plot whose data the run lacks is not drawn (an older file of that name is
removed, so the directory never shows a plot of another run); the fp32-vs-int8
comparison of several runs stays with ``actorq report BENCH_DIR``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from commands.report.single_data import OneRun, key_figures, read_one_run
from commands.report.single_plots import PLOTTERS, Figure, draw


def _num(value: Any, fmt: str = ",.1f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _status(run: OneRun, fig: dict[str, Any]) -> str:
    """How the run ended, in words."""
    if run.summary is None:
        return "interrupted or still going (no summary.json)"
    reason = run.summary.stop_reason or "not recorded"
    if fig["reached_target"]:
        return (
            f"{reason}: target {run.settings.target_return:g} reached after "
            f"{_num(fig['time_to_target_s'])} s, {_num(fig['env_steps_to_target'], ',d')} env steps"
        )
    return reason if run.finished else f"{reason} (did not end as planned)"


def rows(run: OneRun, fig: dict[str, Any]) -> list[tuple[str, str]]:
    """The headline table: (what, value) for every figure the run has."""
    finals = ", ".join(
        f"{p} {v['mean_return']:.1f} (mean of {v['episodes']} episodes)"
        for p, v in fig["final_eval"].items()
    )
    out = [
        ("env / algorithm / actors' precision", f"{run.settings.env} / {run.settings.algo} / "
         f"{run.settings.precision}"),
        ("network", run.settings.network),
        ("seed", _num(run.settings.seed, "d")),
        ("ended", _status(run, fig)),
        ("wall-clock s", _num(fig["wall_s"])),
        ("env steps / learner updates", f"{_num(fig['env_steps'], ',d')} / "
         f"{_num(fig['learner_steps'], ',d')}"),
        ("final greedy return", finals or "n/a"),
        ("env steps/s, median of polls (all actors)", _num(fig["median_env_steps_per_s"])),
        ("actors' step-loop rate, env steps/s", _num(fig["actor_env_steps_per_s"])),
        ("learner updates/s, median of polls", _num(fig["median_learner_steps_per_s"])),
    ]  # fmt: skip
    if fig["model_bytes"]:
        sizes = ", ".join(f"{p} {b:,}" for p, b in fig["model_bytes"].items())
        out.append(("model bytes", sizes))
    if fig["energy_kwh"] is not None and fig["emissions_kg"] is not None:
        how = "measured (RAPL)" if fig["carbon_measured"] else "estimated by codecarbon"
        energy = f"{1000 * fig['energy_kwh']:.3g} / {1000 * fig['emissions_kg']:.3g}, {how}"
        out.append(("energy Wh / CO2e g", energy))
    return out


def not_plotted(run: OneRun, skipped: dict[str, str]) -> list[str]:
    """One line per plot (or curve) not drawn, saying why."""
    lines = [f"{PLOTTERS[stem][0]}: not plotted, {why}" for stem, why in skipped.items()]
    if "return" not in skipped and not any(r.train_return is not None for r in run.metrics):
        lines.append(
            "training episode return: not plotted, metrics.jsonl has no train_return "
            "(the launcher that wrote it did not record it)"
        )
    return lines


def markdown(run: OneRun, fig: dict[str, Any], drawn: list[Figure], lines: list[str]) -> str:
    """report.md's text."""
    text = [f"# Run report: {run.settings.title}", "", f"Run directory: `{run.dir}`", ""]
    text += ["| | |", "|---|---|"]
    text += [f"| {what} | {value} |" for what, value in rows(run, fig)]
    if fig["regime"]:
        text += ["", f"**Regime.** {fig['regime']}"]
    if run.notes:
        text += ["", *(f"- {note}" for note in run.notes)]
    for f in drawn:
        what = f.title.splitlines()[0]
        text += ["", f"## {what}", "", f"![{what}]({f.stem}.png) ([SVG]({f.stem}.svg))"]
    if lines:
        text += ["", "## Not plotted", "", *(f"- {line}" for line in lines)]
    return "\n".join(text) + "\n"


def build_single(run_dir: Path, out: Path) -> dict[str, Any]:
    """Read one run directory and write its report to out; the report's JSON.

    ReportError when run_dir is not a run directory."""
    run = read_one_run(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    drawn, skipped = draw(run, out)
    for stem in skipped:
        for suffix in (".png", ".svg"):
            (out / f"{stem}{suffix}").unlink(missing_ok=True)
    fig = key_figures(run)
    lines = not_plotted(run, skipped)
    report = {
        "kind": "train_run",
        "dir": str(run_dir),
        "title": run.settings.title,
        "settings": dataclasses.asdict(run.settings),
        "figures": fig,
        "plots": {f.stem: {"title": f.title, "files": f.files} for f in drawn},
        "not_plotted": lines,
        "notes": run.notes,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(run, fig, drawn, lines))
    return report


def terminal(report: dict[str, Any], out: Path) -> str:
    """What `actorq report` prints for one run."""
    files = [name for p in report["plots"].values() for name in p["files"][:1]]
    lines = [report["title"], *report["notes"], *report["not_plotted"]]
    lines.append(
        f"report: {out / 'report.md'} (plots: {', '.join(files) or 'none'}; SVG beside each)"
    )
    return "\n".join(lines)
