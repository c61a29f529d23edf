"""The launcher's supervisor as plain Python: fake processes, a fake clock.

The end-to-end kill -9 run is in tests/test_faults.py.
"""

from __future__ import annotations

import pytest

from commands.train.summary import RunSummary, ServiceRestart
from commands.train.supervisor import (
    RestartPolicy,
    StepCarry,
    Supervisor,
    how_it_ended,
)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class FakeProcess:
    """A process that runs until ``die`` is called; serving once ``ready``."""

    next_pid = 1000

    def __init__(self, name: str) -> None:
        self.name = name
        FakeProcess.next_pid += 1
        self._pid = FakeProcess.next_pid
        self.status: int | None = None
        self.ready = False

    @property
    def pid(self) -> int:
        return self._pid

    def alive(self) -> bool:
        return self.status is None

    def exit_status(self) -> int | None:
        return self.status

    def die(self, status: int) -> None:
        self.status = status

    def log_tail(self, lines: int = 30) -> str:
        return f"{self.name} pid {self.pid} last line"


class Harness:
    def __init__(self, policy: RestartPolicy, labels: tuple[str, ...] = ("quantizer",)) -> None:
        self.clock = FakeClock()
        self.lines: list[str] = []
        self.started: list[FakeProcess] = []
        self.sup = Supervisor(
            self.start,
            lambda p: p.ready,  # type: ignore[attr-defined]
            policy,
            report=self.lines.append,
            clock=self.clock,
        )
        for label in labels:
            self.sup.add(FakeProcess(label))

    def start(self, label: str) -> FakeProcess:
        proc = FakeProcess(label)
        self.started.append(proc)
        return proc

    def current(self, label: str) -> FakeProcess:
        return next(p for p in self.sup.processes if p.name == label)  # type: ignore[misc]

    def advance(self, seconds: float) -> None:
        self.clock.t += seconds
        self.sup.tick()


def test_a_killed_process_is_restarted_after_a_backoff_and_its_downtime_recorded() -> None:
    h = Harness(RestartPolicy(max_restarts=3, window_s=60, first_backoff_s=1, max_backoff_s=8))
    old = h.current("quantizer")
    old.die(-9)
    h.advance(0)  # exit seen at t=0 of the run
    assert h.started == []
    h.advance(0.5)
    assert h.started == []  # still backing off
    h.advance(0.5)
    new = h.current("quantizer")
    assert new is not old and h.started == [new]
    h.advance(2)
    assert h.lines == []  # not serving yet
    new.ready = True
    h.advance(1)
    [record] = h.sup.records()
    assert (record.service, record.signal, record.exit_code) == ("quantizer", "SIGKILL", None)
    assert (record.pid, record.new_pid) == (old.pid, new.pid)
    assert record.downtime_s == pytest.approx(4.0)
    assert record.log_tail == [f"quantizer pid {old.pid} last line"]
    assert h.lines == [
        "restarted quantizer: killed by SIGKILL at 0.0s, serving again after 4.0s "
        "(restart 1 of at most 3 in 60s)"
    ]
    assert not h.sup.gave_up


def test_the_wait_doubles_with_each_restart_in_the_window_up_to_the_cap() -> None:
    policy = RestartPolicy(max_restarts=10, window_s=600, first_backoff_s=0.5, max_backoff_s=3)
    assert [policy.backoff(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_the_run_ends_when_a_process_exits_with_its_budget_spent() -> None:
    h = Harness(RestartPolicy(max_restarts=2, window_s=60, first_backoff_s=1, max_backoff_s=1))
    for _ in range(2):
        h.current("quantizer").die(1)
        h.advance(0)
        h.advance(1)  # restarted
    assert len(h.started) == 2 and not h.sup.gave_up
    h.current("quantizer").die(1)
    h.advance(0)
    assert len(h.started) == 2  # not started a third time
    assert h.sup.gave_up.startswith("quantizer exited with code 1 at ")
    assert "restart budget is spent (2 restart(s) in the last 60s, max_restarts 2)" in (
        h.sup.gave_up
    )
    assert h.sup.last_words == [f"quantizer pid {h.current('quantizer').pid} last line"]
    # The restarts that never served again keep no downtime.
    assert [r.downtime_s for r in h.sup.records()] == [None, None]


def test_restarts_older_than_the_window_no_longer_count() -> None:
    h = Harness(RestartPolicy(max_restarts=1, window_s=60, first_backoff_s=1, max_backoff_s=1))
    h.current("quantizer").die(-9)
    h.advance(0)
    h.advance(1)
    h.advance(61)  # the one restart is now outside the window
    h.current("quantizer").die(-9)
    h.advance(0)
    h.advance(1)
    assert len(h.started) == 2 and not h.sup.gave_up


def test_max_restarts_zero_never_restarts() -> None:
    h = Harness(RestartPolicy(max_restarts=0))
    h.current("quantizer").die(-15)
    h.advance(0)
    h.advance(100)
    assert h.started == [] and "quantizer killed by SIGTERM" in h.sup.gave_up


def test_only_the_process_that_exited_is_restarted() -> None:
    h = Harness(RestartPolicy(first_backoff_s=1), labels=("replay", "learner", "actor-0"))
    learner = h.current("learner")
    h.current("actor-0").die(-9)
    h.advance(0)
    h.advance(1)
    assert [p.name for p in h.started] == ["actor-0"]
    assert h.current("learner") is learner
    assert [p.name for p in h.sup.processes] == ["replay", "learner", "actor-0"]


def test_a_process_that_dies_again_before_serving_counts_a_new_restart() -> None:
    h = Harness(RestartPolicy(max_restarts=5, first_backoff_s=1, max_backoff_s=16))
    h.current("quantizer").die(-9)
    h.advance(0)
    h.advance(1)
    h.current("quantizer").die(1)  # crashed during its start
    h.advance(0)
    h.advance(1.9)
    assert len(h.started) == 1  # the second wait is twice the first
    h.advance(0.1)
    assert len(h.started) == 2
    h.current("quantizer").ready = True
    h.advance(0)
    first, second = h.sup.records()
    assert first.downtime_s is None and second.exit_code == 1
    assert second.downtime_s == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(0, (0, None)), (3, (3, None)), (-9, (None, "SIGKILL")), (-15, (None, "SIGTERM"))],
)
def test_exit_statuses_read_as_code_or_signal(
    status: int, expected: tuple[int | None, str | None]
) -> None:
    assert how_it_ended(status) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_restarts": -1},
        {"window_s": 0},
        {"first_backoff_s": 0},
        {"first_backoff_s": 9, "max_backoff_s": 1},
    ],
)
def test_a_policy_that_cannot_work_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RestartPolicy(**kwargs)  # type: ignore[arg-type]


def test_an_actors_env_steps_from_before_its_restart_still_count() -> None:
    carry = StepCarry()
    assert carry.total([("actor-0", 100), ("actor-1", 50)]) == 150
    assert carry.total([("actor-0", 120), ("actor-1", None)]) == 170  # actor-1 down
    assert carry.total([("actor-0", 130), ("actor-1", 5)]) == 130 + 50 + 5  # a new actor-1
    assert carry.total([("actor-0", 140), ("actor-1", 30)]) == 140 + 50 + 30


def test_restarts_travel_through_summary_json(tmp_path: object) -> None:
    record = ServiceRestart("learner", 12.5, None, "SIGKILL", 10, 11, 3.25, ["a", "b"])
    summary = RunSummary(env="CartPole-v1", restarts=[record])
    back = RunSummary.from_dict(summary.to_dict())
    assert back.restarts == [record]
