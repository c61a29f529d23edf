"""A run's results, ``DIR/summary.json``, and its evaluations, ``DIR/evals.jsonl``: the
types, and the one place that writes and reads them.

``actorq train`` and ``actorq attach`` build a ``RunSummary`` (``summarize``) and
write it; ``actorq report`` reads it back through the same type. The JSON keys
are the field names; a key the file lacks (an older run, a run that failed
before it measured anything) reads as the field's default, and a key this type
does not know is ignored.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from commands.train.regime import Regime

SUMMARY_FILE = "summary.json"
EVALS_FILE = "evals.jsonl"
METRICS_FILE = "metrics.jsonl"
# Stop reasons of a run that ended as asked (the command exits 0); anything else
# (a failure, a stall, Ctrl-C) is an error.
PLANNED_ENDS = ("target_reached", "max_env_steps", "max_seconds")

T = TypeVar("T")


@dataclass
class EvalRecord:
    """One greedy evaluation of a served artifact (a line of evals.jsonl)."""

    t_s: float  # seconds from the start of the run to the end of the evaluation
    version: int  # policy version of the artifact
    precision: str
    mean_return: float  # over the episodes run
    episodes: int
    stopped_early: bool  # the target was out of reach, so not every episode ran
    env_steps: int  # the run's env steps when the evaluation began
    duration_s: float
    cpu_s: float = 0.0  # CPU time of the evaluation's thread (0: not measured, older runs)


@dataclass
class EvalFailure:
    """A final evaluation that could not run (its artifact could not be fetched)."""

    error: str


@dataclass
class EvalDetail:
    """Every evaluation of the run."""

    # Per precision: the final evaluation of one version in both precisions, full episodes.
    final: dict[str, EvalRecord | EvalFailure] = field(default_factory=dict)
    history: list[EvalRecord] = field(default_factory=list)
    # The evaluation that first reached the target, if one did.
    target_eval: EvalRecord | None = None
    # The evaluation that ended the first streak of `sustain` evaluations at or above it.
    sustained_eval: EvalRecord | None = None


@dataclass
class StepBreakdown:
    """Mean microseconds per actor env step in each part of the step loop (weighted by steps)."""

    env: float = 0.0
    inference: float = 0.0
    send: float = 0.0  # handing transitions to the sender, rate-limit waits included
    other: float = 0.0


@dataclass
class ModelSwap:
    """Mean milliseconds per policy swap over the actors that swapped, and how many swaps."""

    pull: float = 0.0
    load: float = 0.0
    swaps: int = 0


@dataclass
class Quantization:
    """How the newest int8 artifact was made and how close it is to fp32."""

    method: str | None = None
    max_abs_err: float | None = None
    action_agreement: float | None = None
    calibration_source: str | None = None
    version: int | None = None


@dataclass
class ActiveActors:
    """Actors the learner counted as active over the run's polls (it changes with scaling)."""

    min: int | None = None
    max: int | None = None
    last: int | None = None


@dataclass
class ServiceRestart:
    """One restart of a service process by the launcher's supervisor (summary.json
    ``restarts``; ``commands.train.supervisor``)."""

    service: str = ""  # process label: replay, quantizer, learner, actor-N
    t_s: float = 0.0  # seconds into the run when its exit was seen
    exit_code: int | None = None  # None when a signal ended it
    signal: str | None = None  # the signal that ended it (SIGKILL, ...)
    pid: int = 0  # the process that exited
    new_pid: int | None = None  # the process started in its place
    # From the exit seen to serving again; None: it did not serve again before the run ended.
    downtime_s: float | None = None
    log_tail: list[str] = field(default_factory=list)  # the exited process's last log lines


