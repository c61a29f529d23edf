"""The report's numbers: runs read through ``RunSummary``, grouped by precision, aggregated."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actorq.network import PRECISIONS
from commands.bench.stats import ratio_of_medians, time_to_target
from commands.train.summary import SUMMARY_FILE, EvalRecord, RunSummary, read_evals

BREAKDOWN_STEP = ("env", "inference", "send", "other")
ACTOR_BENCH_FILE = "bench-actor.json"
BENCH_FILE = "bench.json"


class ReportError(ValueError):
    """Inputs a report cannot be made from, with the reason."""


@dataclass
class Run:
    """One `actorq train` run directory, read."""

    dir: Path
    summary: RunSummary
    evals: list[EvalRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A summary may also come as summary.json's content.
        if isinstance(self.summary, Mapping):
            self.summary = RunSummary.from_dict(self.summary)

    @property
    def precision(self) -> str:
        return self.summary.precision or "?"

    @property
    def seed(self) -> int:
        return self.summary.seed

    def curve(self) -> list[tuple[float, float]]:
        """(wall-clock s, greedy return) of the evaluations made during training.

        An evaluation stopped early (the target out of reach) counts with the
        mean of the episodes it ran.
        """
        wall = float(self.summary.wall_s or math.inf)
        return [
            (float(e.t_s), float(e.mean_return))
            for e in self.evals
            if e.precision == self.precision and float(e.t_s) <= wall
        ]


# ------------------------------------------------------------------ input


def read_run(path: Path) -> Run:
    """A run directory's summary.json and evals.jsonl."""
    try:
        summary = RunSummary.read(path)
        evals = read_evals(path)
    except (OSError, ValueError) as err:
        raise ReportError(f"{path}: cannot read {SUMMARY_FILE} ({err})") from None
    return Run(path, summary, evals)


def find_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Every run under the given paths, each once, in a stable order."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if (path / SUMMARY_FILE).is_file():
            found.append(path)
        elif path.is_dir():
            below = sorted(p.parent for p in path.rglob(SUMMARY_FILE))
            if not below:
                raise ReportError(f"{path}: no run directory ({SUMMARY_FILE}) in it")
            found.extend(below)
        else:
            raise ReportError(f"{path}: not a directory")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return [read_run(p) for p in unique]


def read_json_in(paths: Sequence[str | Path], name: str) -> dict[str, Any] | None:
    """The first readable JSON file ``name`` in the given directories (or a given file)."""
    for raw in paths:
        path = Path(raw)
        candidate = path if path.is_file() else path / name
        if candidate.is_file():
            try:
                data: dict[str, Any] = json.loads(candidate.read_text())
                return data
            except ValueError:
                continue
    return None


def find_actor_bench(paths: Sequence[str | Path]) -> dict[str, Any] | None:
    """The micro-benchmark JSON in one of the given directories (or a given file), if any."""
    return read_json_in(paths, ACTOR_BENCH_FILE)


def read_bench_meta(paths: Sequence[str | Path]) -> dict[str, Any]:
    """bench.json of a bench directory, if one was given."""
    return read_json_in([Path(p) for p in paths if Path(p).is_dir()], BENCH_FILE) or {}


# ------------------------------------------------------------ aggregation


def stats(values: Sequence[float | None]) -> dict[str, Any] | None:
    """median, mean, min, max and count of the values that are there (None: none are)."""
    clean = [float(v) for v in values if v is not None]
    if not clean:
        return None
    return {
        "median": statistics.median(clean),
        "mean": statistics.fmean(clean),
        "min": min(clean),
        "max": max(clean),
        "n": len(clean),
    }


def _carbon(summaries: Sequence[RunSummary]) -> dict[str, Any]:
    """A precision's energy figures: all its runs or nothing, since a median over the
    measured runs alone would hide the others."""
    ok = [s for s in summaries if s.emissions_kg is not None]
    missing = [
        f"seed {s.seed}: {s.carbon.reason or 'not recorded'}"
        for s in summaries
        if s.emissions_kg is None
    ]
    return {
        "energy_kwh": stats([s.energy_kwh for s in summaries]) if not missing else None,
        "emissions_kg": stats([s.emissions_kg for s in summaries]) if not missing else None,
        "carbon_unavailable": missing,
        "carbon_power": next((s.carbon.power for s in ok if s.carbon.power), ""),
        "carbon_measured": all(s.carbon.measured for s in ok) if ok else None,
        "carbon_country": next((s.carbon.country_iso_code for s in ok), None),
    }


def _swaps(summaries: Sequence[RunSummary]) -> dict[str, Any]:
    """Model swap times over the runs whose actors swapped."""
    swaps = [s.model_swap_ms for s in summaries if s.model_swap_ms and s.model_swap_ms.swaps]
    return {
        "swap_pull_ms": stats([w.pull for w in swaps]),
        "swap_load_ms": stats([w.load for w in swaps]),
        "swap_ms": stats([w.pull + w.load for w in swaps]),
    }


