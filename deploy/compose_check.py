"""`make compose-check`: run docker-compose.yml for real and try to break it.

Builds the images, starts the stack with 2 actors, then, while the run trains:

  `docker kill`s the replay (and starts it again), crashes the replay's process
  (its restart policy brings it back), scales actors 2 -> 4, `docker kill`s one
  actor, scales 4 -> 1, `docker kill`s the learner after its first checkpoint
  (and starts it again),

waits for the coordinator, runs `up --exit-code-from coordinator` once more on the
trained stack, and checks:

- the run reaches its target (summary.json, report.md in the runs volume);
- the learner's active-actor count follows the scaling (2, 4, 3, 1), and is right
  again after the learner restarts;
- the learner resumed from its checkpoint;
- no acknowledged transition is lost: per actor, what its processes counted as
  acknowledged (ActorService.GetStatus transitions_sent; the count it logs when it
  stops) against the per-actor insert count Redis holds, read with redis-cli;
- no container runs as root; the Redis password and the tokens are in no `docker inspect` output,
  no `docker history --no-trunc` of the images, no container log.

Prints a table, writes it as JSON to runs/compose-check.json, exits 1 on any failure
and removes its containers, networks and volumes (images stay, for the layer cache).
It talks to the containers from this machine over Docker's bridge network (Linux).

`docker kill` is a manual stop for Docker: a restart policy does not bring such a
container back (`docker start` or `compose up -d` does); a container whose process
dies (the crash below) is restarted by its policy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from compose_audit import Audit, Row, describe, table
from compose_stack import (
    IMAGES,
    PROJECT,
    ROOT,
    CheckFailed,
    Poller,
    Snapshot,
    Stack,
    compose_command,
    number,
    run,
)

RUN_DIR = "/runs/cartpole-dqn-int8"
# The per-role tokens deploy/compose-secrets.sh writes (token-ROLE).
ROLES = ("learner", "actor", "reader")
# Kills the service process under the container's init (compose `init: true`): a crash
# as Docker sees it, so the restart policy applies.
CRASH = (
    "import os, signal\n"
    "for pid in open('/proc/1/task/1/children').read().split():\n"
    "    os.kill(int(pid), signal.SIGKILL)\n"
)


# ------------------------------------------------------------------------------ check


class Check(Audit):
    """The steps, in order, each adding rows to the table."""

    def __init__(self, stack: Stack, work: Path, password: str) -> None:
        self.stack, self.work, self.password = stack, work, password
        secrets_dir = Path(stack.env["ACTORQ_SECRETS_DIR"])
        self.tokens = [(secrets_dir / f"token-{r}").read_text().strip() for r in ROLES]
        self.t0 = time.monotonic()
        self.rows: list[Row] = []
        self.poller = Poller(stack, work, self.t0)
        self.kills: list[str] = []
        # (unix time, what): the disruptions, to place them before or after the target.
        self.events: list[tuple[float, str]] = []
        self.info: dict[str, Any] = {}

    # -- helpers
    def now(self) -> float:
        return time.monotonic() - self.t0

    def row(self, check: str, expected: str, observed: str, ok: bool) -> bool:
        self.rows.append(Row(check, expected, observed, ok, round(self.now(), 1)))
        mark = "PASS" if ok else "FAIL"
        print(f"[{self.now():7.1f}s] {mark} {check}: {observed} (expected {expected})", flush=True)
        return ok

    def log(self, message: str) -> None:
        print(f"[{self.now():7.1f}s] {message}", flush=True)

    def wait(self, what: Callable[[], bool], timeout: float, every: float = 0.5) -> float | None:
        """Seconds until what() held, or None after timeout."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if what():
                return time.monotonic() - start
            time.sleep(every)
        return None

    def learner(self) -> Snapshot:
        with self.poller.lock:
            return self.poller.learner

    def healthy(self, service: str) -> bool:
        c = self.stack.one(service)
        return bool(
            c["State"]["Running"] and c["State"].get("Health", {}).get("Status") == "healthy"
        )

    def active_actors(self, expected: int, label: str, timeout: float) -> None:
        took = self.wait(lambda: self.learner().active_actors == expected, timeout)
        seen = self.learner().active_actors
        observed = f"{seen}" + (
            f" after {took:.0f} s" if took is not None else f" ({timeout:.0f} s)"
        )
        self.row(f"learner's active actors {label}", str(expected), observed, took is not None)

    # -- steps
    def build(self) -> None:
        start = time.monotonic()
        self.stack.compose("build", timeout=3600)
        sizes = {}
        for image in IMAGES:
            size = run(["docker", "image", "inspect", "-f", "{{.Size}}", image]).stdout
            sizes[image] = int(size)
        self.info["image_bytes"] = sizes
        listing = ", ".join(f"{i.split(':')[0]} {s / 1e9:.2f} GB" for i, s in sizes.items())
        self.row("images build", "6 images", f"{time.monotonic() - start:.0f} s: {listing}", True)
        actor = sizes["actorq-actor:0.1.0"]
        self.row("actor image size", "<= 1 GB", f"{actor / 1e9:.2f} GB", actor <= 1e9)

    def up(self) -> None:
        self.stack.compose("down", "-v", "--remove-orphans", check=False)
        self.stack.compose("up", "-d", timeout=900)
        self.poller.start()
        took = self.wait(lambda: self.learner().state == "training", 300)
        self.row(
            "stack up, learner training",
            "training",
            self.learner().state or "no answer",
            took is not None,
        )
        if took is None:
            raise CheckFailed("the learner never started training")
        self.active_actors(2, "at start (2 actors)", 120)
        self.non_root()

    def non_root(self) -> None:
        """Every running container's processes (as the host sees them) and its USER."""
        found = []
        for c in self.stack.inspect(self.stack.ids(all=False)):
            top = run(["docker", "top", c["Id"], "-eo", "pid,uid,comm"]).stdout.splitlines()[1:]
            uids = {int(line.split()[1]) for line in top if line.strip()}
            user = c["Config"].get("User") or "root"
            found.append((c["Name"].lstrip("/"), user, sorted(uids)))
        root = [
            f"{n} (user {u}, uids {ids})"
            for n, u, ids in found
            if 0 in ids or u in ("", "root", "0")
        ]
        self.info["users"] = found
        self.row(
            "no container runs as root",
            "uid != 0 in every container",
            f"{len(found)} containers, uids {sorted({i for *_x, ids in found for i in ids})}"
            + (f"; root: {root}" if root else ""),
            not root,
        )

    def scale(self, n: int) -> None:
        self.log(f"scale actors to {n}")
        self.events.append((time.time(), f"scale to {n}"))
        self.stack.compose(
            "up", "-d", "--no-deps", "--no-recreate", "--scale", f"actor={n}", "actor"
        )

    def kill(self, container: dict[str, Any]) -> None:
        """`docker kill` it; an actor's count is read just before, as its last word."""
        name = container["Name"].lstrip("/")
        if container["Config"]["Labels"]["com.docker.compose.service"] == "actor":
            self.poller.poll(only=container["Id"])
            with self.poller.lock:
                key = (container["Id"], container["State"]["StartedAt"])
                if key in self.poller.generations:
                    self.poller.generations[key].killed = True
        run(["docker", "kill", container["Id"]])
        self.kills.append(name)
        self.events.append(
            (time.time(), f"kill {container['Config']['Labels']['com.docker.compose.service']}")
        )
        self.log(f"docker kill {name}")

    def stays_down_then_start(self, service: str, container: dict[str, Any]) -> None:
        """A `docker kill`ed container is a manual stop: no restart policy; start it."""
        time.sleep(3)
        c = self.stack.inspect([container["Id"]])[0]
        self.row(
            f"{service} after docker kill",
            "stopped (manual stop)",
            f"{c['State']['Status']}, restarts {c['RestartCount']}",
            not c["State"]["Running"],
        )
        run(["docker", "start", container["Id"]])
        took = self.wait(lambda: self.healthy(service), 180)
        self.row(
            f"{service} back after docker start",
            "healthy",
            f"healthy after {took:.0f} s" if took is not None else "not healthy (180 s)",
            took is not None,
        )

    def scaling_and_actor_kill(self) -> None:
        self.scale(4)
        self.active_actors(4, "after scaling 2 -> 4", 120)
        self.non_root()
        first = min(self.stack.inspect(self.stack.ids("actor", all=False)), key=number)
        self.kill(first)
        self.active_actors(3, "after docker kill of one actor", 90)
        # compose starts the killed actor_1 again and stops and removes 2..4.
        self.scale(1)
        c = self.stack.inspect([first["Id"]])[0]
        self.row(
            "killed actor started again by compose up --scale",
            "running",
            c["State"]["Status"],
            c["State"]["Running"],
        )
        self.active_actors(1, "after scaling 4 -> 1", 120)

    def replay_kill_and_crash(self) -> None:
        replay = self.stack.one("replay")
        self.kill(replay)
        self.stays_down_then_start("replay", replay)
        self.inserts_resume("after replay's docker kill")
        replay = self.stack.one("replay")
        restarts = replay["RestartCount"]
        run(["docker", "exec", replay["Id"], "python", "-c", CRASH])
        self.log("crashed the replay's process (SIGKILL under init)")
        self.events.append((time.time(), "crash replay"))
        took = self.wait(
            lambda: self.stack.one("replay")["RestartCount"] > restarts and self.healthy("replay"),
            180,
        )
        self.row(
            "replay crash: restart policy",
            "restarted, healthy",
            f"restart count {self.stack.one('replay')['RestartCount']}"
            + (f", healthy after {took:.0f} s" if took is not None else ", not healthy"),
            took is not None,
        )
        self.inserts_resume("after replay's crash")

    def inserts_resume(self, label: str) -> None:
        start = sum(self.redis_counts().values())
        took = self.wait(lambda: sum(self.redis_counts().values()) > start, 120, every=2.0)
        self.row(
            f"actors' inserts resume {label}",
            "Redis insert counts grow",
            f"grew after {took:.0f} s" if took is not None else "no growth (120 s)",
            took is not None,
        )

    def learner_kill(self) -> None:
        took = self.wait(lambda: self.learner().checkpoint_step > 0, 240)
        if took is None:
            self.row("learner checkpoint before kill", "> 0", "none in 240 s", False)
            return
        self.poller.poll()  # the checkpoint and step counts as near the kill as can be
        before = self.learner()
        learner = self.stack.one("learner")
        self.kill(learner)
        self.stays_down_then_start("learner", learner)
        took = self.wait(
            lambda: self.learner().t_s > self.now() - 2 and self.learner().resumed_from_step > 0,
            120,
        )
        after = self.learner()
        ok = (
            took is not None
            and before.checkpoint_step <= after.resumed_from_step <= before.learner_steps
        )
        self.row(
            "learner resumed from its checkpoint",
            f"resumed_from_step in [{before.checkpoint_step}, {before.learner_steps}]",
            f"resumed_from_step {after.resumed_from_step}, steps now {after.learner_steps}",
            ok,
        )
        self.info["learner_kill"] = {"before": asdict(before), "after": asdict(after)}
        # A new learner learns the actors from replay's counts again.
        running = len(self.stack.ids("actor", all=False))
        took = self.wait(lambda: self.learner().active_actors == running, 60)
        self.row(
            "learner's active actors after its restart",
            str(running),
            f"{after.active_actors} at first, {self.learner().active_actors}"
            + (f" after {took:.0f} s" if took is not None else " (60 s)"),
            took is not None,
        )

    def coordinator_run(self) -> None:
        """The first run's coordinator, started with the stack: which disruptions came
        before it reached the target (the run goes on after it)."""
        c = self.stack.one("coordinator")
        run(["docker", "wait", c["Id"]], timeout=1200)
        c = self.stack.one("coordinator")
        summary = self.read_run()
        self.info["run_a"] = summary
        s = summary.get("summary") or {}
        started = datetime.fromisoformat(c["State"]["StartedAt"][:26].rstrip("Z")).replace(
            tzinfo=UTC
        )
        target_at = started.timestamp() + (s.get("time_to_target_s") or 1e9)
        before = [what for t, what in self.events if t < target_at]
        after = [what for t, what in self.events if t >= target_at]
        self.info["events_before_target"], self.info["events_after_target"] = before, after
        code = c["State"]["ExitCode"]
        self.row(
            "first run reaches its target",
            "reached, exit 0",
            f"exit {code}, {describe(s)}; before the target: {', '.join(before) or 'nothing'}; "
            f"after: {', '.join(after) or 'nothing'}",
            code == 0 and bool(s.get("reached_target")),
        )

    def read_run(self) -> dict[str, Any]:
        """summary.json and the file list of the run directory, from the runs volume."""
        script = (
            "import json, os, sys\n"
            f"d = {RUN_DIR!r}\n"
            "files = sorted(os.listdir(d))\n"
            "s = json.load(open(os.path.join(d, 'summary.json'))) if 'summary.json' in files else None\n"
            "print(json.dumps({'files': files, 'summary': s}))\n"
        )
        out = run(
            [
                "docker",
                "run",
                "--rm",
                "-v",
                f"{PROJECT}_runs:/runs:ro",
                "--entrypoint",
                "python",
                "actorq-coordinator:0.1.0",
                "-c",
                script,
            ]
        ).stdout
        return json.loads(out)

    def exit_code_from(self) -> None:
        """`up --exit-code-from coordinator` on the trained stack: the user's command."""
        start = time.monotonic()
        result = run(
            [*self.stack.compose_cmd, "up", "--exit-code-from", "coordinator"],
            env=self.stack.env,
            timeout=900,
            check=False,
        )
        (self.work / "up-exit-code-from.log").write_text(result.stdout + result.stderr)
        running = self.stack.ids(all=False)
        run_b = self.read_run()
        self.info["run_b"] = run_b
        s = run_b.get("summary") or {}
        self.row(
            "up --exit-code-from coordinator",
            "exit 0, every container stopped",
            f"exit {result.returncode} after {time.monotonic() - start:.0f} s, "
            f"{len(running)} running",
            result.returncode == 0 and not running,
        )
        files = set(run_b.get("files", []))
        self.row(
            "summary.json and report.md in the runs volume",
            "both, target reached",
            f"{sorted(files & {'summary.json', 'report.md'})}; {describe(s)}",
            {"summary.json", "report.md"} <= files and bool(s.get("reached_target")),
        )


