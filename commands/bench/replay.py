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
replay's raw capacity. Every store's replay runs at once (idle but for its
own phases) and the stores take turns phase by phase, ``--repeats`` times,
so a noisy machine hits them alike; the table gives each figure's median
and range, and memory/other as the median of the per-repeat ratios (each
from two phases run back to back). Writes every run and the medians as
JSON (``--json``).

    actorq bench replay --store memory --store redis://127.0.0.1:6390/0

A Redis store gets a table of its own (``bench-<random>``), deleted afterwards.
``--store memory+journal`` is the memory store with its write-ahead journal on
(in a temporary folder; ``memory+journal+fsync`` with ``journal_fsync``): run
it beside ``--store memory`` for what the journal costs.
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

from actorq.clients import ReplayClient
from actorq.rpc import channel
from actorq.transitions import Transitions
from commands import procs
from services.replay.store import check_store, is_redis_url, redact_url

# The memory store with its journal on, and the replay flags each takes.
JOURNAL_STORES = {"memory+journal": (), "memory+journal+fsync": ("--journal-fsync", "true")}

# Processes start with spawn: gRPC does not survive fork.
_CTX = mp.get_context("spawn")


@dataclass
class Row:
    """One measured phase (one run of it, or the median over repeats)."""

    store: str
    sampler: str
    phase: str  # "insert", "sample" or "together"
    actors: int
    inserted_per_s: float | None
    sampled_per_s: float | None
    repeat: int | None = None  # None: the median over every repeat


# The phases of one repeat: (name, actor count, learner sampling?).
def _phases(actor_counts: Sequence[int]) -> list[tuple[str, int, bool]]:
    return [
        *(("insert", n, False) for n in actor_counts),
        ("sample", 0, True),
        *(("together", n, True) for n in actor_counts),
    ]


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


def _start_replay(store: str, args: argparse.Namespace, log_dir: Path) -> tuple[Any, str]:
    """A replay service on store with the limiter off: (process, its table name)."""
    table = f"bench-{uuid.uuid4().hex[:8]}"
    journal: tuple[str, ...] = ()
    if store in JOURNAL_STORES:
        journal = ("--journal", str(log_dir / f"journal-{table}"), *JOURNAL_STORES[store])
        store = "memory"
    env = {"ACTORQ_STORE": store, "ACTORQ_LOG_LEVEL": "WARNING"}  # URL kept off the command line
    svc = procs.start(
        "replay",
        [
            *("--capacity", str(args.capacity), "--min-size-to-sample", "1"),
            *("--samples-per-insert", "0", "--sampler", args.sampler, "--table", table),
            *journal,
        ],
        log_dir,
        env=env,
        label=f"replay-{'redis' if is_redis_url(store) else 'memory'}-{table}",
    )
    return svc, table


def run_interleaved(args: argparse.Namespace, log_dir: Path) -> list[Row]:
    """Every phase on every store in turn, ``args.repeats`` times; one Row per run."""
    started: list[tuple[str, Any, str]] = []
    rows: list[Row] = []
    try:
        for store in args.store:
            svc, table = _start_replay(store, args, log_dir)
            started.append((store, svc, table))
        procs.wait_all_healthy([svc for _, svc, _ in started], 60)
        for repeat in range(args.repeats):
            for phase, actors, learner in _phases(args.actors):
                for store, svc, _ in started:
                    label = redact_url(store)
                    try:
                        ins, smp = _phase(svc.address, actors, learner, args)
                    except grpc.RpcError as err:
                        raise SystemExit(
                            f"bench replay: the replay on {label} failed: {err.code().name}: "
                            f"{err.details()}\n{svc.log_tail()}"
                        ) from None
                    rows.append(Row(label, args.sampler, phase, actors, ins, smp, repeat))
                    print(
                        f"  [{repeat + 1}/{args.repeats}] {label}: {phase}, {actors} actor(s): "
                        f"insert {_fmt(ins)}/s, sample {_fmt(smp)}/s",
                        flush=True,
                    )
    finally:
        for store, svc, table in started:
            svc.stop()
            if is_redis_url(store):
                _drop_table(store, table)
    return rows


def _by_phase(runs: Sequence[Row]) -> dict[tuple[str, str, int], list[Row]]:
    """The runs of each (store, phase, actors), in first-seen order."""
    groups: dict[tuple[str, str, int], list[Row]] = {}
    for r in runs:
        groups.setdefault((r.store, r.phase, r.actors), []).append(r)
    return groups


def _values(group: Sequence[Row], attr: str) -> list[float]:
    return [v for v in (getattr(r, attr) for r in group) if v is not None]


def _median_row(group: Sequence[Row]) -> Row:
    def median(attr: str) -> float | None:
        got = _values(group, attr)
        return float(np.median(got)) if got else None

    first = group[0]
    return Row(
        first.store,
        first.sampler,
        first.phase,
        first.actors,
        median("inserted_per_s"),
        median("sampled_per_s"),
    )


