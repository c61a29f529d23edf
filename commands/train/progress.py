"""What a run shows while it goes on and prints when it ends."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Mapping
from typing import Any

from commands.train.args import TrainArgs
from commands.train.summary import RunSummary


class Progress:
    """One live status line on a terminal; a line every few seconds otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._last_line = 0.0

    def show(self, text: str) -> None:
        if self.quiet:
            return
        if self.tty:
            # A line longer than the terminal wraps and \r no longer rewrites it.
            columns = shutil.get_terminal_size((200, 24)).columns
            sys.stderr.write("\r\033[K" + text[: max(20, columns - 1)])
            sys.stderr.flush()
        elif time.monotonic() - self._last_line >= 5.0:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
            self._last_line = time.monotonic()

    def done(self) -> None:
        """End the live line (before other output)."""
        if self.tty and not self.quiet:
            sys.stderr.write("\n")


def clock(seconds: float) -> str:
    """m:ss below an hour, else XhMM."""
    seconds = max(0, int(seconds))
    return (
        f"{seconds // 60}:{seconds % 60:02d}"
        if seconds < 3600
        else f"{seconds // 3600}h{seconds % 3600 // 60:02d}"
    )


def budget_bar(args: TrainArgs, env_steps: int, elapsed_s: float, width: int = 16) -> str:
    """A bar and ETA towards the nearer of the env-step and wall-clock budgets ('' if none).

    The target return may end the run sooner; that cannot be predicted, so the
    ETA is the budget's.
    """
    fractions = []
    if args.max_env_steps:
        fractions.append(env_steps / args.max_env_steps)
    if args.max_seconds:
        fractions.append(elapsed_s / args.max_seconds)
    if not fractions:
        return ""
    done = min(1.0, max(fractions))
    filled = round(done * width)
    eta = clock(elapsed_s * (1 - done) / done) if done >= 0.01 else "?"
    return f"[{'#' * filled}{'.' * (width - filled)}] {100 * done:3.0f}% ETA {eta:>5} "


def budget_line(args: TrainArgs) -> str:
    """The run's stopping rules in words."""
    parts = []
    if args.target_return is not None:
        held = f" held for {args.sustain} evaluations" if args.sustain > 1 else ""
        parts.append(f"target {args.target_return:g}{held}")
    if args.max_env_steps:
        parts.append(f"<= {args.max_env_steps:,} env steps")
    if args.max_seconds:
        parts.append(f"<= {args.max_seconds:g}s")
    return ", ".join(parts) or "no budget (Ctrl-C to stop)"


def status_line(args: TrainArgs, row: Mapping[str, Any], elapsed_s: float) -> str:
    """The live line for one metrics.jsonl row (rates where the poll had them)."""

    def rate(value: float | None, width: int) -> str:
        return "" if value is None else f" ({value:{width},.0f}/s)"

    active = row["active_actors"]
    replay = row["replay_size"]
    ev = (
        f"{row['eval_return']:6.1f} (v{row['eval_version']})"
        if row["eval_return"] is not None
        else "  -   "
    )
    return (
        budget_bar(args, row["env_steps"], elapsed_s)
        + f"[{row['t_s']:7.1f}s] actors {active if active is not None else '?'} | "
        f"env {row['env_steps']:>9,}{rate(row['env_steps_per_s'], 7)} | "
        f"learner {row['learner_steps']:>8,}{rate(row['learner_steps_per_s'], 6)} | "
        f"model v{row['model_version'] or 0} | eval {ev} | "
        f"replay {f'{replay:,}' if replay is not None else '?'}"
        + "".join(f" | {name}: {what} down" for name, what in (row.get("down") or {}).items())
    )


def carbon_line(summary: RunSummary) -> str:
    """Energy and CO2 with how they were obtained, or why they are unavailable."""
    info = summary.carbon
    if summary.energy_kwh is None or summary.emissions_kg is None:
        return f"carbon unavailable ({info.reason or 'not recorded'})"
    kind = "measured" if info.measured else "estimated, no RAPL"
    return (
        f"energy {1000 * summary.energy_kwh:.3g} Wh, "
        f"{1000 * summary.emissions_kg:.3g} g CO2e ({info.country_iso_code}; {kind})"
    )


def result_line(summary: RunSummary) -> str:
    """The line a command prints when the run has ended."""
    ev = ", ".join(f"{p} {v:.1f}" for p, v in summary.eval.items() if v is not None)
    if summary.reached_target and summary.target_return is not None:
        head = (
            f"reached {summary.target_return:g} in {summary.time_to_target_s or 0:.1f}s "
            f"({summary.env_steps_to_target or 0:,} env steps)"
        )
        if summary.sustain > 1:
            head += (
                f", held for {summary.sustain} evaluations at "
                f"{summary.time_to_sustained_target_s:.1f}s "
                f"({summary.env_steps_to_sustained_target or 0:,} env steps)"
                if summary.sustained_target and summary.time_to_sustained_target_s is not None
                else f", not held for {summary.sustain} evaluations ({summary.stop_reason})"
            )
    else:
        head = f"stopped: {summary.stop_reason}"
    return (
        f"{head}; final greedy return: {ev or 'n/a'}; {carbon_line(summary)}; "
        f"run dir: {summary.run_dir}"
    )
