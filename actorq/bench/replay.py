"""`actorq bench replay`: replay throughput over gRPC, memory store against Redis.

For each ``--store`` it starts a real ``actorq serve replay`` process and
drives it from separate client processes, as the real system does:

- actors send n-step transitions the way ``services.actor`` does (chunks of
  ``--chunk-size`` transitions, ``--chunks-per-insert`` chunks per Insert
  stream), pre-encoded so the client's own cost stays small;
- a learner streams batches of ``--batch-size`` (one Sample stream).

Phases, each ``--duration`` seconds: inserts alone with each actor count,
sampling alone, then actors and learner together with each actor count.
The rate limiter is off (``samples_per_insert 0``) so the numbers are the
replay's raw capacity. Prints a table and writes JSON (``--json``).

    actorq bench replay --store memory --store redis://127.0.0.1:6390/0

A Redis store gets a table of its own (``bench-<random>``), deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import queue
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from actorq import procs
from actorq.clients import ReplayClient, Transitions
from actorq.rpc import channel
from services.replay.store import check_store, is_redis_url, redact_url

# Processes start with spawn: gRPC does not survive fork.
_CTX = mp.get_context("spawn")


@dataclass
class Row:
    """One measured phase."""

    store: str
    sampler: str
    phase: str  # "insert", "sample" or "together"
    actors: int
    inserted_per_s: float | None
    sampled_per_s: float | None


def _chunk_protos(n: int, obs_dim: int, count: int, actor_id: str) -> list[Any]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        obs = rng.standard_normal((n, obs_dim), dtype=np.float32)
        t = Transitions(
            obs=obs,
            action=rng.integers(0, 2, n, dtype=np.int64),
            reward=np.ones(n, np.float32),
            discount=np.full(n, 0.99, np.float32),
            next_obs=obs + 1,
        )
        out.append(t.to_proto(actor_id))
    return out


def _actor(
    address: str,
    index: int,
    chunk_size: int,
    per_insert: int,
    obs_dim: int,
    start_at: float,
    duration: float,
    results: Any,
) -> None:
    """Insert for duration seconds from start_at; put (transitions, seconds)."""
    msgs = _chunk_protos(chunk_size, obs_dim, per_insert, f"bench-actor-{index}")
    sent = 0
    with channel(address) as ch:
        client = ReplayClient(ch)
        time.sleep(max(0.0, start_at - time.time()))
        begin = time.perf_counter()
        end = begin + duration
        while time.perf_counter() < end:
            client.insert_protos(msgs, timeout=60)
            sent += chunk_size * per_insert
        results.put(("insert", sent, time.perf_counter() - begin))


def _learner(address: str, batch_size: int, start_at: float, duration: float, results: Any) -> None:
    """Sample batches for duration seconds from start_at; put (transitions, seconds)."""
    got = 0
    with channel(address) as ch:
        client = ReplayClient(ch)
        time.sleep(max(0.0, start_at - time.time()))
        begin = time.perf_counter()
        stream = client.sample_stream(batch_size)
        try:
            for batch in stream:
                got += len(batch.keys)
                if time.perf_counter() - begin >= duration:
                    break
        finally:
            stream.cancel()
        results.put(("sample", got, time.perf_counter() - begin))


def _phase(
    address: str, actors: int, learner: bool, args: argparse.Namespace
) -> tuple[float | None, float | None]:
    """Run one phase; (inserted/s, sampled/s), None for a side that did not run."""
    results = _CTX.Queue()
    start_at = time.time() + 2.0 + 0.5 * actors  # room for the spawned processes to import
    workers = [
        _CTX.Process(
            target=_actor,
            args=(
                address,
                i,
                args.chunk_size,
                args.chunks_per_insert,
                args.obs_dim,
                start_at,
                args.duration,
                results,
            ),
        )
        for i in range(actors)
    ]
    if learner:
        workers.append(
            _CTX.Process(
                target=_learner,
                args=(address, args.batch_size, start_at, args.duration, results),
            )
        )
    for w in workers:
        w.start()
    totals: dict[str, list[tuple[int, float]]] = {"insert": [], "sample": []}
    deadline = time.monotonic() + args.duration + 120
    while sum(len(v) for v in totals.values()) < len(workers):
        try:
            kind, count, seconds = results.get(timeout=1.0)
            totals[kind].append((count, seconds))
            continue
        except queue.Empty:
            pass
        failed = [w for w in workers if w.exitcode not in (None, 0)]
        if failed or time.monotonic() > deadline:
            for w in workers:
                w.terminate()
            raise SystemExit(
                f"bench replay: {len(failed)} client process(es) failed or the phase "
                "ran past its deadline (see their output above)"
            )
    for w in workers:
        w.join(30)

    def rate(kind: str) -> float | None:
        runs = totals[kind]
        if not runs:
            return None
        return sum(c for c, _ in runs) / max(s for _, s in runs)

    return rate("insert"), rate("sample")


def _bench_store(store: str, args: argparse.Namespace, log_dir: Path) -> list[Row]:
    table = f"bench-{uuid.uuid4().hex[:8]}"
    env = {"ACTORQ_STORE": store, "ACTORQ_LOG_LEVEL": "WARNING"}  # URL kept off the command line
    svc = procs.start(
        "replay",
        [
            *("--capacity", str(args.capacity), "--min-size-to-sample", "1"),
            *("--samples-per-insert", "0", "--sampler", args.sampler, "--table", table),
        ],
        log_dir,
        env=env,
        label=f"replay-{'redis' if is_redis_url(store) else 'memory'}",
    )
    label = redact_url(store)
    rows: list[Row] = []
    try:
        procs.wait_all_healthy([svc], 60)
        for actors in args.actors:
            ins, _ = _phase(svc.address, actors, False, args)
            rows.append(Row(label, args.sampler, "insert", actors, ins, None))
            print(f"  {label}: {actors} actor(s) insert {ins:,.0f} transitions/s", flush=True)
        _, smp = _phase(svc.address, 0, True, args)
        rows.append(Row(label, args.sampler, "sample", 0, None, smp))
        print(f"  {label}: learner samples {smp:,.0f} transitions/s", flush=True)
        for actors in args.actors:
            ins, smp = _phase(svc.address, actors, True, args)
            rows.append(Row(label, args.sampler, "together", actors, ins, smp))
            print(
                f"  {label}: {actors} actor(s) + learner: insert {ins:,.0f}/s, sample {smp:,.0f}/s",
                flush=True,
            )
    except grpc.RpcError as err:
        raise SystemExit(
            f"bench replay: the replay on {label} failed: {err.code().name}: {err.details()}\n"
            f"{svc.log_tail()}"
        ) from None
    finally:
        svc.stop()
        if is_redis_url(store):
            _drop_table(store, table)
    return rows


def _drop_table(store: str, table: str) -> None:
    """Delete the bench's keys from Redis."""
    import redis

    from services.replay.redis_table import key_prefix

    client = redis.Redis.from_url(store)
    try:
        keys = list(client.scan_iter(match=f"{key_prefix(table)}*", count=1000))
        if keys:
            client.unlink(*keys)
    finally:
        client.close()


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def format_table(rows: Sequence[Row]) -> str:
    """The results as a fixed-width table, with Redis/memory ratios when both ran."""
    head = f"{'store':<34} {'sampler':<11} {'phase':<9} {'actors':>6} {'inserted/s':>12} {'sampled/s':>12}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.store:<34} {r.sampler:<11} {r.phase:<9} {r.actors:>6} "
            f"{_fmt(r.inserted_per_s):>12} {_fmt(r.sampled_per_s):>12}"
        )
    memory = {(r.phase, r.actors): r for r in rows if r.store == "memory"}
    others = [r for r in rows if r.store != "memory" and (r.phase, r.actors) in memory]
    if memory and others:
        lines.append("")
        lines.append("memory / other (how many times faster memory is; target <= 2):")
        for r in others:
            m = memory[(r.phase, r.actors)]
            parts = []
            for name, a, b in (
                ("insert", m.inserted_per_s, r.inserted_per_s),
                ("sample", m.sampled_per_s, r.sampled_per_s),
            ):
                if a and b:
                    parts.append(f"{name} {a / b:.2f}x")
            lines.append(f"  {r.phase:<9} {r.actors} actor(s): {', '.join(parts)}")
    return "\n".join(lines)


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="actorq bench replay", description=__doc__.split("\n")[0])
    p.add_argument(
        "--store",
        action="append",
        help="memory or redis://[:PASSWORD@]HOST:PORT/DB; repeat to compare (default: memory)",
    )
    p.add_argument("--sampler", default="uniform", choices=["uniform", "prioritized"])
    p.add_argument(
        "--actors", default="1,4", help="actor counts to measure, comma-separated (default 1,4)"
    )
    p.add_argument("--duration", type=float, default=3.0, help="seconds per phase")
    p.add_argument("--capacity", type=int, default=100_000, help="replay capacity")
    p.add_argument("--chunk-size", type=int, default=64, help="transitions per chunk")
    p.add_argument("--chunks-per-insert", type=int, default=8, help="chunks per Insert stream")
    p.add_argument("--batch-size", type=int, default=256, help="learner batch size")
    p.add_argument("--obs-dim", type=int, default=4, help="observation size (CartPole: 4)")
    p.add_argument("--json", default="runs/bench-replay.json", help="where to write the results")
    args = p.parse_args(list(argv))
    args.store = args.store or ["memory"]
    for store in args.store:
        try:
            check_store(store)
        except ValueError as err:
            p.error(str(err))
    try:
        args.actors = [int(a) for a in str(args.actors).split(",") if a.strip()]
    except ValueError:
        p.error(f"--actors must be comma-separated integers, got {args.actors!r}")
    if not args.actors or min(args.actors) < 1:
        p.error("--actors needs counts >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the table and write the JSON."""
    args = _parse(list(argv or []))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as logs:
        for store in args.store:
            print(f"{redact_url(store)} ({args.sampler} sampler):", flush=True)
            rows += _bench_store(store, args, Path(logs))
    print()
    print(format_table(rows))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("store", "json")}
    settings["stores"] = [redact_url(s) for s in args.store]
    report = {
        "settings": settings,
        "machine": {
            "logical_cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else None,
            "machine": platform.machine(),
            "os": platform.platform(),
            "python": platform.python_version(),
        },
        "results": [asdict(r) for r in rows],
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0
