"""`actorq bench --suite NAME`: several scenarios, fp32 and int8 over seeds, resumable.

A suite is a YAML file in ``commands/scenarios/suites/`` (or any path):

    description: one line
    seeds: 3                      # default --seeds
    scenarios: [cartpole-dqn-paper-suite, ...]   # shipped scenario names or paths

Runs go scenario by scenario, and within a scenario seed by seed with every
precision of a seed before the next (fp32 s0, int8 s0, fp32 s1, ...), so drift
in the machine's speed hits both precisions alike. Each run is an ``actorq
train`` process writing OUT/SCENARIO/runs/PRECISION-sSEED/.

Resumable: a run whose directory holds a summary.json that says how it ended
is finished and never redone; a directory left by an interrupted run (no
summary, or "interrupted") is moved aside to ``NAME.incomplete-K`` (nothing is
deleted) and the run starts again. A scenario whose file changed since its
finished runs is refused (OUT/SCENARIO/scenario.json keeps the definition they
ran with): resuming would mix two settings in one result. OUT/suite.json records the plan and every
run's outcome. One progress line covers the whole suite. At the end each
scenario gets its report (OUT/SCENARIO/report.md) and the suite its own
(OUT/report.md, ``commands.report.suite``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from actorq.config import ConfigError
from commands.bench.scenario import (
    RunSpec,
    Scenario,
    load_scenario,
    load_shipped,
    plan,
    shipped_names,
    train_command,
)
from commands.train.policy import write_atomic
from commands.train.summary import METRICS_FILE, SUMMARY_FILE

SUITE_FILE = "suite.json"
DEFINITION_FILE = "scenario.json"  # OUT/SCENARIO/: the scenario as its runs ran it
SUITE_KEYS = ("description", "seeds", "scenarios")


@dataclass
class Suite:
    """A named set of scenarios run at every precision over the same seeds."""

    name: str
    description: str
    scenarios: list[Scenario]
    seeds: int = 3
    source: str = ""


@dataclass
class SuiteRun:
    """One planned run of the suite and what became of it."""

    scenario: str
    precision: str
    seed: int
    dir: str  # relative to the suite directory
    status: str = "planned"  # planned | done | kept (finished before this invocation) | failed
    returncode: int | None = None
    duration_s: float | None = None
    stop_reason: str | None = None


@dataclass
class SuiteState:
    """OUT/suite.json: the suite, its plan, and every run's outcome so far."""

    suite: str
    description: str
    seeds: list[int]
    scenarios: list[str]
    runs: list[SuiteRun] = field(default_factory=list)
    command: str = ""
    started_unix: float = 0.0
    finished_unix: float | None = None


SUITES = "scenarios/suites"  # the package folder (under commands/) of shipped suites


def suite_names() -> list[str]:
    """Names of the suites shipped with actorq."""
    return shipped_names(SUITES)


def load_suite(name_or_path: str) -> Suite:
    """A shipped suite by name, or a suite YAML file by path; ConfigError if unusable."""
    data, name, source = load_shipped("suite", SUITES, name_or_path, SUITE_KEYS)
    names = data.get("scenarios") or []
    if not isinstance(names, list) or not names:
        raise ConfigError(f"suite {source}: 'scenarios' must list at least one scenario")
    seeds = int(data.get("seeds", 3))
    if seeds < 1:
        raise ConfigError(f"suite {source}: seeds must be at least 1, got {seeds}")
    return Suite(
        name=name,
        description=str(data.get("description", "")),
        scenarios=[load_scenario(str(n)) for n in names],
        seeds=seeds,
        source=source,
    )


def suite_plan(
    suite: Suite, seeds: int, out: Path, first_seed: int = 0
) -> list[tuple[Scenario, RunSpec]]:
    """Every run, scenario by scenario, each scenario's runs interleaved by seed."""
    return [
        (scenario, run)
        for scenario in suite.scenarios
        for run in plan(scenario.precisions, seeds, out / scenario.name, first_seed)
    ]


def finished(run_dir: Path) -> str | None:
    """How a run ended, if its directory says it did (its summary's stop reason)."""
    try:
        reason = json.loads((run_dir / SUMMARY_FILE).read_text()).get("stop_reason")
    except (OSError, ValueError):
        return None
    return str(reason) if reason and reason != "interrupted" else None


def definition(scenario: Scenario) -> dict[str, Any]:
    """What a scenario's runs depend on: its train flags, config and precisions."""
    return {"train": scenario.train, "config": scenario.config, "precisions": scenario.precisions}


def check_unchanged(scenario: Scenario, runs: list[RunSpec], folder: Path) -> None:
    """ConfigError if ``scenario`` differs from the definition its finished runs in
    ``folder`` ran with; records the definition when nothing says otherwise yet (a suite
    from before this record, or a fresh one)."""
    record = folder / DEFINITION_FILE
    now = json.loads(json.dumps(definition(scenario)))  # as JSON reads it back
    try:
        before = json.loads(record.read_text())
    except FileNotFoundError:
        before = None
    except ValueError as err:
        raise ConfigError(f"{record} is not JSON ({err}); move it aside to resume") from err
    if before is not None and before != now and any(finished(r.out) for r in runs):
        changed = sorted(k for k in now if now.get(k) != before.get(k))
        raise ConfigError(
            f"scenario {scenario.name} changed ({', '.join(changed)}) since its finished runs "
            f"in {folder} ran: move that folder aside to run it again as it is now, or "
            f"restore {scenario.source or 'its file'} to continue"
        )
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(record, json.dumps(now, indent=2).encode())


