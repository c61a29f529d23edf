"""The launcher's supervisor: a service process that exits while the run goes on is
started again, as Kubernetes or compose would restart its container.

Each process (replay, quantizer, learner, actor-N) has a restart budget:
at most ``max_restarts`` restarts within ``window_s``. The wait before a
restart doubles with each restart still inside the window (``first_backoff_s``
up to ``max_backoff_s``), so a process that dies at once every time does not
spin. When a process exits with its budget spent, the supervisor gives up and
says which process and why (``gave_up``); the launcher then ends the run.

Nothing here knows gRPC or the services: ``start`` makes a new process for a
label, ``healthy`` asks whether one serves. The services themselves make the
restart survivable: the learner resumes from its checkpoint, actors and the
learner retry their calls through an outage (``actorq.retry``), a Redis
replay keeps every acknowledged transition.

``tick()`` does one round of checks and is what the tests drive with a fake
clock; ``start()`` runs it on a daemon thread every ``interval_s``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from commands.train.summary import ServiceRestart

log = logging.getLogger("actorq.train")

# Log lines of the exited process kept in its restart record.
TAIL_LINES = 10


class Process(Protocol):
    """What the supervisor needs of a service process (``procs.ServiceProcess``)."""

    name: str

    @property
    def pid(self) -> int: ...

    def alive(self) -> bool: ...

    def exit_status(self) -> int | None: ...

    def log_tail(self, lines: int = 30) -> str: ...


P = TypeVar("P", bound=Process)


@dataclass(frozen=True)
class RestartPolicy:
    """How often a process may be restarted, and how long to wait before each restart."""

    max_restarts: int = 5  # restarts of one process within window_s (0: never restart)
    window_s: float = 600.0  # the sliding window the budget counts restarts in
    first_backoff_s: float = 0.5  # wait before the first restart in a window
    max_backoff_s: float = 30.0  # the longest wait, however many restarts came before

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(
                f"max_restarts must be >= 0 (0: never restart), got {self.max_restarts}"
            )
        if not self.window_s > 0:
            raise ValueError(f"window_s must be positive seconds, got {self.window_s}")
        if not 0 < self.first_backoff_s <= self.max_backoff_s:
            raise ValueError(
                "need 0 < first_backoff_s <= max_backoff_s, got "
                f"{self.first_backoff_s} and {self.max_backoff_s}"
            )

    def backoff(self, recent: int) -> float:
        """Seconds to wait before a restart that follows ``recent`` restarts in the window."""
        return float(min(self.max_backoff_s, self.first_backoff_s * 2**recent))


def how_it_ended(returncode: int | None) -> tuple[int | None, str | None]:
    """(exit code, signal name) of a finished process: a negative returncode is a signal."""
    if returncode is None or returncode >= 0:
        return returncode, None
    try:
        return None, signal.Signals(-returncode).name
    except ValueError:
        return None, f"signal {-returncode}"


def describe_exit(record: ServiceRestart) -> str:
    """``killed by SIGKILL`` or ``exited with code 1``."""
    if record.signal:
        return f"killed by {record.signal}"
    return f"exited with code {record.exit_code}"


@dataclass
class _Watched(Generic[P]):
    """One label's current process and where its restart stands."""

    proc: P
    # Monotonic times of this label's restarts (pruned to the window when counted).
    restarted_at: list[float] = field(default_factory=list)
    # The exit being handled: the restart record, and when the restart is due.
    pending: ServiceRestart | None = None
    due: float = 0.0
    seen_at: float = 0.0  # when the exit was seen (downtime counts from here)
    # Restarted, not yet healthy: the record whose downtime is still open.
    recovering: ServiceRestart | None = None


