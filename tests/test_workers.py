"""The floor's retry policy and worker helpers (actorq/retry.py, actorq/workers.py)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from actorq.retry import Backoff, Outage, is_transient
from actorq.workers import BackgroundSender, Prefetcher, RateMeter


class _Err(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "test"


def test_transient_codes_are_outages_not_answers() -> None:
    assert is_transient(grpc.StatusCode.UNAVAILABLE)
    assert is_transient(grpc.StatusCode.DEADLINE_EXCEEDED)
    assert not is_transient(grpc.StatusCode.INVALID_ARGUMENT)
    assert not is_transient(grpc.StatusCode.FAILED_PRECONDITION)
    assert not is_transient(None)


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    b = Backoff(0.1, 0.5)
    assert [b.next() for _ in range(5)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    b.reset()
    assert b.next() == pytest.approx(0.1)


def test_outage_logs_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = Outage(logging.getLogger("t"), "sending")
    with caplog.at_level(logging.INFO, logger="t"):
        assert not outage.recovered()
        assert outage.failed("UNAVAILABLE: down")
        assert not outage.failed("UNAVAILABLE: down")
        assert outage.active and outage.failures == 2
        assert outage.recovered()
        assert not outage.recovered()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "sending failed (UNAVAILABLE: down); retrying",
        "sending works again after 2 failed tries",
    ]


def test_rate_meter_measures_over_its_window_and_drops_to_zero_when_idle() -> None:
    meter = RateMeter(window_s=10.0, resolution_s=0.0)
    for t in range(11):
        meter.add(100 * t, now=float(t))
    assert meter.rate(1000, now=10.0) == pytest.approx(100.0)
    assert meter.rate(1000, now=30.0) == 0.0


def test_prefetcher_hands_over_items_then_the_error_in_order() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("broken stream")

    p: Prefetcher[int] = Prefetcher(source, depth=1, name="t")
    assert p.next(timeout=5) == 1
    assert p.next(timeout=5) == 2
    with pytest.raises(ValueError, match="broken stream"):
        p.next(timeout=5)
    p.close()


def test_prefetcher_says_eof_at_the_end_and_iterates_to_it() -> None:
    p: Prefetcher[int] = Prefetcher(lambda: iter(range(5)), depth=2, name="t")
    assert list(p) == [0, 1, 2, 3, 4]
    with pytest.raises(EOFError):
        p.next(timeout=1)
    p.close()


def test_prefetcher_close_cancels_a_blocked_source() -> None:
    release = threading.Event()

    def blocked() -> Iterator[int]:
        release.wait(10)
        yield 1

    p: Prefetcher[int] = Prefetcher(blocked, depth=1, name="t", cancel=release.set)
    with pytest.raises(queue.Empty):
        p.next(timeout=0.1)
    started = time.monotonic()
    p.close()
    assert time.monotonic() - started < 2.0


class _ListSender(BackgroundSender[list[int]]):
    """Sends every waiting number at once; fails while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__("t-sender", logging.getLogger("t"), "sending numbers")
        self.waiting: list[int] = []
        self.sent: list[int] = []
        self.down = threading.Event()

    def submit(self, n: int) -> None:
        with self._cond:
            self.waiting.append(n)
            self._cond.notify_all()

    def _has_work(self) -> bool:
        return bool(self.waiting)

    def _take(self) -> list[int]:
        work, self.waiting = self.waiting, []
        return work

    def _requeue(self, work: list[int]) -> None:
        self.waiting = work + self.waiting

    def _send(self, work: list[int]) -> None:
        if self.down.is_set():
            raise _Err(grpc.StatusCode.UNAVAILABLE)
        self.sent += work


def test_background_sender_retries_an_outage_and_loses_nothing() -> None:
    sender = _ListSender()
    sender.down.set()
    sender.start()
    for n in range(3):
        sender.submit(n)
    deadline = time.monotonic() + 5
    while sender.failures < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sender.failures >= 2 and sender.sent == []
    sender.down.clear()
    sender.submit(3)
    assert sender.wait_idle(10.0)
    assert sorted(sender.sent) == [0, 1, 2, 3]
    assert not sender.outage.active
    sender.stop()


def test_background_sender_drops_work_the_peer_refuses() -> None:
    class Refusing(_ListSender):
        def _send(self, work: list[int]) -> None:
            raise _Err(grpc.StatusCode.INVALID_ARGUMENT)

    sender = Refusing()
    sender.start()
    sender.submit(1)
    assert sender.wait_idle(5.0)
    assert sender.failures == 1 and sender.waiting == []
    sender.stop()


class _RestingSender(_ListSender):
    """Rests between calls; records each call's numbers separately."""

    def __init__(self, rest_s: float) -> None:
        super().__init__()
        self.min_interval_s = rest_s
        self.calls: list[list[int]] = []

    def submit(self, n: int) -> None:
        with self._cond:
            self.waiting.append(n)
            self._wake()

    def _send(self, work: list[int]) -> None:
        self.calls.append(work)
        super()._send(work)


def test_background_sender_merges_what_arrives_while_it_rests_into_one_call() -> None:
    sender = _RestingSender(rest_s=0.8)
    sender.start()
    sender.submit(0)
    deadline = time.monotonic() + 5
    while not sender.calls and time.monotonic() < deadline:  # the first goes out at once
        time.sleep(0.005)
    for n in (1, 2, 3):  # while it rests
        sender.submit(n)
    assert sender.wait_idle(5.0)
    assert sender.calls == [[0], [1, 2, 3]]
    started = time.monotonic()
    sender.submit(4)
    sender.stop()  # ends a rest at once; what still waits is not sent
    assert time.monotonic() - started < 0.5