def aggregate_precision(runs: Sequence[Run]) -> dict[str, Any]:
    """Per-precision numbers over its runs (medians, min/max, counts)."""
    summaries = [r.summary for r in runs]
    precision = runs[0].precision
    reached = [s for s in summaries if s.reached_target]
    return {
        "precision": precision,
        "runs": len(runs),
        "seeds": sorted(r.seed for r in runs),
        "reached": len(reached),
        "target_return": summaries[0].target_return,
        "time_to_target_s": stats([s.time_to_target_s for s in reached]),
        "env_steps_to_target": stats([s.env_steps_to_target for s in reached]),
        # The stop rule's streak (--sustain): evaluations in a row at or above the target.
        "sustain": max(s.sustain for s in summaries),
        "sustained": sum(s.sustained_target for s in summaries),
        "time_to_sustained_target_s": stats([s.time_to_sustained_target_s for s in summaries]),
        "env_steps_to_sustained_target": stats(
            [s.env_steps_to_sustained_target for s in summaries]
        ),
        "startup_s": stats([s.startup_s for s in summaries]),
        "final_return": stats([s.eval.get(precision) for s in summaries]),
        # The same weights run in the other precision (quantization's effect on return).
        "final_return_other_precision": {
            p: stats([s.eval.get(p) for s in summaries]) for p in PRECISIONS if p != precision
        },
        "wall_s": stats([s.wall_s for s in summaries]),
        "actor_env_steps_per_s": stats([s.actor_env_steps_per_s for s in summaries]),
        "observed_env_steps_per_s": stats([s.observed_env_steps_per_s for s in summaries]),
        "learner_steps_per_s": stats([s.learner_steps_per_s for s in summaries]),
        "model_bytes": stats([s.model_bytes.get(precision) for s in summaries]),
        **_swaps(summaries),
        "breakdown_us_per_step": {
            k: stats([getattr(s.breakdown_us_per_step, k, None) for s in summaries])
            for k in BREAKDOWN_STEP
        },
        **_carbon(summaries),
    }


def median(agg: Mapping[str, Any] | None, key: str) -> float | None:
    """The median of one aggregated figure (None when it has none)."""
    figure = agg.get(key) if agg else None
    return float(figure["median"]) if figure else None


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is 0."""
    if a is None or b is None or b == 0:
        return None
    return a / b


# Ratio name -> (aggregated figure, whether higher is better): fp32/int8 for costs,
# int8/fp32 for rates, so that > 1 always favours int8.
# The time ratio is not here: it is ``time_ratio_interval``'s point (missed runs counted).
RATIOS = {
    "emissions": ("emissions_kg", False),
    "energy": ("energy_kwh", False),
    "actor_env_steps_per_s": ("actor_env_steps_per_s", True),
    "model_bytes": ("model_bytes", False),
    "swap_ms": ("swap_ms", False),
    "env_steps_to_target": ("env_steps_to_target", False),
}


def ratios(by_precision: Mapping[str, Mapping[str, Any]]) -> dict[str, float | None]:
    """fp32/int8 of medians (int8/fp32 for rates, so >1 always favours int8)."""
    fp32, int8 = by_precision.get("fp32"), by_precision.get("int8")
    if fp32 is None or int8 is None:
        return {}
    out = {}
    for name, (key, rate) in RATIOS.items():
        a, b = median(fp32, key), median(int8, key)
        out[name] = ratio(b, a) if rate else ratio(a, b)
    return out


def run_time(run: Run, side: str, at_eval_start: bool = False) -> float:
    """The run's time to target for a fp32/int8 ratio (``stats.time_to_target``: a run that
    missed the target never counts in int8's favour); ``at_eval_start``: counted to the start
    of the evaluation that reached it, without that evaluation's own length, which is longer
    for an fp32 policy of the same size."""
    s, hit = run.summary, run.summary.eval_detail.target_eval
    time_s = s.time_to_target_s
    if at_eval_start:
        time_s = hit.t_s - hit.duration_s if s.reached_target and hit is not None else None
    return time_to_target(s.reached_target, time_s, s.wall_s, side)


def ratio_interval(values_a: Sequence[float], values_b: Sequence[float]) -> dict[str, Any] | None:
    """median(a) / median(b) with its percentile bootstrap 95% interval
    (``stats.ratio_of_medians``) as a dict; None when either side is empty."""
    interval = ratio_of_medians(values_a, values_b)
    return interval.as_dict() if interval else None


def time_ratio_interval(
    fp32: Sequence[Run], int8: Sequence[Run], at_eval_start: bool = False
) -> dict[str, Any] | None:
    """fp32/int8 time to target over seeds (``run_time``), with its interval."""
    return ratio_interval(
        [run_time(r, "fp32", at_eval_start) for r in fp32],
        [run_time(r, "int8", at_eval_start) for r in int8],
    )


def aggregate(runs: Sequence[Run]) -> dict[str, Any]:
    """Everything report.json holds: per precision, ratios, per run."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.precision, []).append(run)
    order = [p for p in PRECISIONS if p in groups] + sorted(set(groups) - set(PRECISIONS))
    by_precision = {p: aggregate_precision(groups[p]) for p in order}
    interval = time_ratio_interval(groups.get("fp32", []), groups.get("int8", []))
    vs = ratios(by_precision)
    if interval:  # not the medians over reached runs alone, which int8's misses would flatter
        vs = {"time_to_target": interval["point"], **vs}
    return {
        "precisions": by_precision,
        "ratios": vs,
        "time_ratio_interval": interval,
        "runs": [run_row(r) for p in order for r in sorted(groups[p], key=lambda r: r.seed)],
    }


def run_row(run: Run) -> dict[str, Any]:
    """One run's line of report.json's ``runs``."""
    s = run.summary
    return {
        "dir": str(run.dir),
        "precision": run.precision,
        "seed": run.seed,
        "stop_reason": s.stop_reason,
        "reached_target": s.reached_target,
        "time_to_target_s": s.time_to_target_s,
        "env_steps_to_target": s.env_steps_to_target,
        "time_to_sustained_target_s": s.time_to_sustained_target_s,
        "env_steps_to_sustained_target": s.env_steps_to_sustained_target,
        "startup_s": s.startup_s,
        "final_return": s.eval.get(run.precision),
        "wall_s": s.wall_s,
        "energy_kwh": s.energy_kwh,
        "emissions_kg": s.emissions_kg,
        "carbon_status": s.carbon.status,
    }