def set_aside(run_dir: Path) -> Path | None:
    """Move an unfinished run's directory out of the way (never deleted); the new name."""
    if not run_dir.exists():
        return None
    k = 1
    while (aside := run_dir.with_name(f"{run_dir.name}.incomplete-{k}")).exists():
        k += 1
    run_dir.rename(aside)
    return aside


def _clock(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _last_metrics(run_dir: Path) -> dict[str, Any]:
    """The newest line of a running run's metrics.jsonl ({} if none yet)."""
    try:
        with open(run_dir / METRICS_FILE, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
        return json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError, IndexError):
        return {}


class SuiteProgress:
    """One line for the whole suite: position, elapsed, ETA, and the current run's state."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.done_s: list[float] = []  # durations of the runs this invocation ran

    def line(self, index: int, scenario: str, run: RunSpec, run_started: float) -> str:
        elapsed = time.monotonic() - self.started
        remaining = self.total - index
        eta = _clock(sum(self.done_s) / len(self.done_s) * remaining) if self.done_s else "?"
        m = _last_metrics(run.out)
        current = f"{_clock(time.monotonic() - run_started)}"
        if m:
            current += f", env {m.get('env_steps') or 0:,}"
            if m.get("eval_return") is not None:
                current += f", eval {m['eval_return']:.1f}"
        return (
            f"[suite {index}/{self.total} | {_clock(elapsed)}, ETA {eta}] "
            f"{scenario} {run.precision} s{run.seed}: {current}"
        )

    def follow(self, stop: threading.Event, index: int, scenario: str, run: RunSpec) -> None:
        """Refresh the line every 2 s on a terminal, every 60 s otherwise, until stop."""
        run_started = time.monotonic()
        every = 2.0 if self.tty else 60.0
        while not stop.wait(every):
            text = self.line(index, scenario, run, run_started)
            sys.stderr.write(f"\r\033[K{text[:159]}" if self.tty else text + "\n")
            sys.stderr.flush()
        if self.tty:
            sys.stderr.write("\r\033[K")


def run_suite(
    suite: Suite,
    seeds: int,
    out: Path,
    first_seed: int,
    carbon_country: str,
    command: str = "",
) -> SuiteState:
    """Run every planned run not finished yet; returns (and keeps writing) suite.json."""
    out.mkdir(parents=True, exist_ok=True)
    planned = suite_plan(suite, seeds, out, first_seed)
    state = SuiteState(
        suite=suite.name,
        description=suite.description,
        seeds=list(range(first_seed, first_seed + seeds)),
        scenarios=[s.name for s in suite.scenarios],
        command=command,
        started_unix=time.time(),
    )
    for scenario in suite.scenarios:  # every check before any run starts
        mine = [run for s, run in planned if s is scenario]
        check_unchanged(scenario, mine, out / scenario.name)
    for scenario in suite.scenarios:
        if scenario.config:
            (out / scenario.name).mkdir(parents=True, exist_ok=True)
            config = yaml.safe_dump(scenario.config, sort_keys=False)
            (out / scenario.name / "config.yaml").write_text(config)
    progress = SuiteProgress(len(planned))
    for index, (scenario, run) in enumerate(planned, start=1):
        record = SuiteRun(scenario.name, run.precision, run.seed, str(run.out.relative_to(out)))
        state.runs.append(record)
        ended = finished(run.out)
        if ended is not None:
            record.status, record.stop_reason = "kept", ended
            continue
        aside = set_aside(run.out)
        if aside is not None:
            print(f"suite: an unfinished run was moved aside to {aside}", file=sys.stderr)
        _write(out, state)
        record.returncode, record.duration_s = _run_one(
            scenario, run, out, progress, index, carbon_country
        )
        record.stop_reason = finished(run.out)
        record.status = "done" if record.returncode == 0 else "failed"
        progress.done_s.append(record.duration_s)
        _write(out, state)
    state.finished_unix = time.time()
    _write(out, state)
    return state


def _run_one(
    scenario: Scenario, run: RunSpec, out: Path, progress: SuiteProgress, index: int, country: str
) -> tuple[int, float]:
    config = out / scenario.name / "config.yaml" if scenario.config else None
    cmd = train_command(scenario, run, config, country, quiet=True)
    log_dir = out / scenario.name / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    follower = threading.Thread(
        target=progress.follow, args=(stop, index, scenario.name, run), daemon=True
    )
    started = time.monotonic()
    follower.start()
    try:
        with open(log_dir / f"{run.precision}-s{run.seed}.txt", "w") as log:
            code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    finally:
        stop.set()
        follower.join()
    duration = time.monotonic() - started
    outcome = finished(run.out) or f"exit {code}"
    print(
        f"[suite {index}/{progress.total}] {scenario.name} {run.precision} s{run.seed}: "
        f"{outcome} in {_clock(duration)}",
        file=sys.stderr,
        flush=True,
    )
    return code, round(duration, 3)


def _write(out: Path, state: SuiteState) -> None:
    write_atomic(out / SUITE_FILE, json.dumps(asdict(state), indent=2).encode())
