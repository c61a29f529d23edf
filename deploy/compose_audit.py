"""What `make compose-check` finds at the end of a run: the acknowledged-transition
accounting against Redis, the secret search, and the result table (split from
compose_check.py, whose ``Check`` runs the steps and inherits these)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compose_stack import IMAGES, PROJECT, CheckFailed, Poller, Stack, run, short, tally


@dataclass
class Row:
    """One line of the result table."""

    check: str
    expected: str
    observed: str
    ok: bool
    t_s: float


class Audit:
    """The closing checks; ``Check`` provides the state and helpers named here."""

    stack: Stack
    work: Path
    password: str
    tokens: list[str]
    poller: Poller
    info: dict[str, Any]
    wait: Callable[..., float | None]
    healthy: Callable[[str], bool]
    row: Callable[[str, str, str, bool], bool]

    def redis_counts(self) -> dict[str, int]:
        """Per-actor insert counts Redis holds (the replay table's actors hash)."""
        redis = self.stack.one("redis")
        cli = 'REDISCLI_AUTH="$(cat /run/secrets/redis-password)" redis-cli'
        keys = run(
            ["docker", "exec", redis["Id"], "sh", "-c", f"{cli} --scan --pattern 'actorq:*:actors'"]
        ).stdout.split()
        counts: dict[str, int] = {}
        for key in keys:
            out = run(["docker", "exec", redis["Id"], "sh", "-c", f"{cli} hgetall '{key}'"]).stdout
            items = out.split()
            for name, value in zip(items[::2], items[1::2], strict=True):
                counts[name] = counts.get(name, 0) + int(value)
        return counts

    def accounting(self) -> None:
        """Acknowledged per actor (logs + polls) against Redis, with Redis restarted."""
        self.poller.close()
        redis = self.stack.one("redis")
        run(["docker", "start", redis["Id"]])
        if self.wait(lambda: self.healthy("redis"), 120) is None:
            raise CheckFailed("redis did not come back for the count")
        held = self.redis_counts()
        with self.poller.lock:
            gens = list(self.poller.generations.values())
        logs = {}
        for container in self.poller.hostnames:
            log_file = self.work / f"actor-{short(container)}.log"
            logs[container] = log_file.read_text(errors="replace") if log_file.exists() else ""
        per_actor = tally(self.poller.hostnames, gens, logs, held)
        self.info["actors"] = {a: {**asdict(t), "lost": t.lost} for a, t in per_actor.items()}
        lost = sum(t.lost for t in per_actor.values())
        unaccounted = [a for a, t in per_actor.items() if t.accounted != t.processes]
        self.row(
            "acknowledged transitions lost",
            "0",
            f"{lost} of {sum(t.acked for t in per_actor.values())} acknowledged by "
            f"{len(per_actor)} actors; Redis holds {sum(held.values())}"
            + (f"; processes without a final count: {unaccounted}" if unaccounted else ""),
            lost == 0 and not unaccounted and bool(per_actor),
        )

    def secrets(self) -> None:
        """The Redis password and the tokens in no docker inspect, docker history or
        container log."""
        ids = self.stack.ids()
        texts = {
            "docker inspect (containers)": run(["docker", "inspect", *ids]).stdout,
            "docker inspect (images)": run(["docker", "image", "inspect", *IMAGES]).stdout,
            "docker inspect (volumes, networks)": run(
                ["docker", "volume", "inspect", f"{PROJECT}_runs", f"{PROJECT}_redis-data"]
            ).stdout
            + run(["docker", "network", "inspect", f"{PROJECT}_default"]).stdout,
        }
        for image in IMAGES:
            texts[f"docker history {image}"] = run(
                ["docker", "history", "--no-trunc", image]
            ).stdout
        for cid in ids:
            logs = run(["docker", "logs", cid], check=False)
            texts[f"logs {short(cid)}"] = logs.stdout + logs.stderr
        # Actors compose removed when scaling down: the poller kept their logs.
        for log_file in sorted(self.work.glob("actor-*.log")):
            texts[f"logs {log_file.stem}"] = log_file.read_text(errors="replace")
        secrets = [self.password, *self.tokens]
        where = [name for name, text in texts.items() if any(x in text for x in secrets)]
        self.row(
            "Redis password and tokens in docker inspect, history, logs",
            "nowhere",
            f"searched {len(texts)} outputs" + (f"; FOUND in {where}" if where else ": not found"),
            not where,
        )


def describe(summary: dict[str, Any]) -> str:
    """A run's outcome in a few words, from its summary.json."""
    if not summary:
        return "no summary.json"
    returns = summary.get("eval") or {}
    return (
        f"reached {summary.get('reached_target')}, greedy int8 return {returns.get('int8')}, "
        f"{summary.get('time_to_target_s')} s and {summary.get('env_steps_to_target')} env steps "
        f"to target, actors {summary.get('active_actors')}"
    )


def table(rows: list[Row], actors: dict[str, dict[str, Any]]) -> str:
    width = max(len(r.check) for r in rows)
    lines = [f"{'t (s)':>7}  {'check':<{width}}  result  observed (expected)"]
    for r in rows:
        mark = "PASS" if r.ok else "FAIL"
        lines.append(f"{r.t_s:7.1f}  {r.check:<{width}}  {mark:<6}  {r.observed} ({r.expected})")
    if actors:
        lines += [
            "",
            f"{'actor':<20} {'processes':>9} {'acknowledged':>12} {'in Redis':>9} {'lost':>5}",
        ]
        for actor_id, e in sorted(actors.items()):
            acked = f"{e['acked']}{'' if e['exact'] else '+'}"
            lines.append(
                f"{actor_id:<20} {e['processes']:>9} {acked:>12} {e['in_redis']:>9} {e['lost']:>5}"
            )
        lines.append("(+: a killed process's count as last polled, at most one send short)")
    return "\n".join(lines)
