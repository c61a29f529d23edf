"""One ``actorq train`` run directory, read for its one-run report, finished or not.

A finished run has summary.json, metrics.jsonl (a row per progress poll),
evals.jsonl and config.yaml. An interrupted one may lack summary.json, hold the
bare summary Ctrl-C writes (settings and stop reason, nothing measured), or
end metrics.jsonl in a half-written line; whatever is there is read, and what
is not is said (``OneRun.notes``) rather than guessed. The run's settings come
from summary.json, else from config.yaml's ``train:`` section; the network size
from config.yaml's ``learner:`` section, read into the learner's own config type.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from actorq import config
from actorq.config import ConfigError
from commands.report.data import ReportError
from commands.train.args import TrainArgs, train_section
from commands.train.summary import (
    EVALS_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    EvalRecord,
    RunSummary,
    from_dict,
    read_evals,
)
from services.learner.config import LearnerConfig

CONFIG_FILE = "config.yaml"
# Any of these directly in a directory makes it a train run directory.
RUN_FILES = (SUMMARY_FILE, METRICS_FILE, EVALS_FILE)


@dataclass
class MetricsRow:
    """The part of one metrics.jsonl row (``commands.train.monitor.Watch.record``) the
    report reads; a key the row lacks (the service did not answer that poll) is None."""

    t_s: float | None = None  # seconds from the run's start to the poll
    env_steps: int | None = None  # the run's env steps, summed over actors
    env_steps_per_s: float | None = None  # sum of the actors' own step rates
    learner_steps: int | None = None
    learner_steps_per_s: float | None = None
    loss: float | None = None  # the learner's latest training loss
    eval_return: float | None = None  # the latest greedy evaluation's mean return
    # Mean return of the actors' recent training (exploring) episodes; rows of
    # launchers that do not record it lack the key.
    train_return: float | None = None


@dataclass
class RunSettings:
    """What the report's titles name: env, algorithm, precision, network size."""

    env: str = "?"
    algo: str = "?"
    precision: str = "?"
    seed: int | None = None
    target_return: float | None = None
    network: str = "network size not recorded"

    @property
    def title(self) -> str:
        """'CartPole-v1, DQN, int8 actors, Q-network 256x256'."""
        return f"{self.env}, {self.algo.upper()}, {self.precision} actors, {self.network}"


@dataclass
class OneRun:
    """One run directory's results, as far as they were written."""

    dir: Path
    settings: RunSettings
    summary: RunSummary | None  # None: no readable summary.json
    evals: list[EvalRecord] = field(default_factory=list)
    metrics: list[MetricsRow] = field(default_factory=list)
    # What is missing or partial, one sentence each.
    notes: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """Whether the run ended as planned (target or budget) and said so."""
        return self.summary is not None and self.summary.ended_as_planned

    @property
    def measured(self) -> RunSummary | None:
        """The summary when it holds measurements (a bare Ctrl-C summary does not)."""
        s = self.summary
        return s if s is not None and s.wall_s is not None else None

    def last(self, name: str) -> Any:
        """The newest metrics row's value of a field (None when no row has it)."""
        return next(
            (v for r in reversed(self.metrics) if (v := getattr(r, name)) is not None), None
        )


def is_run_dir(path: Path) -> bool:
    """Whether path is an ``actorq train`` (or ``attach``) run directory itself."""
    return path.is_dir() and any((path / name).is_file() for name in RUN_FILES)


def read_metrics(run_dir: Path) -> tuple[list[MetricsRow], int]:
    """metrics.jsonl's rows with a time, and how many lines could not be read (a run
    killed mid-write leaves a partial last line)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return [], 0
    rows, bad = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = from_dict(MetricsRow, json.loads(line))
        except ValueError:
            bad += 1
            continue
        if row.t_s is not None:
            rows.append(row)
    return rows, bad


def network_size(learner: LearnerConfig) -> str:
    """The trained networks' hidden widths: 'Q-network 256x256' or 'policy ..., critic ...'."""

    def widths(sizes: list[int]) -> str:
        return "x".join(str(s) for s in sizes)

    if learner.algo == "d4pg":
        d4pg = learner.d4pg
        return f"policy {widths(d4pg.policy_hidden)}, critic {widths(d4pg.critic_hidden)}"
    return f"Q-network {widths(learner.dqn.hidden_sizes)}"


