"""`actorq bench faults`: `actorq train` reaches its target while a service is killed -9.

For each replay store (``--store``, repeatable: memory or a Redis URL) and each
service (``--service``, default all four) it runs one CartPole DQN training to
``--target-return`` and kills that service's process with SIGKILL mid-run: once
a model is served (the learner: once its first checkpoint is written; it
checkpoints every 2 s here). The launcher's supervisor must restart it and the
run must still reach its target. With the replay killed it also checks that
no acknowledged transition was lost: what actor-0 had been told replay
committed right before the kill, against what the restarted replay counts for
it (a memory replay reloads its journal in the run directory; a Redis one
finds its table in Redis). Each run uses a table of its own in Redis, deleted
afterwards.

    actorq bench faults --store memory --store redis://127.0.0.1:6390/0

Prints a line per run and a table; exits 1 if any run failed. Not part of
``make test`` (8 trainings: 5-15 minutes); ``tests/test_faults.py`` kills all
four services in one short run instead.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from actorq.clients import ActorClient, ReplayClient
from actorq.rpc import channel, wait_healthy
from commands import procs
from commands.bench.replay import _drop_table
from services.replay.store import is_redis_url, redact_url

SERVICES = ("actor-0", "quantizer", "learner", "replay")
ROOT = Path(__file__).resolve().parents[2]


def service_pids(config: Path) -> dict[str, tuple[int, int]]:
    """label -> (pid, port) of the live service processes of the run whose config.yaml is
    ``config``, read from /proc (Linux). A service's own short-lived fork carries its
    command line too; it is told apart by its parent, the service."""
    found: dict[str, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if str(config) not in argv or "serve" not in argv or stat[0] == "Z":
            continue
        name = argv[argv.index("serve") + 1]
        if name == "actor":
            name = f"actor-{argv[argv.index('--actor-index') + 1]}"
        if name in found and int(stat[1]) == found[name][0]:
            continue  # the service's fork: keep the service
        found[name] = (int(entry.name), int(argv[argv.index("--port") + 1]))
    return found


def token_env(pid: int) -> dict[str, str]:
    """The token variables the launcher gave a service process (the run's token file)."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(v.split("=", 1) for v in environ if v.startswith("ACTORQ_TOKEN"))


def last_metrics(out: Path) -> dict[str, Any]:
    """The run's latest metrics.jsonl row ({} before the first)."""
    path = out / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1]) if lines else {}


@dataclass
class FaultRun:
    """One training with one service killed."""

    store: str
    service: str
    exit_code: int | None = None
    stop_reason: str = ""
    reached_target: bool = False
    time_to_target_s: float | None = None
    killed_at_s: float | None = None  # seconds after the launcher started
    restarts: list[dict[str, Any]] = field(default_factory=list)
    # Replay killed: actor-0's acknowledged count before, replay's count after.
    acked_before: int | None = None
    kept_after: int | None = None
    error: str = ""

    @property
    def restart(self) -> dict[str, Any] | None:
        """The restart record of the killed service, if the summary has one."""
        return next((r for r in self.restarts if r["service"] == self.service), None)

    @property
    def lost(self) -> int | None:
        if self.acked_before is None or self.kept_after is None:
            return None
        return max(0, self.acked_before - self.kept_after)

    @property
    def passed(self) -> bool:
        r = self.restart
        return (
            not self.error
            and self.exit_code == 0
            and self.reached_target
            and r is not None
            and r["downtime_s"] is not None
            and not self.lost
        )


def kill_mid_run(out: Path, fault: FaultRun, t0: float, timeout_s: float) -> None:
    """Wait for a served model (and a checkpoint, for the learner), then SIGKILL the service."""
    config = out / "config.yaml"
    procs.wait_for("the services", lambda: fault.service in service_pids(config), timeout_s)
    procs.wait_for(
        "a served model", lambda: (last_metrics(out).get("model_version") or 0) > 0, timeout_s
    )
    if fault.service == "learner":
        procs.wait_for("a checkpoint", lambda: any((out / "checkpoints").glob("*")), timeout_s)
    pids = service_pids(config)
    env = {**os.environ, **token_env(pids["replay"][0])}
    replay_address = f"127.0.0.1:{pids['replay'][1]}"
    check_loss = fault.service == "replay"
    if check_loss:
        with channel(f"127.0.0.1:{pids['actor-0'][1]}", env=env) as ch:
            before = ActorClient(ch).status()
        fault.acked_before = int(before.transitions_sent)
    os.kill(pids[fault.service][0], signal.SIGKILL)
    fault.killed_at_s = round(time.monotonic() - t0, 1)
    if check_loss:
        wait_healthy(replay_address, timeout_s)
        with channel(replay_address, env=env) as ch:
            fault.kept_after = int(ReplayClient(ch).stats().inserted_by_actor[before.actor_id])


