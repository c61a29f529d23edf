"""The sustained-target stop rule (the run stops when the target is held, not touched once)
and the evaluation's bounded CPU share."""

from __future__ import annotations

import pytest

from actorq.config import ConfigError
from commands.train.args import TrainArgs
from commands.train.evaluator import pause_after
from commands.train.state import RunState, StopCheck, held_target
from commands.train.summary import EvalRecord, eval_figures

TARGET = 475.0


def ev(t_s: float, mean: float, stopped_early: bool = False, version: int = 0) -> EvalRecord:
    return EvalRecord(
        t_s=t_s,
        version=version or int(t_s),
        precision="int8",
        mean_return=mean,
        episodes=20,
        stopped_early=stopped_early,
        env_steps=int(1000 * t_s),
        duration_s=0.5,
    )


def test_three_evaluations_in_a_row_at_the_target_hold_it() -> None:
    evals = [ev(1, 300), ev(2, 480), ev(3, 500), ev(4, 475)]
    assert held_target(evals, TARGET, 3) == evals[-1]


def test_two_in_a_row_do_not_hold_a_target_of_three() -> None:
    assert held_target([ev(1, 300), ev(2, 480), ev(3, 500)], TARGET, 3) is None


def test_one_evaluation_below_the_target_breaks_the_streak() -> None:
    assert held_target([ev(1, 480), ev(2, 474.9), ev(3, 500)], TARGET, 2) is None


def test_an_evaluation_stopped_early_breaks_the_streak_whatever_its_mean() -> None:
    evals = [ev(1, 480), ev(2, 500, stopped_early=True), ev(3, 500)]
    assert held_target(evals, TARGET, 2) is None


def test_a_streak_of_one_is_the_first_crossing() -> None:
    evals = [ev(1, 100), ev(2, 476)]
    assert held_target(evals, TARGET, 1) == evals[-1]


def test_a_streak_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="sustain 0"):
        held_target([ev(1, 500)], TARGET, 0)


def test_the_run_state_keeps_the_first_crossing_and_stops_only_when_held() -> None:
    state = RunState()
    stop = StopCheck(TrainArgs(env="CartPole-v1", target_return=TARGET, sustain=3))
    records = [ev(1, 480), ev(2, 300), ev(3, 490), ev(4, 500), ev(5, 499)]
    reasons = []
    for record in records:
        state.add_eval(record, TARGET, sustain=3)
        reasons.append(stop.reason(state, state.sustained))
    assert state.reached == records[0]
    assert state.sustained == records[4]
    assert reasons == ["", "", "", "", "target_reached"]


def test_the_summary_reports_first_crossing_and_sustained_target_apart() -> None:
    first, held = ev(10, 480), ev(30, 490)
    figures = eval_figures({}, [first, ev(20, 490), held], first, held)
    assert (figures["time_to_target_s"], figures["env_steps_to_target"]) == (10, 10_000)
    assert figures["sustained_target"] is True
    assert figures["time_to_sustained_target_s"] == 30
    assert figures["env_steps_to_sustained_target"] == 30_000
    assert figures["eval_detail"].sustained_eval == held


def test_a_sustain_below_one_is_refused_naming_the_flag() -> None:
    with pytest.raises(ConfigError, match="--sustain 0"):
        TrainArgs(env="CartPole-v1", sustain=0)


# ---------------------------------------------------------------- evaluation's CPU share


def test_a_costly_evaluation_pauses_until_it_is_a_quarter_of_one_cpu() -> None:
    # 1 CPU-second in 1.2 s at a 0.25 share: 1 / (1.2 + 2.8) = 0.25.
    assert pause_after(1.0, 1.2, 0.25, 1.0) == pytest.approx(2.8)


def test_a_cheap_evaluation_still_waits_the_configured_interval() -> None:
    assert pause_after(0.05, 0.1, 0.25, 5.0) == 5.0


def test_an_evaluation_cpu_share_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="--eval-cpu-share 1.5"):
        TrainArgs(env="CartPole-v1", eval_cpu_share=1.5)