def read_config(run_dir: Path) -> tuple[TrainArgs | None, LearnerConfig | None, str]:
    """config.yaml's train settings and learner config, each None where unreadable, and
    why ('' when both were read). ACTORQ_* variables of this shell are not applied."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return None, None, f"no {CONFIG_FILE} (an attached run, or one stopped at start)"
    try:
        data = config.read_file(path)
    except (OSError, ConfigError, yaml.YAMLError) as err:
        return None, None, f"{CONFIG_FILE} unreadable ({err})"
    args = learner = None
    why = []
    try:
        args = config.load(TrainArgs, env={}, flags=train_section(data, str(path)))
    except ConfigError as err:
        why.append(f"its train section: {err}")
    try:
        section = config.flatten(data.get("learner") or {})
        learner = config.load(LearnerConfig, env={}, flags=section)
    except ConfigError as err:
        why.append(f"its learner section: {err}")
    return args, learner, (f"{CONFIG_FILE}: " + "; ".join(why)) if why else ""


def read_summary(run_dir: Path) -> tuple[RunSummary | None, str]:
    """summary.json, or None and why not."""
    if not (run_dir / SUMMARY_FILE).is_file():
        return None, f"no {SUMMARY_FILE}: the run was interrupted before writing it, or goes on"
    try:
        return RunSummary.read(run_dir), ""
    except (OSError, ValueError) as err:
        return None, f"{SUMMARY_FILE} unreadable ({err}); reported from metrics.jsonl"


def settings_of(
    summary: RunSummary | None, args: TrainArgs | None, learner: LearnerConfig | None
) -> RunSettings:
    """The run's settings: summary.json's, else config.yaml's."""
    out = RunSettings()
    if args is not None:
        out = RunSettings(args.env, args.algo, args.precision, args.seed, args.target_return)
    if summary is not None and summary.env:
        out = RunSettings(
            summary.env,
            summary.algo or out.algo,
            summary.precision or out.precision,
            summary.seed,
            summary.target_return,
        )
    if learner is not None:
        out.network = network_size(learner)
    return out


def read_one_run(run_dir: Path) -> OneRun:
    """Everything the run directory holds; ReportError when it is not a run directory."""
    if not is_run_dir(run_dir):
        raise ReportError(
            f"{run_dir} is not an actorq train run directory (none of {', '.join(RUN_FILES)} in it)"
        )
    notes = []
    summary, why = read_summary(run_dir)
    if why:
        notes.append(why)
    elif summary is not None and summary.wall_s is None:
        notes.append(
            f"{SUMMARY_FILE} holds no measurements (stop reason: "
            f"{summary.stop_reason or 'none'}); reported from metrics.jsonl"
        )
    args, learner, why = read_config(run_dir)
    if why:
        notes.append(why)
    metrics, bad = read_metrics(run_dir)
    if bad:
        notes.append(f"{bad} line(s) of {METRICS_FILE} could not be read and were left out")
    try:
        evals = read_evals(run_dir)
    except ValueError as err:
        evals = []
        notes.append(f"{EVALS_FILE} unreadable ({err})")
    if not evals and summary is not None:
        evals = list(summary.eval_detail.history)
    return OneRun(run_dir, settings_of(summary, args, learner), summary, evals, metrics, notes)


def key_figures(run: OneRun) -> dict[str, Any]:
    """The run's headline numbers: from summary.json where measured, else metrics.jsonl."""
    s = run.measured
    rates = [r.env_steps_per_s for r in run.metrics if r.env_steps_per_s]
    updates = [r.learner_steps_per_s for r in run.metrics if r.learner_steps_per_s]
    final = s.eval_detail.final if s else {}
    return {
        "stop_reason": run.summary.stop_reason if run.summary else None,
        "reached_target": s.reached_target if s else None,
        "time_to_target_s": s.time_to_target_s if s else None,
        "env_steps_to_target": s.env_steps_to_target if s else None,
        "wall_s": s.wall_s if s else run.last("t_s"),
        "env_steps": s.env_steps if s else run.last("env_steps"),
        "learner_steps": s.learner_steps if s else run.last("learner_steps"),
        # Per precision: (mean return, episodes) of the final evaluation.
        "final_eval": {
            p: {"mean_return": r.mean_return, "episodes": r.episodes}
            for p, r in final.items()
            if isinstance(r, EvalRecord)
        },
        "actor_env_steps_per_s": s.actor_env_steps_per_s if s else None,
        "median_env_steps_per_s": statistics.median(rates) if rates else None,
        "median_learner_steps_per_s": statistics.median(updates) if updates else None,
        "model_bytes": dict(s.model_bytes) if s else {},
        # codecarbon's figures: None, never 0, when not measured.
        "energy_kwh": s.energy_kwh if s else None,
        "emissions_kg": s.emissions_kg if s else None,
        "carbon_measured": s.carbon.measured if s else None,
        "regime": s.regime.sentence if s and s.regime else None,
    }