# ------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="compose_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the stack up on failure")
    parser.add_argument("--skip-build", action="store_true", help="use the images as they are")
    parser.add_argument("--out", default=str(ROOT / "runs" / "compose-check.json"))
    ns = parser.parse_args(argv)
    started = time.monotonic()
    compose = compose_command()
    versions = {
        "compose": run([*compose, "version", "--short"], check=False).stdout.strip(),
        "docker": run(["docker", "version", "-f", "{{.Server.Version}}"]).stdout.strip(),
        "cpus": os.cpu_count(),
    }
    print(
        f"compose check: {' '.join(compose)} {versions['compose']}, Docker {versions['docker']}, "
        f"{versions['cpus']} CPUs, project {PROJECT}",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="actorq-compose-check-"))
    secrets = work / "secrets"
    run([str(ROOT / "deploy" / "compose-secrets.sh"), str(secrets)])
    stack = Stack(compose, secrets, actors=2)
    check = Check(stack, work, (secrets / "redis-password").read_text().strip())
    failed: str | None = None
    try:
        if not ns.skip_build:
            check.build()
        check.up()
        check.replay_kill_and_crash()
        check.scaling_and_actor_kill()
        check.learner_kill()
        check.coordinator_run()
        check.exit_code_from()
        check.accounting()
        check.secrets()
    except (CheckFailed, subprocess.TimeoutExpired) as err:
        failed = str(err)
        check.row("check ran to the end", "no error", failed[:300], False)
    finally:
        check.poller.close()
        if not (ns.keep and (failed or not all(r.ok for r in check.rows))):
            stack.compose("down", "-v", "--remove-orphans", "--timeout", "30", check=False)
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept: project {PROJECT}, logs and secrets in {work}")
    wall = time.monotonic() - started
    ok = all(r.ok for r in check.rows) and failed is None
    actors = check.info.get("actors", {})
    print("\n" + table(check.rows, actors))
    print(f"\ncompose check {'passed' if ok else 'FAILED'} in {wall:.0f} s wall time")
    out = Path(ns.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "ok": ok,
                "wall_s": round(wall, 1),
                "versions": versions,
                "rows": [asdict(r) for r in check.rows],
                "kills": check.kills,
                **check.info,
            },
            indent=2,
            default=str,
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
