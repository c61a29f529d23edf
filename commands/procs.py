"""Service processes: start `actorq serve NAME`, wait for health, stop cleanly.

Used by the launcher and by the tests, so both run exactly the same thing.
Children set PR_SET_PDEATHSIG(SIGTERM) on Linux as their first act (the
parent's pid travels in ACTORQ_PARENT_PID): if the launcher dies without
cleaning up (SIGKILL), its services still go away, no orphans. The child does
it itself rather than in a preexec_fn: a preexec_fn forces a plain fork() in
a process that has gRPC loaded, and gRPC's fork handlers can abort the child
before exec ("epoll_wait error: Bad file descriptor"); without one, Python
spawns with vfork/posix_spawn and no fork handler runs.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from actorq.config import ConfigError
from actorq.rpc import wait_healthy

_PR_SET_PDEATHSIG = 1
# The CPUs a service process runs on (its affinity), when the launcher pins them.
CPUS_ENV = "ACTORQ_CPUS"


_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it).

    Never the same port twice in one process: ports handed out but not yet bound
    by whoever asked (a service still starting) look free to the OS again.
    """
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


PARENT_PID_ENV = "ACTORQ_PARENT_PID"


def cpu_list(cpus: Iterable[int]) -> str:
    """CPUs as ACTORQ_CPUS spells them: "0" or "2,3"."""
    return ",".join(str(c) for c in sorted(cpus))


def pin_from_env() -> str:
    """In a service process, as its first act (one thread yet, so every later thread
    inherits it): run on the CPUs ``ACTORQ_CPUS`` lists ("0" or "2,3"). Returns what was
    done, '' when the variable is unset; ConfigError when it names no usable CPU."""
    value = os.environ.get(CPUS_ENV, "").strip()
    if not value:
        return ""
    try:
        cpus = {int(c) for c in value.split(",")}
        os.sched_setaffinity(0, cpus)
    except (ValueError, OSError) as err:
        raise ConfigError(
            f"{CPUS_ENV}={value!r}: not a comma-separated list of CPUs this process may use "
            f"({err}); unset it to run on every CPU"
        ) from None
    except AttributeError:  # not Linux: no affinity to set
        return ""
    return f"pinned to CPU {cpu_list(cpus)} ({CPUS_ENV})"


def pin_all_threads(cpus: Sequence[int]) -> None:
    """This process's threads, each of them (Linux sets affinity per thread), onto cpus;
    threads started later inherit it from the one that starts them."""
    for task in Path("/proc/self/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), set(cpus))
        except (OSError, ValueError):  # a thread that ended meanwhile
            continue


def wait_for(what: str, check: Callable[[], object], timeout_s: float = 120.0) -> None:
    """Poll check until it is true; TimeoutError naming what did not happen."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.2)


def die_with_parent_from_env() -> None:
    """In a service process: get SIGTERM when the launcher that started it dies.

    Exits at once if that parent is already gone (it died before the death
    signal was armed).
    """
    expected = os.environ.get(PARENT_PID_ENV)
    if not expected:
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux/glibc: the launcher's own cleanup still applies
        return
    if os.getppid() != int(expected):
        raise SystemExit("actorq: the process that started this service is gone")


@dataclass
class ServiceProcess:
    """One running `actorq serve` process and where it logs."""

    name: str
    address: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def exit_status(self) -> int | None:
        """The exit code, -N when signal N ended it, None while it runs."""
        return self.proc.poll()

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait up to timeout, then SIGKILL. Returns the exit code."""
        self.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return int(self.proc.returncode)


def start(
    name: str,
    args: Sequence[str],
    log_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    label: str | None = None,
    cwd: Path | None = None,
) -> ServiceProcess:
    """Start `python -m commands.cli serve NAME --host H --port P ARGS` (no health wait)."""
    port = port or free_port(host)
    label = label or name
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{label}.log"
    full_env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        PARENT_PID_ENV: str(os.getpid()),
        **(env or {}),
    }
    cmd = [
        sys.executable,
        "-m",
        "commands.cli",
        "serve",
        name,
        "--host",
        host,
        "--port",
        str(port),
        *args,
    ]
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            # A process group of its own: a terminal's Ctrl-C reaches the launcher
            # alone, which stops the services in order (actors first, so they flush
            # while replay is up) instead of all at once.
            process_group=0,
        )
    return ServiceProcess(label, f"{host}:{port}", port, proc, log_path)


def wait_all_healthy(services: Sequence[ServiceProcess], timeout_s: float) -> None:
    """Wait for every service's health check; a process that exits fails fast with its log."""
    deadline = time.monotonic() + timeout_s
    for svc in services:
        while True:
            if not svc.alive():
                raise RuntimeError(
                    f"{svc.name} exited with code {svc.proc.returncode} during startup:\n{svc.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(
                    f"{svc.name} not healthy after {timeout_s:.0f}s:\n{svc.log_tail()}"
                )
            try:
                wait_healthy(svc.address, min(2.0, remaining))
                break
            except TimeoutError:
                continue


def start_in_turn(
    first: Callable[[], ServiceProcess],
    rest: Sequence[Callable[[], ServiceProcess]],
    slots: int,
    timeout_s: float,
) -> None:
    """Start ``first`` (the slowest to start), then ``rest`` in order, at most ``slots`` of
    them starting at once until ``first`` is healthy, and every one left at once after.

    Start-up is CPU-bound where processes outnumber CPUs: started all at once they share
    every CPU and the slowest finishes last; given a CPU of its own (``slots``: the CPUs
    less one) it finishes as early as it can while the others start on the rest. Spawns
    run on the calling thread (a service's death signal follows the thread that started
    it); threads only wait on health. RuntimeError as ``wait_all_healthy``; the caller
    waits for the last ones with ``wait_all_healthy``.
    """
    healthy: queue.Queue[tuple[ServiceProcess, RuntimeError | None]] = queue.Queue()
    deadline = time.monotonic() + timeout_s

    def launch(spawn: Callable[[], ServiceProcess]) -> ServiceProcess:
        svc = spawn()

        def wait() -> None:
            try:
                wait_all_healthy([svc], max(0.0, deadline - time.monotonic()))
            except RuntimeError as err:
                healthy.put((svc, err))
                return
            except Exception as err:  # anything else too: the starter waits on this answer
                healthy.put((svc, RuntimeError(f"{svc.name}: waiting for health failed: {err}")))
                return
            healthy.put((svc, None))

        threading.Thread(target=wait, name=f"start-{svc.name}", daemon=True).start()
        return svc

    head, todo, starting, head_up = launch(first), list(rest), 0, False
    while todo:
        while todo and (head_up or starting < max(1, slots)):
            launch(todo.pop(0))
            starting += 1
        if not todo:
            return
        svc, err = healthy.get()
        if err is not None:
            raise err
        if svc is head:
            head_up = True
        else:
            starting -= 1


def serving(svc: ServiceProcess, timeout_s: float = 1.0) -> bool:
    """Whether svc answers its health check with SERVING within about timeout_s."""
    try:
        wait_healthy(svc.address, timeout_s)
    except TimeoutError:
        return False
    return True


def stop_all(services: Sequence[ServiceProcess], timeout: float = 20.0) -> None:
    """SIGTERM everything at once, then wait; stragglers get SIGKILL."""
    for svc in services:
        svc.terminate()
    deadline = time.monotonic() + timeout
    for svc in services:
        try:
            svc.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            svc.proc.kill()
            svc.proc.wait()
