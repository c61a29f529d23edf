"""What a run shows while it goes on and prints when it ends."""

from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from actorq.network import ALGO_KINDS
from commands.train.args import TrainArgs
from commands.train.summary import EvalRecord, RunSummary

# The live view is laid out for the narrowest common terminal.
VIEW_COLUMNS = 80
# Without a terminal (CI, a pipe): one plain line this often.
PLAIN_EVERY_S = 5.0


class Progress:
    """A live view of the run on a terminal (rich); a plain line every few seconds
    otherwise (CI, pipes); nothing with ``quiet``."""

    def __init__(self, quiet: bool, stream: TextIO | None = None) -> None:
        """``stream``: where to write (default: stderr, read when first needed)."""
        self.quiet = quiet
        self.console = Console(file=stream, stderr=stream is None, highlight=False)
        self.tty = self.console.is_terminal and not self.console.is_dumb_terminal
        self._live: Live | None = None
        self._last_line = -PLAIN_EVERY_S

    def note(self, text: str) -> None:
        """A line that stays (above the live view on a terminal)."""
        if self.quiet:
            return
        if self._live is not None:
            self._live.console.print(text, markup=False, soft_wrap=True)
        else:
            self.console.file.write(text + "\n")
            self.console.file.flush()

    def update(
        self,
        args: TrainArgs,
        row: Mapping[str, Any],
        elapsed_s: float,
        evals: Sequence[EvalRecord] = (),
    ) -> None:
        """Show one metrics.jsonl row: redraw the live view, or print a plain line
        when the last one is ``PLAIN_EVERY_S`` old."""
        if self.quiet:
            return
        if self.tty:
            view = status_view(args, row, elapsed_s, evals)
            if self._live is None:
                # Not transient: the last view stays on screen after the run.
                self._live = Live(view, console=self.console, refresh_per_second=4)
                self._live.start()
            else:
                self._live.update(view, refresh=True)
        elif time.monotonic() - self._last_line >= PLAIN_EVERY_S:
            self.note(status_line(args, row, elapsed_s, evals))
            self._last_line = time.monotonic()

    def done(self) -> None:
        """End the live view (before other output); an update starts a new one."""
        if self._live is not None:
            self._live.stop()
            self._live = None


def clock(seconds: float) -> str:
    """m:ss below an hour, else XhMM."""
    seconds = max(0, round(seconds))
    return (
        f"{seconds // 60}:{seconds % 60:02d}"
        if seconds < 3600
        else f"{seconds // 3600}h{seconds % 3600 // 60:02d}"
    )


def eta(
    args: TrainArgs, row: Mapping[str, Any], elapsed_s: float, evals: Sequence[EvalRecord] = ()
) -> tuple[float | None, str]:
    """(fraction of the budget used, ETA in words): the ETA is the target's when the
    evaluations' pace so far reaches it before the nearer budget ends, else the budget's."""
    fractions = []
    if args.max_env_steps:
        fractions.append(row["env_steps"] / args.max_env_steps)
    if args.max_seconds:
        fractions.append(elapsed_s / args.max_seconds)
    done = min(1.0, max(fractions)) if fractions else None
    budget_s = elapsed_s * (1 - done) / done if done is not None and done >= 0.01 else None
    target_s = target_eta(args, evals, elapsed_s)
    if target_s is not None and (budget_s is None or target_s < budget_s):
        return done, f"{clock(target_s)} to target"
    if budget_s is not None:
        return done, f"{clock(budget_s)} to budget"
    return done, "?"


def target_eta(args: TrainArgs, evals: Sequence[EvalRecord], elapsed_s: float) -> float | None:
    """Seconds until the eval return reaches the target, the line through the run's first
    and latest evaluation carried on (None: no target, under two evaluations, or the
    return not rising). Returns start anywhere (negative too), hence the first evaluation
    and not zero as the line's base."""
    ours = [e for e in evals if e.precision == args.precision]
    if args.target_return is None or len(ours) < 2:
        return None
    first, last = ours[0], ours[-1]
    if last.mean_return >= args.target_return:
        return 0.0
    if last.t_s <= first.t_s or last.mean_return <= first.mean_return:
        return None
    pace = (last.mean_return - first.mean_return) / (last.t_s - first.t_s)
    return max(0.0, (args.target_return - last.mean_return) / pace - (elapsed_s - last.t_s))


