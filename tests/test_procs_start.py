"""procs.start_in_turn: the slowest process first, the others in turn beside it, every one
left at once when it serves (real processes serving gRPC health)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from commands import procs

ROOT = Path(__file__).resolve().parents[1]

# A process that serves gRPC health on PORT after DELAY seconds, until killed.
SERVER = """
import sys, time
from actorq.rpc import add_health_and_reflection, bind, make_server
time.sleep(float(sys.argv[2]))
server = make_server(max_workers=2)
add_health_and_reflection(server, ["probe"])
bind(server, "127.0.0.1", int(sys.argv[1]))
server.start()
time.sleep(120)
"""


@pytest.fixture
def spawner(tmp_path: Path) -> Iterator[Callable[..., Callable[[], procs.ServiceProcess]]]:
    """spawner(name, delay_s, on_spawn) -> a spawn function; every process killed at the end."""
    started: list[procs.ServiceProcess] = []

    def make(
        name: str, delay_s: float, on_spawn: Callable[[str], None]
    ) -> Callable[[], procs.ServiceProcess]:
        def spawn() -> procs.ServiceProcess:
            on_spawn(name)
            port, log = procs.free_port(), tmp_path / f"{name}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-c", SERVER, str(port), str(delay_s)],
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            svc = procs.ServiceProcess(name, f"127.0.0.1:{port}", port, proc, log)
            started.append(svc)
            return svc

        return spawn

    yield make
    for svc in started:
        svc.proc.kill()
        svc.proc.wait()


def test_one_slot_starts_the_next_only_when_the_one_before_serves(
    spawner: Callable[..., Callable[[], procs.ServiceProcess]],
) -> None:
    spawned: dict[str, procs.ServiceProcess] = {}
    # When each spawns: which of the others already serve.
    serving_at_spawn: dict[str, set[str]] = {}

    def note(name: str) -> None:
        serving_at_spawn[name] = {n for n, s in spawned.items() if procs.serving(s, 0.05)}

    def keep(spawn: Callable[[], procs.ServiceProcess]) -> Callable[[], procs.ServiceProcess]:
        def wrapped() -> procs.ServiceProcess:
            svc = spawn()
            spawned[svc.name] = svc
            return svc

        return wrapped

    head = keep(spawner("head", 60.0, note))  # never serves within the test
    rest = [keep(spawner(n, 0.0, note)) for n in ("a", "b", "c")]
    procs.start_in_turn(head, rest, slots=1, timeout_s=60)
    procs.wait_all_healthy([spawned["c"]], 60)
    assert serving_at_spawn == {"head": set(), "a": set(), "b": {"a"}, "c": {"a", "b"}}


def test_every_one_left_starts_at_once_when_the_first_serves(
    spawner: Callable[..., Callable[[], procs.ServiceProcess]],
) -> None:
    order: list[str] = []
    head = spawner("head", 0.0, order.append)
    # Each takes 60 s to serve: started in turn, "b" would wait for "a" past the timeout.
    rest = [spawner(n, 60.0, order.append) for n in ("a", "b", "c")]
    procs.start_in_turn(head, rest, slots=1, timeout_s=20)
    assert order == ["head", "a", "b", "c"]


def test_a_process_that_exits_while_starting_fails_the_start_with_its_name(
    spawner: Callable[..., Callable[[], procs.ServiceProcess]],
) -> None:
    def broken() -> procs.ServiceProcess:
        svc = spawner("broken", 0.0, lambda _: None)()
        svc.proc.kill()
        svc.proc.wait()
        return svc

    head = spawner("head", 60.0, lambda _: None)
    with pytest.raises(RuntimeError, match="broken exited"):
        procs.start_in_turn(head, [broken, spawner("after", 0.0, lambda _: None)], 1, 60)
