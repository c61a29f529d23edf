"""Where a run starts: a new (or empty) directory, ``--resume DIR``, or ``--overwrite``.

Without either flag an existing, non-empty ``--out`` is refused before anything
starts, so an earlier run's checkpoint, metrics and policies are never lost to a
repeated command. ``--resume DIR`` continues a stopped run:

- its settings are DIR/config.yaml's (every service's and the ``train:``
  section), with the flags given now laid over them (a larger budget, a target);
- the learner loads DIR/checkpoints/ (its steps continue from there);
- the run's env-step and time counters continue from DIR/metrics.jsonl's last
  line, so the budgets count the whole run; metrics.jsonl and evals.jsonl are
  appended to; policy/ keeps its best until an evaluation beats it;
- a Redis replay store (``--replay-store``) is the same table again; a memory
  store reloads the run's journal (DIR/replay/journal) if there is one.

``--overwrite`` starts afresh in DIR and says what of the old run it removed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from actorq.config import ConfigError
from commands.train.args import deep_merge, read_overlay
from commands.train.summary import EVALS_FILE, METRICS_FILE, SUMMARY_FILE

CONFIG_FILE = "config.yaml"
# The merged settings a resumed run starts from (DIR/config.yaml is rewritten once
# the run's settings are checked).
RESUME_CONFIG = "resume-config.yaml"
CHECKPOINTS = "checkpoints"
# A memory replay's journal in the run directory (``services.replay.journal``).
REPLAY_JOURNAL = Path("replay") / "journal"
# What --overwrite removes of an earlier run (results, checkpoints, policies, energy).
OLD_RUN = (
    "summary.json", "metrics.jsonl", "evals.jsonl", CHECKPOINTS, "carbon", "policy", "replay",
)  # fmt: skip


def add_flags(parser: argparse.ArgumentParser) -> None:
    """``--resume DIR`` and ``--overwrite``."""
    parser.add_argument(
        "--resume",
        metavar="DIR",
        default=None,
        help="continue the stopped run in DIR: its settings, learner checkpoint, step and "
        "time counters (budgets count the whole run); flags given now override its settings",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an --out that holds an earlier run, removing its results, "
        "checkpoints and policies",
    )


@dataclass
class Start:
    """How a run begins: afresh, or continuing ``resume`` from its counters."""

    resume: Path | None = None
    overwrite: bool = False
    env_steps: int = 0  # the resumed run's env steps so far
    elapsed_s: float = 0.0  # and its seconds so far

    def check_out(self, out: Path) -> None:
        """ConfigError for an --out that holds an earlier run this start would mix into."""
        if self.resume is not None or self.overwrite:
            return
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file; give a directory")
        if out.is_dir() and any(out.iterdir()):
            raise ConfigError(
                f"--out {out} already holds a run; continue it with --resume {out}, give "
                "another or an empty --out, or add --overwrite to replace it"
            )

    def clear(self, out: Path) -> None:
        """With --overwrite: remove the earlier run's files (saying which)."""
        if not self.overwrite:
            return
        removed = []
        for name in OLD_RUN:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            else:
                continue
            removed.append(name)
        if removed:
            print(
                f"actorq train: --overwrite removed {', '.join(removed)} from {out}",
                file=sys.stderr,
            )