def run_one(fault: FaultRun, args: argparse.Namespace, work: Path) -> FaultRun:
    """One ``actorq train`` with fault.service killed; fills in fault."""
    out = work / f"{'redis' if is_redis_url(fault.store) else 'memory'}-{fault.service}"
    table = f"faults-{uuid.uuid4().hex[:8]}"
    overlay = work / f"{table}.yaml"
    # A table of its own in Redis; checkpoints often, so a killed learner has one to resume.
    overlay.write_text(f"replay:\n  table: {table}\nlearner:\n  checkpoint_every_s: 2\n")
    cmd = [sys.executable, "-m", "commands.cli", "train", "--env", "CartPole-v1", "--quiet"]
    cmd += ["--actors", "2", "--target-return", str(args.target_return), "--no-carbon"]
    cmd += ["--max-env-steps", str(args.max_env_steps), "--seed", str(args.seed)]
    cmd += ["--replay-store", fault.store, "--config", str(overlay), "--out", str(out)]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        kill_mid_run(out, fault, t0, args.timeout_s)
        _, stderr = proc.communicate(timeout=args.timeout_s)
    except (TimeoutError, subprocess.TimeoutExpired, OSError, KeyError) as err:
        fault.error = f"{type(err).__name__}: {err}"
        stderr = ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if is_redis_url(fault.store):
            _drop_table(fault.store, table)
    fault.exit_code = proc.returncode
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError) as err:
        fault.error = fault.error or f"no summary.json ({err}); stderr: {stderr[-500:]}"
        return fault
    fault.stop_reason = summary["stop_reason"]
    fault.reached_target = bool(summary["reached_target"])
    fault.time_to_target_s = summary["time_to_target_s"]
    fault.restarts = summary.get("restarts", [])
    return fault


def line(f: FaultRun) -> str:
    """One run's result in a sentence."""
    r = f.restart
    down = (
        f"back after {r['downtime_s']:.1f} s" if r and r["downtime_s"] is not None else "not back"
    )
    lost = "" if f.lost is None else f", {f.lost} of {f.acked_before} acknowledged lost"
    target = f"target in {f.time_to_target_s:.0f} s" if f.reached_target else f.stop_reason
    return (
        f"{redact_url(f.store)}, {f.service} killed at {f.killed_at_s} s: {down}; {target}"
        f"{lost}; exit {f.exit_code}{'; ' + f.error if f.error else ''}: "
        f"{'ok' if f.passed else 'FAILED'}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actorq bench faults", description=__doc__)
    parser.add_argument(
        "--store", action="append", help="memory or redis://HOST:PORT/DB (default: memory)"
    )
    parser.add_argument("--service", action="append", choices=SERVICES, help="(default: all)")
    parser.add_argument("--target-return", type=float, default=475.0)
    parser.add_argument("--max-env-steps", type=int, default=150_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=600.0, help="per run")
    parser.add_argument("--json", type=Path, help="write every result here")
    args = parser.parse_args(list(argv or []))
    runs = []
    with tempfile.TemporaryDirectory(prefix="actorq-faults-") as tmp:
        for store in args.store or ["memory"]:
            for service in args.service or SERVICES:
                fault = run_one(FaultRun(store, service), args, Path(tmp))
                runs.append(fault)
                print(line(fault), flush=True)
    if args.json:
        args.json.write_text(
            json.dumps([{**asdict(f), "passed": f.passed, "lost": f.lost} for f in runs], indent=2)
        )
    return 0 if all(f.passed for f in runs) else 1
