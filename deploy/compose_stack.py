"""The compose project `make compose-check` drives, and what it watches: Docker and
compose calls, a poller of the learner's and actors' status and of actors' logs, and the
tally of acknowledged transitions against Redis (deploy/compose_check.py runs the steps)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from actorq.clients import ActorClient, LearnerClient
from actorq.rpc import channel

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "actorqcheck"
IMAGES = [
    f"actorq-{t}:0.1.0" for t in ("redis", "replay", "quantizer", "actor", "coordinator", "learner")
]
ACTOR_PORT, LEARNER_PORT = 50054, 50053
# What an actor logs when it stops (services/actor/runner.py, ActorRunner.stop).
STOPPED = re.compile(r"stopped after \d+ env steps, \d+ episodes; (\d+) transitions sent")


class CheckFailed(RuntimeError):
    """A step whose outcome makes the rest meaningless."""


@dataclass
class Generation:
    """One process lifetime of an actor container, as the poller saw it."""

    container: str
    actor_id: str
    started_at: str
    max_sent: int = 0
    killed: bool = False


@dataclass
class Snapshot:
    """The poller's latest view of the learner."""

    t_s: float = 0.0
    state: str = ""
    active_actors: int = -1
    learner_steps: int = 0
    checkpoint_step: int = 0
    resumed_from_step: int = 0
    published_version: int = 0


@dataclass
class Tally:
    """One actor id's acknowledged transitions against the count Redis holds for it."""

    acked: int = 0
    # False when a killed process's count is in acked: polled, so a lower bound.
    exact: bool = True
    processes: int = 0
    # Processes whose count is known: logged when they stopped, or polled before a kill.
    accounted: int = 0
    in_redis: int = 0

    @property
    def lost(self) -> int:
        return max(0, self.acked - self.in_redis)


def tally(
    hostnames: Mapping[str, str],
    generations: Sequence[Generation],
    logs: Mapping[str, str],
    held: Mapping[str, int],
) -> dict[str, Tally]:
    """Per actor id: what its processes counted as acknowledged, against Redis.

    hostnames: actor container id -> host name; generations: the processes the poller
    saw; logs: container id -> its whole log (every process's); held: Redis's per-actor
    insert counts. A process that stopped logged its own transitions_sent; one the check
    killed counts with its transitions_sent as last polled, just before the kill.
    """
    out: dict[str, Tally] = {}
    for container, hostname in hostnames.items():
        mine = [g for g in generations if g.container == container]
        stops = [int(n) for n in STOPPED.findall(logs.get(container, ""))]
        killed = [g.max_sent for g in mine if g.killed]
        entry = out.setdefault(mine[0].actor_id if mine else f"actor-{hostname}", Tally())
        entry.acked += sum(stops) + sum(killed)
        # A process the poller never reached still logs its count when it stops.
        entry.processes += max(len(mine), len(stops) + len(killed))
        entry.accounted += len(stops) + len(killed)
        entry.exact = entry.exact and not killed
    for actor_id, entry in out.items():
        entry.in_redis = held.get(actor_id, 0)
    return out


# --------------------------------------------------------------------- docker, compose