def take(flags: MutableMapping[str, Any]) -> Start:
    """Pop ``resume``/``overwrite`` from the parsed flags; with --resume, point ``out`` at
    DIR and ``config`` at its saved settings (with any --config laid over them)."""
    directory, overwrite = flags.pop("resume", None), bool(flags.pop("overwrite", False))
    if directory is None:
        return Start(overwrite=overwrite)
    run_dir = Path(directory)
    if overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; give one of them")
    if flags.get("out") and Path(flags["out"]).resolve() != run_dir.resolve():
        raise ConfigError(f"--resume {run_dir} continues in {run_dir}; leave out --out")
    saved = run_dir / CONFIG_FILE
    if not saved.is_file():
        raise ConfigError(
            f"--resume {run_dir}: no {CONFIG_FILE} there, so no run to continue; "
            "give the directory of an earlier actorq train"
        )
    if not (run_dir / CHECKPOINTS).is_dir() or not any((run_dir / CHECKPOINTS).iterdir()):
        raise ConfigError(
            f"--resume {run_dir}: the run left no learner checkpoint ({CHECKPOINTS}/ is "
            "empty or missing); start it again with --overwrite"
        )
    settings = resumed_settings(run_dir, read_overlay(str(saved)), flags.get("config"))
    train = settings["train"]
    if "***" in str(train.get("replay_store", "")) and not flags.get("replay_store"):
        raise ConfigError(
            f"--resume {run_dir}: the run's replay store had a password, which is never "
            "saved; give --replay-store again"
        )
    merged = run_dir / RESUME_CONFIG
    merged.write_text(yaml.safe_dump(settings, sort_keys=False))
    flags["out"], flags["config"] = str(run_dir), str(merged)
    steps, elapsed = progress_so_far(run_dir)
    return Start(resume=run_dir, env_steps=steps, elapsed_s=elapsed)


def resumed_settings(
    run_dir: Path, saved: dict[str, Any], overlay_path: str | None
) -> dict[str, Any]:
    """The saved config.yaml, fit for a new start in ``run_dir``, with --config over it."""
    settings = {k: dict(v or {}) for k, v in saved.items()}
    train = settings.setdefault("train", {})
    old_out = train.pop("out", "")
    train.pop("config", None)
    for budget in ("max_env_steps", "max_seconds"):
        if train.get(budget) == 0:  # how runs saved before 0 was refused said "none"
            train[budget] = None
    learner = settings.setdefault("learner", {})
    # The run's own checkpoint folder, wherever the command is run from now.
    if learner.get("checkpoint_dir") in ("", None, str(Path(old_out) / CHECKPOINTS)):
        learner["checkpoint_dir"] = str(run_dir / CHECKPOINTS)
    replay = settings.setdefault("replay", {})
    # The run's own replay journal too: the resumed replay reloads its transitions.
    if replay.get("journal") == str(Path(old_out) / REPLAY_JOURNAL):
        replay["journal"] = str(run_dir / REPLAY_JOURNAL)
    if overlay_path:
        settings = deep_merge(settings, read_overlay(str(overlay_path)))
    return settings


def progress_so_far(run_dir: Path) -> tuple[int, float]:
    """(env steps, seconds) the run had reached: the most that its metrics, evaluations
    and summary record ((0, 0) for a run that recorded none)."""
    rows = _json_lines(run_dir / METRICS_FILE) + _json_lines(run_dir / EVALS_FILE)
    summary = _json_lines(run_dir / SUMMARY_FILE)
    steps = [int(r.get("env_steps") or 0) for r in rows + summary]
    seconds = [float(r.get("t_s") or 0.0) for r in rows]
    seconds += [float(r.get("wall_s") or 0.0) for r in summary]
    return max(steps, default=0), max(seconds, default=0.0)


def _json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a .jsonl (or one .json) file; lines cut short by a kill skipped."""
    if not path.is_file():
        return []
    text = path.read_text()
    chunks = [text] if path.suffix == ".json" else text.splitlines()
    rows = []
    for chunk in chunks:
        try:
            row = json.loads(chunk)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def check_budgets(start: Start, max_env_steps: int | None, max_seconds: float | None) -> None:
    """ConfigError when the resumed run has already used a budget up."""
    if start.resume is None:
        return
    if max_env_steps and start.env_steps >= max_env_steps:
        raise ConfigError(
            f"--resume {start.resume}: the run already took {start.env_steps:,} env steps, "
            f"all of --max-env-steps {max_env_steps:,}; give a larger --max-env-steps"
        )
    if max_seconds and start.elapsed_s >= max_seconds:
        raise ConfigError(
            f"--resume {start.resume}: the run already ran {start.elapsed_s:.0f}s, all of "
            f"--max-seconds {max_seconds:g}; give a larger --max-seconds"
        )