@dataclass
class CarbonSummary:
    """The run's energy record (``commands.carbon.aggregate``): "ok" with totals, or
    "unavailable" with the reason. Keys it does not have stay out of the JSON."""

    status: str = "unavailable"
    reason: str | None = None
    dir: str | None = None
    # Per process label: its carbon record.
    services: dict[str, dict[str, Any]] | None = None
    country_iso_code: str | None = None
    country_name: str | None = None
    power: str | None = None  # how power was obtained, in one sentence
    measured: bool | None = None  # RAPL counters rather than codecarbon's model
    cpu_modes: list[str] | None = None
    total: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: only the keys that have a value."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class RunSummary:
    """What one run did (summary.json)."""

    env: str = ""
    algo: str = ""
    precision: str = ""  # the precision the actors ran
    actors: int | None = None  # attached: the most the learner counted at once
    seed: int = 0
    target_return: float | None = None
    reached_target: bool = False  # the first crossing: one full evaluation at or above it
    time_to_target_s: float | None = None
    env_steps_to_target: int | None = None
    # The stop rule: this many full evaluations in a row at or above the target.
    sustain: int = 1
    sustained_target: bool = False
    preset: str = ""  # the env's preset the run used (presets/ALGO.yaml#ENV), '' for none
    time_to_sustained_target_s: float | None = None
    env_steps_to_sustained_target: int | None = None
    stop_reason: str = ""
    env_steps: int = 0  # attached: transitions replay took in since attaching
    learner_steps: int = 0
    wall_s: float | None = None  # every time here counts from the command's start
    # Seconds to every service healthy, and to the first env step (train only).
    healthy_s: float | None = None
    startup_s: float | None = None
    # CPU seconds all the run's processes had used by startup_s (the machine's load aside,
    # start-up takes at least this divided by the CPUs).
    startup_cpu_s: float | None = None
    # startup_cpu_s by process: each service's label, and "launcher" (its evaluator aside,
    # which starts after every service is healthy).
    startup_cpu: dict[str, float] = field(default_factory=dict)
    # CPU seconds the evaluations took while training ran (the launcher's evaluator thread:
    # fetching and running greedy episodes), and that as a share of one CPU over wall_s.
    eval_cpu_s: float | None = None
    eval_cpu_share: float | None = None
    # Final greedy mean return per precision (None where it could not be evaluated).
    eval: dict[str, float | None] = field(default_factory=dict)
    eval_detail: EvalDetail = field(default_factory=EvalDetail)
    model_versions: dict[str, int] = field(default_factory=dict)
    model_bytes: dict[str, int] = field(default_factory=dict)
    # Step-loop rate of each actor (1 / mean time per step, backpressure waits
    # included) summed over actors; None when no actor was polled (attached).
    actor_env_steps_per_s: float | None = None
    # Median of the polled sums of the actors' own env steps/s.
    observed_env_steps_per_s: float | None = None
    breakdown_us_per_step: StepBreakdown | None = None
    model_swap_ms: ModelSwap | None = None
    quantization: Quantization = field(default_factory=Quantization)
    learner_steps_per_s: float | None = None
    # Service processes this run started (train only): label -> pid / exit code.
    pids: dict[str, int] = field(default_factory=dict)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    # Every restart of a service process the supervisor made (train only).
    restarts: list[ServiceRestart] = field(default_factory=list)
    energy_kwh: float | None = None  # None, never 0, when not measured
    emissions_kg: float | None = None
    carbon: CarbonSummary = field(default_factory=CarbonSummary)
    run_dir: str = ""
    mode: str = ""  # "train" (processes started here) or "attached"
    services: dict[str, str] = field(default_factory=dict)  # service -> address
    active_actors: ActiveActors | None = None
    # Which side bounded the run (actors or learner), and the CPU each side used.
    regime: Regime | None = None
    # Where it ran: the launcher's machine (CPU model, cores, int8 flags, package
    # versions; commands.machine.run_machine) and where the learner trained, as the
    # learner said ("cpu (N torch threads)", "cuda:0 (GPU name)"; '' if never heard).
    machine: dict[str, Any] = field(default_factory=dict)
    learner_device: str = ""

    @property
    def ended_as_planned(self) -> bool:
        """Whether the target or a budget ended the run (not a failure, stall or Ctrl-C)."""
        return self.stop_reason in PLANNED_ENDS

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of summary.json."""
        data = dataclasses.asdict(self)
        data["carbon"] = self.carbon.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSummary:
        """Read summary.json's content; ValueError if a present key has the wrong shape."""
        return from_dict(cls, data)

    def write(self, run_dir: Path) -> None:
        """Write DIR/summary.json."""
        (run_dir / SUMMARY_FILE).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def read(cls, run_dir: Path) -> RunSummary:
        """DIR/summary.json; OSError or ValueError when it is missing or unreadable."""
        return cls.from_dict(json.loads((run_dir / SUMMARY_FILE).read_text()))


def clear_results(run_dir: Path) -> None:
    """Create the run directory, without an earlier run's summary, metrics and evals."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in (METRICS_FILE, EVALS_FILE, SUMMARY_FILE):
        (run_dir / stale).unlink(missing_ok=True)


def append_eval(run_dir: Path, record: EvalRecord) -> None:
    """Add one evaluation to DIR/evals.jsonl."""
    with open(run_dir / EVALS_FILE, "a") as f:
        f.write(json.dumps(dataclasses.asdict(record)) + "\n")


def read_evals(run_dir: Path) -> list[EvalRecord]:
    """Every evaluation in DIR/evals.jsonl (none when the file is missing)."""
    path = run_dir / EVALS_FILE
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [from_dict(EvalRecord, json.loads(line)) for line in lines if line.strip()]


# ------------------------------------------------------------------ reading


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """A dataclass from its JSON form, nested dataclasses included; unknown keys ignored."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    try:
        return cls(**{n: _value(hints[n], data[n]) for n in names if n in data})
    except TypeError as err:
        raise ValueError(f"{cls.__name__}: {err}") from None