def run(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output; CheckFailed with its stderr when it fails."""
    result = subprocess.run(
        list(cmd), capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT
    )
    if check and result.returncode != 0:
        raise CheckFailed(f"{shlex.join(cmd)} exited {result.returncode}: {result.stderr[-2000:]}")
    return result


def compose_command() -> list[str]:
    """`docker compose` (v2) where the plugin exists, else `docker-compose` (v1.29)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise CheckFailed("neither `docker compose` nor `docker-compose` is installed")


class Stack:
    """The compose project under test and the Docker calls the check makes on it."""

    def __init__(self, compose: list[str], secrets_dir: Path, actors: int) -> None:
        self.compose_cmd = [*compose, "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml")]
        # The check reads status and stats with the reader's token, as the coordinator does.
        self.client_env = {"ACTORQ_TOKEN_READER_FILE": str(secrets_dir / "token-reader")}
        self.env = {
            **os.environ,
            "ACTORQ_SECRETS_DIR": str(secrets_dir),
            "ACTORQ_ACTORS": str(actors),
        }
        if list((ROOT / ".wheelhouse").glob("torch-*.whl")):
            self.env["ACTORQ_TORCH_WHEELHOUSE"] = ".wheelhouse"

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        return run([*self.compose_cmd, *args], env=self.env, timeout=timeout, check=check).stdout

    def ids(self, service: str | None = None, all: bool = True) -> list[str]:
        cmd = [
            "docker",
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            f"label=com.docker.compose.project={PROJECT}",
        ]
        if service:
            cmd += ["--filter", f"label=com.docker.compose.service={service}"]
        if all:
            cmd.append("-a")
        return run(cmd).stdout.split()

    def inspect(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        result = run(["docker", "inspect", *ids], check=False)
        return json.loads(result.stdout or "[]")

    def one(self, service: str) -> dict[str, Any]:
        found = self.inspect(self.ids(service))
        if len(found) != 1:
            raise CheckFailed(f"expected one {service} container, found {len(found)}")
        return found[0]


def ip(container: dict[str, Any]) -> str:
    nets = container["NetworkSettings"]["Networks"].values()
    return next((n["IPAddress"] for n in nets if n.get("IPAddress")), "")


def number(container: dict[str, Any]) -> int:
    return int(container["Config"]["Labels"].get("com.docker.compose.container-number", "0"))


def short(container_id: str) -> str:
    return container_id[:12]


# ----------------------------------------------------------------------------- poller


class Poller(threading.Thread):
    """Once a second: the learner's status and every running actor's transitions_sent,
    per process lifetime (a container's StartedAt); follows every actor's log to a file
    so the count an actor logs when it stops survives compose removing the container."""

    def __init__(self, stack: Stack, logs: Path, t0: float) -> None:
        super().__init__(daemon=True, name="poller")
        self.stack, self.logs, self.t0 = stack, logs, t0
        self.lock = threading.Lock()
        # One round at a time: the check also polls, right before a kill.
        self._round = threading.Lock()
        self.learner = Snapshot()
        self.generations: dict[tuple[str, str], Generation] = {}
        self.followers: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
        self.hostnames: dict[str, str] = {}
        self.stop_event = threading.Event()
        self._channels: dict[str, grpc.Channel] = {}

    def run(self) -> None:
        while not self.stop_event.wait(1.0):
            try:
                self.poll()
            except (CheckFailed, subprocess.SubprocessError, json.JSONDecodeError, KeyError):
                continue  # a container went away between two calls: next round

    def _channel(self, address: str) -> grpc.Channel:
        if address not in self._channels:
            self._channels[address] = channel(address, env=self.stack.client_env)
        return self._channels[address]

    def poll(self, only: str | None = None) -> None:
        """One round; ``only``: just that actor container (right before it is killed)."""
        with self._round:
            self._poll(only)

    def _poll(self, only: str | None) -> None:
        actors = self.stack.inspect([only] if only else self.stack.ids("actor"))
        for c in actors:
            self._follow(c)
            if not c["State"]["Running"]:
                continue
            try:
                st = ActorClient(self._channel(f"{ip(c)}:{ACTOR_PORT}")).status(timeout=2.0)
            except grpc.RpcError:
                continue
            key = (c["Id"], c["State"]["StartedAt"])
            with self.lock:
                gen = self.generations.setdefault(key, Generation(c["Id"], st.actor_id, key[1]))
                gen.max_sent = max(gen.max_sent, st.transitions_sent)
        if only:
            return
        learner = self.stack.inspect(self.stack.ids("learner"))
        if learner and learner[0]["State"]["Running"]:
            address = f"{ip(learner[0])}:{LEARNER_PORT}"
            try:
                ls = LearnerClient(self._channel(address)).status(timeout=2.0)
            except grpc.RpcError:
                return
            with self.lock:
                self.learner = Snapshot(
                    time.monotonic() - self.t0,
                    ls.state,
                    ls.active_actors,
                    ls.learner_steps,
                    ls.checkpoint_step,
                    ls.resumed_from_step,
                    ls.published_version,
                )

    def _follow(self, c: dict[str, Any]) -> None:
        """`docker logs -f` into a file, again after each start (it replays the history)."""
        started = c["State"]["StartedAt"]
        self.hostnames[c["Id"]] = c["Config"]["Hostname"]
        current = self.followers.get(c["Id"])
        if current and (current[0] == started or current[1].poll() is None):
            return
        if current is None or c["State"]["Running"]:
            out = open(self.logs / f"actor-{short(c['Id'])}.log", "wb")  # noqa: SIM115
            proc = subprocess.Popen(
                ["docker", "logs", "-f", c["Id"]], stdout=out, stderr=subprocess.STDOUT
            )
            self.followers[c["Id"]] = (started, proc)

    def close(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)
        for _started, proc in self.followers.values():
            if proc.poll() is None:
                proc.terminate()
        for ch in self._channels.values():
            ch.close()
