"""What `actorq train` shows while a run goes on: the live view (rich, 80 columns) on a
terminal, plain lines otherwise, and the ETA towards the target or the budget."""

from __future__ import annotations

import io
from typing import Any

from commands.train.args import TrainArgs
from commands.train.progress import (
    Progress,
    eta,
    render,
    status_line,
    status_view,
    target_eta,
)
from commands.train.summary import EvalRecord


def row(**over: Any) -> dict[str, Any]:
    """A metrics.jsonl row as the monitor writes it."""
    base: dict[str, Any] = {
        "t_s": 60.0,
        "env_steps": 123_456,
        "env_steps_per_s": 2057.3,
        "learner_steps": 45_678,
        "learner_steps_per_s": 761.2,
        "loss": 0.01234,
        "model_version": 42,
        "replay_size": 100_000,
        "active_actors": 2,
        "eval_return": 187.25,
        "eval_version": 40,
        "eval_episodes": 20,
        "train_return": 143.5,
        "epsilon": 0.0512,
        "down": {},
    }
    return {**base, **over}


def evaluation(t_s: float, mean_return: float, precision: str = "int8") -> EvalRecord:
    return EvalRecord(
        t_s=t_s,
        version=1,
        precision=precision,
        mean_return=mean_return,
        episodes=20,
        stopped_early=False,
        env_steps=0,
        duration_s=1.0,
    )


def test_the_live_view_fits_80_columns_and_shows_every_field() -> None:
    args = TrainArgs(env="CartPole-v1", target_return=475, max_env_steps=1_000_000)
    text = render(status_view(args, row(), 60.0))
    assert max(len(line) for line in text.splitlines()) <= 80
    for shown in (
        "eval return",
        "187.2 over 20 ep (v40)",  # the mean with the episodes it is the mean of
        "train return",
        "143.5",
        "123,456 (2,057/s)",  # env steps and their rate
        "45,678 (761/s)",  # learner steps and their rate
        "0.01234",  # loss
        "eps 0.051",
        "v42",
        "to budget",
    ):
        assert shown in text, (shown, text)


def test_the_live_view_stays_in_80_columns_with_huge_numbers_and_a_service_down() -> None:
    args = TrainArgs(env="CartPole-v1", max_env_steps=None, max_seconds=3600)
    huge = row(
        env_steps=12_345_678_901,
        env_steps_per_s=98_765_432.0,
        learner_steps=9_876_543_210,
        eval_return=-123_456.75,
        eval_episodes=1000,
        eval_version=123_456,
        down={"replay": "Redis at redis://some-long-host-name.example.org:6379/0"},
    )
    text = render(status_view(args, huge, 30.0))
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "-123456.8 over 1000 ep (v123456)" in text
    assert "replay      down: Redis at" in text


def test_before_any_evaluation_the_view_says_so() -> None:
    text = render(status_view(TrainArgs(env="CartPole-v1"), row(eval_return=None), 5.0))
    assert "none yet" in text


def test_continuous_algorithms_show_their_noise_instead_of_epsilon() -> None:
    args = TrainArgs(env="Pendulum-v1", algo="d4pg")
    text = render(status_view(args, row(epsilon=0.0), 5.0))
    assert "Gaussian noise" in text and "eps 0" not in text


def test_the_eta_follows_the_budget_without_a_target() -> None:
    # A quarter of the env-step budget in 60 s: 3 more minutes.
    args = TrainArgs(env="CartPole-v1", max_env_steps=400_000)
    done, text = eta(args, row(env_steps=100_000), 60.0)
    assert done == 0.25
    assert text == "3:00 to budget"


def test_the_eta_follows_the_target_when_the_evaluations_get_there_first() -> None:
    # Return 100 at 20 s, 200 at 40 s: 5 per second, 275 to go from 200 -> 55 s after 40 s.
    args = TrainArgs(env="CartPole-v1", target_return=475, max_env_steps=1_000_000)
    evals = [evaluation(20.0, 100.0), evaluation(40.0, 200.0)]
    assert target_eta(args, evals, 40.0) == 55.0
    assert target_eta(args, evals, 50.0) == 45.0
    _, text = eta(args, row(env_steps=10_000), 50.0, evals)
    assert text == "0:45 to target"


def test_the_budget_eta_wins_when_it_ends_the_run_sooner() -> None:
    args = TrainArgs(env="CartPole-v1", target_return=475, max_env_steps=None, max_seconds=60)
    evals = [evaluation(20.0, 100.0), evaluation(40.0, 110.0)]  # 0.5/s: far from 475
    _, text = eta(args, row(), 50.0, evals)
    assert text == "0:10 to budget"


def test_no_target_eta_from_one_evaluation_a_falling_return_or_another_precision() -> None:
    args = TrainArgs(env="CartPole-v1", target_return=475, max_env_steps=None)
    assert target_eta(args, [evaluation(20.0, 100.0)], 30.0) is None
    assert target_eta(args, [evaluation(20.0, 100.0), evaluation(40.0, 90.0)], 50.0) is None
    fp32 = [evaluation(20.0, 100.0, "fp32"), evaluation(40.0, 200.0, "fp32")]
    assert target_eta(args, fp32, 50.0) is None
    assert eta(args, row(), 50.0)[1] == "?"


def test_without_a_terminal_progress_prints_plain_periodic_lines() -> None:
    out = io.StringIO()
    progress = Progress(quiet=False, stream=out)
    args = TrainArgs(env="CartPole-v1", max_env_steps=1_000_000)
    progress.note("starting replay, quantizer, learner, 2 actor(s)...")
    progress.update(args, row(), 60.0)
    progress.update(args, row(), 61.0)  # within the plain line's period: not printed
    progress.done()
    lines = out.getvalue().splitlines()
    assert lines[0] == "starting replay, quantizer, learner, 2 actor(s)..."
    assert len(lines) == 2
    assert "\x1b" not in out.getvalue()  # no escape codes in a pipe or a CI log
    assert "eval return 187.2 over 20 ep (v40)" in lines[1]
    assert "train return 143.5" in lines[1]


def test_quiet_shows_nothing() -> None:
    out = io.StringIO()
    progress = Progress(quiet=True, stream=out)
    progress.note("starting")
    progress.update(TrainArgs(env="CartPole-v1"), row(), 1.0)
    progress.done()
    assert out.getvalue() == ""


def test_the_plain_line_keeps_what_is_down_at_its_end() -> None:
    line = status_line(TrainArgs(env="CartPole-v1"), row(down={"replay": "Redis"}), 1.0)
    assert line.endswith("| replay 100,000 | replay: Redis down")