class Supervisor(Generic[P]):
    """Restarts processes that exit, within a budget per process; records every restart.

    start(label) -> a new process for that label (the same command, port and log);
    healthy(process) -> whether it serves now (it should answer within about a second);
    report(line) prints the one line each restart gets once the process serves again.
    """

    def __init__(
        self,
        start: Callable[[str], P],
        healthy: Callable[[P], bool],
        policy: RestartPolicy | None = None,
        report: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
        t0: float | None = None,
    ) -> None:
        self.policy = policy or RestartPolicy()
        self._start = start
        self._healthy = healthy
        self._report = report
        self._clock = clock
        self._t0 = clock() if t0 is None else t0
        self._watched: dict[str, _Watched[P]] = {}
        self._lock = threading.Lock()
        self.restarts: list[ServiceRestart] = []
        # Why the supervisor gave up ('' while it has not): the run must end.
        self.gave_up = ""
        self.last_words: list[str] = []  # the log tail of the process it gave up on
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ticking = threading.Lock()  # held while a round runs on the thread

    # ---------------------------------------------------------------- processes

    def add(self, proc: P) -> None:
        """Watch a process under its label (``proc.name``)."""
        with self._lock:
            self._watched[proc.name] = _Watched(proc)

    @property
    def processes(self) -> list[P]:
        """The current process of every label, in the order they were added."""
        with self._lock:
            return [w.proc for w in self._watched.values()]

    # ------------------------------------------------------------------ checks

    def tick(self) -> None:
        """One round: notice exits, restart what is due, note who serves again."""
        with self._lock:
            labels = list(self._watched)
        for label in labels:
            if self.gave_up:
                return
            self._check(label, self._watched[label])

    def _check(self, label: str, w: _Watched[P]) -> None:
        now = self._clock()
        if w.pending is not None:
            if now >= w.due:
                self._restart(label, w, now)
            return
        if not w.proc.alive():
            self._exited(label, w, now)
            return
        if w.recovering is not None and self._healthy(w.proc):
            record, w.recovering = w.recovering, None
            record.downtime_s = round(self._clock() - w.seen_at, 3)
            self._report(self.line(record, len(self._recent(w, now))))

    def _recent(self, w: _Watched[P], now: float) -> list[float]:
        w.restarted_at = [t for t in w.restarted_at if t > now - self.policy.window_s]
        return w.restarted_at

    def _exited(self, label: str, w: _Watched[P], now: float) -> None:
        code, sig = how_it_ended(w.proc.exit_status())
        record = ServiceRestart(
            service=label,
            t_s=round(now - self._t0, 3),
            exit_code=code,
            signal=sig,
            pid=w.proc.pid,
            log_tail=w.proc.log_tail(TAIL_LINES).splitlines(),
        )
        # A process that died before it served again: its earlier restart stays
        # without a downtime, and this exit starts a new one.
        w.recovering = None
        recent = self._recent(w, now)
        policy = self.policy
        if len(recent) >= policy.max_restarts:
            self.gave_up = (
                f"{label} {describe_exit(record)} at {record.t_s:.1f}s and its restart budget "
                f"is spent ({len(recent)} restart(s) in the last {policy.window_s:g}s, "
                f"max_restarts {policy.max_restarts})"
            )
            self.last_words = record.log_tail
            log.error("%s; giving up", self.gave_up)
            return
        w.pending, w.seen_at = record, now
        w.due = now + policy.backoff(len(recent))
        log.warning("%s %s; restarting it in %.1fs", label, describe_exit(record), w.due - now)

    def _restart(self, label: str, w: _Watched[P], now: float) -> None:
        record, w.pending = w.pending, None
        assert record is not None
        try:
            proc = self._start(label)
        except OSError as err:
            self.last_words = record.log_tail
            self.gave_up = f"{label} {describe_exit(record)} and could not be started again: {err}"
            return
        with self._lock:
            w.proc = proc
        w.restarted_at.append(now)
        w.recovering = record
        record.new_pid = proc.pid
        with self._lock:
            self.restarts.append(record)

    def line(self, record: ServiceRestart, recent: int) -> str:
        """The one line a restart gets once its process serves again."""
        return (
            f"restarted {record.service}: {describe_exit(record)} at {record.t_s:.1f}s, "
            f"serving again after {record.downtime_s:.1f}s (restart {recent} of at most "
            f"{self.policy.max_restarts} in {self.policy.window_s:g}s)"
        )

    def records(self) -> list[ServiceRestart]:
        """Every restart so far (downtime None: not serving again yet)."""
        with self._lock:
            return list(self.restarts)

    # ------------------------------------------------------------------ thread

    def start(self, interval_s: float = 0.25) -> None:
        """Run ``tick`` every interval_s on a daemon thread until ``stop``.

        The thread outlives ``stop`` (it idles until the launcher exits): a
        service's death signal (PR_SET_PDEATHSIG, ``commands.procs``) fires when
        the *thread* that started it ends, so the processes it restarted would
        get SIGTERM the moment it returned.
        """

        def loop() -> None:
            while True:
                time.sleep(interval_s)
                if self._stop.is_set() or self.gave_up:
                    continue
                try:
                    with self._ticking:
                        if not self._stop.is_set():
                            self.tick()
                except Exception as err:  # a bug here must end the run, not hide
                    log.exception("supervisor failed")
                    self.gave_up = f"the launcher's supervisor failed: {err}"

        self._thread = threading.Thread(target=loop, name="supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop restarting (before the launcher stops the processes itself); waits for a
        round under way, so no process is started after this returns."""
        self._stop.set()
        with self._ticking:
            pass


class StepCarry:
    """A count each process restarts from zero (an actor's env steps), summed over
    its lives: when a label's count falls, the last one seen is carried over."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._carried: dict[str, int] = {}

    def total(self, counts: Sequence[tuple[str, int | None]]) -> int:
        """The run's total from each label's count now (None: not polled this time)."""
        for label, count in counts:
            if count is None:
                continue
            last = self._last.get(label, 0)
            if count < last:  # a new process counting from zero
                self._carried[label] = self._carried.get(label, 0) + last
            self._last[label] = count
        return sum(self._last.values()) + sum(self._carried.values())