def medians(runs: Sequence[Row]) -> list[Row]:
    """One Row per (store, phase, actors): the median of its repeats, in first-seen order."""
    return [_median_row(group) for group in _by_phase(runs).values()]


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


def _spread(group: Sequence[Row], attr: str) -> str:
    """ "min-max" of one figure over the repeats (empty for one repeat)."""
    values = _values(group, attr)
    if len(values) < 2:
        return ""
    return f"{min(values) / 1e3:,.0f}-{max(values) / 1e3:,.0f}k"


def format_table(runs: Sequence[Row]) -> str:
    """Medians (and ranges) as a fixed-width table, with memory/other ratios when both ran."""
    head = (
        f"{'store':<34} {'sampler':<11} {'phase':<9} {'actors':>6} {'inserted/s':>12} "
        f"{'range':>10} {'sampled/s':>12} {'range':>10}"
    )
    repeats = len({r.repeat for r in runs})
    lines = [f"medians of {repeats} interleaved repeat(s)", head, "-" * len(head)]
    for group in _by_phase(runs).values():
        r = _median_row(group)
        lines.append(
            f"{r.store:<34} {r.sampler:<11} {r.phase:<9} {r.actors:>6} "
            f"{_fmt(r.inserted_per_s):>12} {_spread(group, 'inserted_per_s'):>10} "
            f"{_fmt(r.sampled_per_s):>12} {_spread(group, 'sampled_per_s'):>10}"
        )
    ratios = memory_ratios(runs)
    if ratios:
        lines.append("")
        lines.append(
            "memory / other, median of the per-repeat ratios (how many times faster memory "
            "is; target <= 2):"
        )
        for (store, phase, actors), parts in ratios.items():
            text = ", ".join(f"{name} {value:.2f}x" for name, value in parts.items())
            lines.append(f"  {store:<34} {phase:<9} {actors} actor(s): {text}")
    return "\n".join(lines)


def memory_ratios(runs: Sequence[Row]) -> dict[tuple[str, str, int], dict[str, float]]:
    """memory's rate / another store's, per phase: the median over repeats of the ratio
    of the two runs of one repeat (run back to back)."""
    memory = {(r.repeat, r.phase, r.actors): r for r in runs if r.store == "memory"}
    per: dict[tuple[str, str, int], dict[str, list[float]]] = {}
    for r in runs:
        m = memory.get((r.repeat, r.phase, r.actors))
        if r.store == "memory" or m is None:
            continue
        parts = per.setdefault((r.store, r.phase, r.actors), {})
        for name, a, b in (
            ("insert", m.inserted_per_s, r.inserted_per_s),
            ("sample", m.sampled_per_s, r.sampled_per_s),
        ):
            if a and b:
                parts.setdefault(name, []).append(a / b)
    return {
        key: {name: float(np.median(v)) for name, v in parts.items()} for key, parts in per.items()
    }


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="actorq bench replay", description=__doc__.split("\n")[0])
    p.add_argument(
        "--store",
        action="append",
        help="memory, memory+journal[+fsync] or redis://[:PASSWORD@]HOST:PORT/DB; repeat to "
        "compare (default: memory)",
    )
    p.add_argument("--sampler", default="uniform", choices=["uniform", "prioritized"])
    p.add_argument(
        "--actors", default="1,4", help="actor counts to measure, comma-separated (default 1,4)"
    )
    p.add_argument("--duration", type=float, default=3.0, help="seconds per phase")
    p.add_argument(
        "--repeats", type=int, default=3, help="interleaved rounds of every phase (default 3)"
    )
    p.add_argument("--capacity", type=int, default=100_000, help="replay capacity")
    p.add_argument("--chunk-size", type=int, default=64, help="transitions per chunk")
    p.add_argument("--chunks-per-insert", type=int, default=8, help="chunks per Insert stream")
    p.add_argument("--batch-size", type=int, default=256, help="learner batch size")
    p.add_argument("--obs-dim", type=int, default=4, help="observation size (CartPole: 4)")
    p.add_argument("--json", default="runs/bench-replay.json", help="where to write the results")
    args = p.parse_args(list(argv))
    args.store = args.store or ["memory"]
    for store in args.store:
        if store in JOURNAL_STORES:
            continue
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
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1, got {args.repeats}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the table and write the JSON."""
    args = _parse(list(argv or []))
    stores = ", ".join(redact_url(s) for s in args.store)
    print(f"{stores} ({args.sampler} sampler), {args.repeats} interleaved repeat(s):", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as logs:
        rows = run_interleaved(args, Path(logs))
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
        "medians": [asdict(r) for r in medians(rows)],
        "memory_over_other": [
            {"store": store, "phase": phase, "actors": actors, **parts}
            for (store, phase, actors), parts in memory_ratios(rows).items()
        ],
        "runs": [asdict(r) for r in rows],
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0
