"""Fixtures that start real service processes on free ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from commands import procs
from commands.procs import ServiceProcess, free_port

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["ROOT", "ServiceProcess", "free_port", "start_service"]


def start_service(
    name: str,
    args: Sequence[str],
    tmp_path: Path,
    env: dict[str, str] | None = None,
    port: int | None = None,
    health_timeout: float = 60.0,
) -> ServiceProcess:
    """Start `actorq serve NAME --host 127.0.0.1 --port P ARGS...` and wait for SERVING."""
    port = port or free_port()
    svc = procs.start(name, args, tmp_path, port=port, env=env, label=f"{name}-{port}", cwd=ROOT)
    try:
        procs.wait_all_healthy([svc], health_timeout)
    except RuntimeError:
        svc.stop()
        raise
    return svc


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Call with (name, args, env=None) to start a service; all are stopped afterwards."""
    started: list[ServiceProcess] = []

    def factory(
        name: str, args: Sequence[str] = (), env: dict[str, str] | None = None, **kw: object
    ) -> ServiceProcess:
        svc = start_service(name, args, tmp_path, env, **kw)  # type: ignore[arg-type]
        started.append(svc)
        return svc

    yield factory
    for svc in reversed(started):
        svc.stop()
