"""summary.json through its one type: written and read back the same, tolerant of what a
file lacks or has extra."""

from __future__ import annotations

import json
from pathlib import Path

from commands.train.summary import (
    CarbonSummary,
    EvalDetail,
    EvalFailure,
    EvalRecord,
    ModelSwap,
    RunSummary,
    StepBreakdown,
)


def record(precision: str, mean: float) -> EvalRecord:
    return EvalRecord(12.5, 7, precision, mean, 20, False, 3000, 1.5)


def test_a_summary_reads_back_as_it_was_written(tmp_path: Path) -> None:
    summary = RunSummary(
        env="CartPole-v1",
        precision="int8",
        reached_target=True,
        eval={"int8": 480.0, "fp32": None},
        eval_detail=EvalDetail(
            final={"int8": record("int8", 480.0), "fp32": EvalFailure("NOT_FOUND: none")},
            history=[record("int8", 100.0), record("int8", 480.0)],
            target_eval=record("int8", 480.0),
        ),
        breakdown_us_per_step=StepBreakdown(1.0, 2.0, 3.0, 4.0),
        model_swap_ms=ModelSwap(1.5, 2.5, 3),
        carbon=CarbonSummary(status="ok", total={"energy_kwh": 1e-4}, measured=False),
    )
    summary.write(tmp_path)
    assert RunSummary.read(tmp_path) == summary


def test_keys_a_file_lacks_read_as_defaults_and_unknown_keys_are_ignored() -> None:
    summary = RunSummary.from_dict({"stop_reason": "interrupted", "env": "X", "future": 1})
    assert (summary.stop_reason, summary.env, summary.eval, summary.model_swap_ms) == (
        "interrupted",
        "X",
        {},
        None,
    )


def test_carbon_keeps_only_the_keys_it_has() -> None:
    unavailable = CarbonSummary(status="unavailable", reason="turned off", services={})
    data = RunSummary(carbon=unavailable).to_dict()
    assert data["carbon"] == {"status": "unavailable", "reason": "turned off", "services": {}}
    assert json.loads(json.dumps(data))["energy_kwh"] is None


def test_only_the_target_or_a_budget_ends_a_run_as_planned() -> None:
    assert RunSummary(stop_reason="max_seconds").ended_as_planned
    assert not RunSummary(stop_reason="stalled: no env or learner steps for 180s").ended_as_planned