def _num(value: float | None, fmt: str = ",.0f") -> str:
    return "-" if value is None else f"{value:{fmt}}"


def _rate(value: float | None) -> str:
    return "" if value is None else f" ({value:,.0f}/s)"


def explore(args: TrainArgs, row: Mapping[str, Any]) -> str:
    """Exploration now: the actors' mean epsilon, or the (fixed) Gaussian noise."""
    kind = ALGO_KINDS.get(args.algo)
    if kind is not None and kind.continuous:
        return "Gaussian noise"
    eps = row.get("epsilon")
    return "-" if eps is None else f"eps {eps:.3f}"


def eval_text(row: Mapping[str, Any]) -> str:
    """The latest evaluation: mean return, over how many episodes, of which version."""
    if row["eval_return"] is None:
        return "- (none yet)"
    episodes = row.get("eval_episodes")
    over = f" over {episodes} ep" if episodes is not None else ""
    return f"{row['eval_return']:.1f}{over} (v{row['eval_version']})"


def status_fields(
    args: TrainArgs, row: Mapping[str, Any], elapsed_s: float, evals: Sequence[EvalRecord] = ()
) -> list[tuple[str, str]]:
    """The live view's (label, value) pairs for one metrics.jsonl row (``evals``: the
    run's evaluations so far, for the target's ETA)."""
    done, eta_text = eta(args, row, elapsed_s, evals)
    active = row["active_actors"]
    loss = row.get("loss")
    fields = [
        ("eval return", eval_text(row)),
        ("train return", _num(row.get("train_return"), ".1f")),
        ("env steps", _num(row["env_steps"]) + _rate(row["env_steps_per_s"])),
        ("learner", _num(row["learner_steps"]) + _rate(row["learner_steps_per_s"])),
        ("loss", _num(loss, ".4g")),
        ("explore", explore(args, row)),
        ("model", f"v{row['model_version'] or 0}"),
        ("actors", "?" if active is None else str(active)),
        ("elapsed", clock(elapsed_s) + (f" {100 * done:.0f}%" if done is not None else "")),
        ("eta", eta_text),
    ]
    return fields


def status_view(
    args: TrainArgs, row: Mapping[str, Any], elapsed_s: float, evals: Sequence[EvalRecord] = ()
) -> Table:
    """The live view: two (label, value) pairs a line, ``VIEW_COLUMNS`` wide at most (the
    left values, the eval return first, get the room), then what is down."""
    grid = Table.grid(padding=(0, 1))
    for width in (33, 21):
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="ellipsis", no_wrap=True, max_width=width)
    fields = status_fields(args, row, elapsed_s, evals)
    for i in range(0, len(fields), 2):
        cells = [cell for label, value in fields[i : i + 2] for cell in (label, value)]
        grid.add_row(*cells, *[""] * (4 - len(cells)))
    for name, what in (row.get("down") or {}).items():
        grid.add_row(name, f"down: {what}", "", "")
    return grid


def render(view: Any, columns: int = VIEW_COLUMNS) -> str:
    """A renderable as the plain text a terminal ``columns`` wide would show."""
    buf = io.StringIO()
    Console(file=buf, width=columns, color_system=None, highlight=False).print(view)
    return buf.getvalue()


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


def status_line(
    args: TrainArgs, row: Mapping[str, Any], elapsed_s: float, evals: Sequence[EvalRecord] = ()
) -> str:
    """The plain line for one metrics.jsonl row (no terminal): the view's fields, then
    the replay's size and what is down."""
    replay = row["replay_size"]
    fields = status_fields(args, row, elapsed_s, evals)
    return (
        f"[{row['t_s']:7.1f}s] "
        + " | ".join(f"{name} {value}" for name, value in fields)
        + f" | replay {f'{replay:,}' if replay is not None else '?'}"
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
