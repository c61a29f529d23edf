"""Worker helpers every service uses: a rate meter, a prefetcher, a background sender.

- ``RateMeter``: events per second over a sliding window, cheap enough to
  feed every step (the actor's env steps, the learner's updates).
- ``Prefetcher``: runs a blocking iterator (a gRPC stream, a replay draw)
  ahead on a thread of its own, so the consumer finds items ready.
- ``BackgroundSender``: a thread that sends whatever work is waiting, one call
  in flight at a time, retrying transient failures with backoff and logging
  once per outage; subclasses say how work is merged, taken and sent (the
  learner's weight publisher and priority writer are two).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

import grpc

from actorq.retry import Backoff, Outage, describe, worth_retrying

T = TypeVar("T")
W = TypeVar("W")


class RateMeter:
    """Events per second over the last window_s seconds."""

    def __init__(self, window_s: float = 10.0, resolution_s: float = 0.25) -> None:
        self.window_s, self.resolution_s = window_s, resolution_s
        self._points: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()  # written by one thread, read by status calls

    def add(self, total: int, now: float | None = None) -> None:
        """Record the running total (cheap to call every step)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._points and now - self._points[-1][0] < self.resolution_s:
                return
            self._points.append((now, total))
            while len(self._points) > 2 and now - self._points[1][0] > self.window_s:
                self._points.popleft()

    def rate(self, total: int, now: float | None = None) -> float:
        """Rate from the oldest point in the window up to (now, total); 0 without history
        (and 0 when nothing was recorded within the window: the events stopped)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            points = [p for p in self._points if now - p[0] <= self.window_s]
        if not points or now - points[0][0] <= 0:
            return 0.0
        t0, n0 = points[0]
        return (total - n0) / (now - t0)


class _End:
    """Marks the end of a prefetched iterator."""


class Prefetcher(Generic[T]):
    """Keeps up to ``depth`` items of an iterator ready, drawn on a thread of its own.

    ``open`` is called on that thread and returns the iterator (a gRPC stream
    is then opened off the caller's thread); ``cancel``, if given, interrupts
    an iterator blocked inside ``next`` (cancelling the RPC) when the
    prefetcher is closed. The iterator's exception is raised to the consumer
    by ``next`` / iteration, after the items drawn before it.
    """

    def __init__(
        self,
        open: Callable[[], Iterable[T]],
        depth: int,
        name: str,
        cancel: Callable[[], None] | None = None,
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._open = open
        self._cancel = cancel
        self._queue: queue.Queue[T | BaseException | _End] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def stopping(self) -> bool:
        """Whether close() was called (for iterators that should give up early)."""
        return self._stop.is_set()

    def _put(self, item: T | BaseException | _End) -> bool:
        """Queue item unless closed first; True if queued."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            source = self._open()
            if self._stop.is_set():  # closed before the source existed
                if self._cancel is not None:
                    self._cancel()
                return
            for item in source:
                if not self._put(item):
                    return
        except BaseException as err:  # handed to the consumer, which decides
            if not self._stop.is_set():
                self._put(err)
            return
        self._put(_End())

    def next(self, timeout: float | None = None) -> T:
        """The next item; queue.Empty on timeout; the iterator's error if it failed;
        EOFError when it ended."""
        if self._ended:
            raise EOFError("the prefetched stream has ended")
        item = self._queue.get(timeout=timeout)
        if isinstance(item, _End):
            self._ended = True
            raise EOFError("the prefetched stream has ended")
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        return item

    def __iter__(self) -> Iterator[T]:
        while True:
            try:
                yield self.next()
            except EOFError:
                return

    def close(self, timeout: float = 5.0) -> None:
        """Stop drawing, interrupt a blocked draw, wait for the thread."""
        self._stop.set()
        if self._cancel is not None:
            self._cancel()
        self._thread.join(timeout)


class BackgroundSender(Generic[W]):
    """Sends waiting work on a thread of its own; ``submit`` in subclasses never blocks.

    At most one call is in flight. Subclasses keep their waiting work under
    ``self._cond`` and implement:

    - ``_has_work()`` (under the lock): whether anything waits;
    - ``_take()`` (under the lock): remove and return what to send next;
    - ``_send(work)`` (off the lock): send it, raising grpc.RpcError on failure;
    - ``_failed(work, err)`` (off the lock): decide after a failed send; return
      True to wait a backoff before the next try (the default puts transient
      failures back with ``_requeue`` and drops the rest).

    An outage is logged once when it starts and once when it ends (``outage``);
    ``failures`` counts every failed call. With ``min_interval_s`` the thread
    rests that long after each call, so what is submitted meanwhile goes out
    merged in one call; subclasses wake it with ``_wake()``, which leaves a
    resting thread asleep (a wake-up per submit is what the rest saves).
    """

    def __init__(
        self, name: str, log: logging.Logger, what: str, min_interval_s: float = 0.0
    ) -> None:
        self._cond = threading.Condition()
        self._stopping = False
        self._in_flight = False
        self.min_interval_s = min_interval_s
        self._waiting_for_work = False  # the thread sleeps until work arrives (not resting)
        self.failures = 0
        self.outage = Outage(log, what)
        self._backoff = Backoff()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -- subclass hooks --------------------------------------------------------

    def _has_work(self) -> bool:
        raise NotImplementedError

    def _take(self) -> W:
        raise NotImplementedError

    def _send(self, work: W) -> None:
        raise NotImplementedError

    def _requeue(self, work: W) -> None:
        """Under the lock: put work that failed back, older than anything waiting."""
        raise NotImplementedError

    def _failed(self, work: W, err: grpc.RpcError) -> bool:
        transient = worth_retrying(err)  # a busy server too: back off, then again
        self.outage.failed(describe(err), "retrying" if transient else "dropping it")
        if transient:
            with self._cond:
                self._requeue(work)
        return transient

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def idle(self) -> bool:
        """Nothing waiting and nothing in flight."""
        with self._cond:
            return not self._has_work() and not self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        """Block until idle() or timeout; returns idle()."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._has_work() and not self._in_flight, timeout
            )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the call in flight (waiting up to timeout for it); what still
        waits is not sent."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _wake(self) -> None:
        """Under the lock, after adding work: wake the thread if it waits for work."""
        if self._waiting_for_work:
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._waiting_for_work = True
                self._cond.wait_for(lambda: self._has_work() or self._stopping)
                self._waiting_for_work = False
                if self._stopping:
                    return
                work = self._take()
                self._in_flight = True
            retry = False
            try:
                self._send(work)
                self.outage.recovered()
                self._backoff.reset()
            except grpc.RpcError as err:
                self.failures += 1
                retry = self._failed(work, err)
            finally:
                with self._cond:
                    self._in_flight = False
                    self._cond.notify_all()
            rest = self._backoff.next() if retry else self.min_interval_s
            if rest > 0:
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping, rest)
