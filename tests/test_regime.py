"""A run's regime: which side bounded it, measured from the services' own timings."""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from actorq.v1 import actor_pb2, learner_pb2
from commands.train import regime as regime_module
from commands.train.regime import CpuMeter, classify, cpu_seconds, regime
from commands.train.summary import RunSummary


def _actor(env_steps: int, env: float, inference: float, send: float) -> actor_pb2.ActorStatus:
    return actor_pb2.ActorStatus(
        env_steps=env_steps,
        breakdown=actor_pb2.StepBreakdown(
            env_us=env, inference_us=inference, send_us=send, other_us=0.0
        ),
    )


def _learner(wait: float, update: float, loop: float) -> learner_pb2.LearnerStatus:
    return learner_pb2.LearnerStatus(sample_wait_s=wait, update_s=update, loop_s=loop, warmup_s=1.5)


def test_actors_held_back_by_replay_make_the_run_learner_bound() -> None:
    bound, sentence = classify(actor_wait=0.9, learner_wait=0.05, cpu_total=0.5)
    assert bound == "learner"
    assert "cannot shorten this run" in sentence


def test_a_learner_waiting_for_data_makes_the_run_actor_bound() -> None:
    bound, sentence = classify(actor_wait=0.02, learner_wait=0.6, cpu_total=0.99)
    assert bound == "actors"
    assert "int8 actors shorten training" in sentence


def test_saturated_cores_without_waiting_make_the_run_cpu_bound() -> None:
    bound, _ = classify(actor_wait=0.05, learner_wait=0.05, cpu_total=0.95)
    assert bound == "cpu"
    assert classify(actor_wait=0.05, learner_wait=0.05, cpu_total=0.5)[0] == "mixed"


def test_unmeasured_sides_give_no_verdict() -> None:
    bound, sentence = classify(None, 0.5, None)
    assert bound == "" and "not measured" in sentence


def test_regime_weighs_actors_by_their_steps_and_excludes_the_learners_warmup() -> None:
    actors = [_actor(3000, 100.0, 100.0, 800.0), _actor(1000, 100.0, 100.0, 0.0)]
    r = regime(actors, _learner(wait=2.0, update=7.0, loop=10.0), {}, cpus=2)
    # (3000 * 800) / (3000 * 1000 + 1000 * 200)
    assert r.actor_wait_share == pytest.approx(2_400_000 / 3_200_000, abs=1e-4)
    assert r.learner_wait_share == pytest.approx(0.2)
    assert r.learner_update_share == pytest.approx(0.7)
    assert r.learner_warmup_s == pytest.approx(1.5)
    assert r.bound == "learner"


def test_cpu_shares_are_grouped_and_summed() -> None:
    r = regime([], None, {"actor-0": 0.2, "actor-1": 0.25, "learner": 0.4}, cpus=2)
    assert r.cpu_share == {"actors": 0.45, "learner": 0.4, "total": 0.85}


def test_cpu_meter_measures_a_busy_process_and_an_idle_one() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        meter = CpuMeter(cpus=1)
        time.sleep(0.3)  # both interpreters started
        meter.read({"busy": busy.pid, "idle": idle.pid})
        time.sleep(1.0)
        meter.read({"busy": busy.pid, "idle": idle.pid})
        shares = meter.shares()
    finally:
        busy.kill()
        idle.kill()
    # A core's worth when the machine is idle, less when it is loaded; never near idle's.
    assert shares["busy"] > 0.03
    assert shares["idle"] < 0.02
    assert cpu_seconds(busy.pid + 10_000_000) is None


def test_the_regime_survives_a_summary_round_trip() -> None:
    r = regime([_actor(10, 1.0, 1.0, 1.0)], _learner(1.0, 1.0, 4.0), {"learner": 0.5}, cpus=2)
    back = RunSummary.from_dict(RunSummary(regime=r).to_dict())
    assert back.regime == r


def test_cpu_meter_adds_a_restarted_processs_cpu_to_its_label(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seconds = {101: 5.0, 202: 0.0}
    monkeypatch.setattr(regime_module, "cpu_seconds", lambda pid: seconds.get(pid))
    clock = iter([0.0, 10.0, 20.0])
    monkeypatch.setattr(regime_module, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    meter = CpuMeter(cpus=1)
    meter.read({"learner": 101})  # t=0: 5 s of CPU at its start
    seconds[101] = 7.0
    meter.read({"learner": 101})  # t=10: 2 s more; then killed and restarted as 202
    seconds[202] = 3.0
    meter.read({"learner": 202})  # t=20: the new process used 3 s since its start
    assert meter.shares() == {"learner": 0.25}