def _value(tp: Any, value: Any) -> Any:
    """value read as type tp (dataclasses, their unions, lists and dicts of them)."""
    if value is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in args if a is not type(None)]
        # A union of records: the one whose fields hold every key of the value.
        fits = [
            a
            for a in options
            if not dataclasses.is_dataclass(a)
            or set(value) <= {f.name for f in dataclasses.fields(a)}
        ]
        return _value((fits or options)[0], value)
    if dataclasses.is_dataclass(tp):
        return from_dict(typing.cast(type, tp), value)
    if origin is list:
        return [_value(args[0], v) for v in value]
    if origin is dict:
        return {k: _value(args[1], v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------- building


def _loop_rate(actor: Any) -> float:
    b = actor.breakdown
    per_step_us = b.env_us + b.inference_us + b.send_us + b.other_us
    return 1e6 / per_step_us if per_step_us > 0 else 0.0


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def actor_figures(actors: Sequence[Any]) -> dict[str, Any]:
    """The summary's actor fields from the actors' last statuses (ActorStatus)."""
    steps = max(1, sum(a.env_steps for a in actors))

    def weighted(part: str) -> float:
        total = sum(getattr(a.breakdown, part) * a.env_steps for a in actors)
        return round(float(total / steps) if actors else 0.0, 2)

    swaps = [a.swap for a in actors if a.swap.swaps > 0]
    return {
        "actor_env_steps_per_s": round(sum(_loop_rate(a) for a in actors), 1),
        "breakdown_us_per_step": StepBreakdown(
            env=weighted("env_us"),
            inference=weighted("inference_us"),
            send=weighted("send_us"),
            other=weighted("other_us"),
        ),
        "model_swap_ms": ModelSwap(
            pull=round(_mean([s.pull_ms for s in swaps]), 3),
            load=round(_mean([s.load_ms for s in swaps]), 3),
            swaps=int(sum(s.swaps for s in swaps)),
        ),
    }


def model_figures(models: Any) -> dict[str, Any]:
    """The summary's model fields from the quantizer's ListModels answer (None: no answer)."""
    artifacts = {a.precision: a for a in models.artifacts} if models is not None else {}
    int8 = artifacts.get("int8")
    q = int8.quantization if int8 else None
    return {
        "model_versions": {p: int(a.version) for p, a in artifacts.items()},
        "model_bytes": {p: int(a.size_bytes) for p, a in artifacts.items()},
        "quantization": Quantization(
            method=q.method if q else None,
            max_abs_err=q.max_abs_err if q else None,
            action_agreement=q.action_agreement if q else None,
            calibration_source=q.calibration_source if q else None,
            version=int(int8.version) if int8 else None,
        ),
    }


def eval_figures(
    final: Mapping[str, EvalRecord | EvalFailure],
    history: Sequence[EvalRecord],
    reached: EvalRecord | None,
    sustained: EvalRecord | None = None,
) -> dict[str, Any]:
    """The summary's target and evaluation fields: the first crossing (``reached``) and
    the evaluation that ended the streak the stop rule asks for (``sustained``)."""
    return {
        "reached_target": reached is not None,
        "time_to_target_s": reached.t_s if reached else None,
        "env_steps_to_target": reached.env_steps if reached else None,
        "sustained_target": sustained is not None,
        "time_to_sustained_target_s": sustained.t_s if sustained else None,
        "env_steps_to_sustained_target": sustained.env_steps if sustained else None,
        "eval": {p: r.mean_return if isinstance(r, EvalRecord) else None for p, r in final.items()},
        "eval_detail": EvalDetail(dict(final), list(history), reached, sustained),
    }


def active_actor_figures(counts: Sequence[int]) -> ActiveActors | None:
    """min/max/last of the learner's active-actor counts (None if it never answered)."""
    if not counts:
        return None
    return ActiveActors(min=min(counts), max=max(counts), last=counts[-1])


def median_or_none(values: Sequence[float]) -> float | None:
    """The rounded median, or None for no values."""
    return round(statistics.median(values), 1) if values else None
