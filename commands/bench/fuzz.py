"""`actorq bench fuzz`: fuzzed requests against real service processes.

For each service it starts a real ``actorq serve`` process and sends
``--count`` requests spread over every method it serves (health and
reflection included): valid requests, requests with one field set to an
extreme value (0, -1, int64's ends, NaN, inf, empty or huge strings and
bytes), requests with bytes flipped, cut or inserted, and random garbage;
streams get several such messages, with or without their end. Every call has
a short deadline; a response stream is read for a few messages, then
cancelled.

It passes when no call ended with UNKNOWN (an unhandled error in the
service), the process is still serving at the end, and its resident memory
grew by less than ``--max-growth-mib`` between the end of a warm-up (the
first tenth of the calls: imports, thread pools, first allocations) and the
end. Prints a line per service and exits 1 if any failed.

    actorq bench fuzz --count 10000
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf import descriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from actorq import tensor
from actorq.clients import COMMIT, LearnerClient
from actorq.rpc import MAX_MESSAGE_BYTES, wait_healthy
from actorq.transitions import Transitions
from actorq.v1 import actor_pb2, common_pb2, learner_pb2, quantizer_pb2, replay_pb2
from commands import procs

SERVICES = ("replay", "quantizer", "learner", "actor")
# How the first tenth of the calls is used: warm-up, before memory is measured.
WARMUP_FRACTION = 0.1
CALL_TIMEOUT_S = 1.0
# Calls in flight at once (a batch's calls run together; batches one after another).
CONCURRENT_CALLS = 8
BATCH = 64
RESPONSES_READ = 3
SPEC = common_pb2.NetworkSpec(kind="dqn_mlp", obs_dim=4, hidden_sizes=[16], output_dim=2)

Build = Callable[[np.random.Generator], list[Message]]


@dataclass(frozen=True)
class Method:
    """One method to fuzz: its path, shape ('uu', 'us', 'su', 'ss') and valid requests."""

    path: str
    shape: str
    valid: Build


@dataclass
class Result:
    """One service's run."""

    service: str
    requests: int = 0
    seconds: float = 0.0
    codes: dict[str, int] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    rss_after_warmup_mib: float = 0.0
    rss_end_mib: float = 0.0
    alive: bool = True
    serving: bool = True

    @property
    def growth_mib(self) -> float:
        return self.rss_end_mib - self.rss_after_warmup_mib

    def passed(self, max_growth_mib: float) -> bool:
        return not self.unknown and self.alive and self.serving and self.growth_mib < max_growth_mib


# --- valid requests, the seeds of every mutation ---------------------------------


def _chunk(rng: np.random.Generator, n: int = 4) -> replay_pb2.TransitionChunk:
    obs = rng.standard_normal((n, 4)).astype(np.float32)
    msg = Transitions(
        obs=obs,
        action=rng.integers(0, 2, n).astype(np.int64),
        reward=np.ones(n, np.float32),
        discount=np.full(n, 0.99, np.float32),
        next_obs=obs + 1,
    ).to_proto("fuzz")
    msg.sequence, msg.session = int(rng.integers(1, 1000)), int(rng.integers(1, 3))
    return msg


def _insert(rng: np.random.Generator) -> list[Message]:
    return [*(_chunk(rng) for _ in range(int(rng.integers(1, 4)))), COMMIT]


def _priorities(rng: np.random.Generator) -> list[Message]:
    keys = rng.integers(0, 100, 8).astype(np.int64)
    return [
        replay_pb2.UpdatePrioritiesRequest(
            keys=tensor.to_proto(keys, "keys"),
            priorities=tensor.to_proto(rng.random(8).astype(np.float32), "priorities"),
        )
    ]


def _publish(rng: np.random.Generator) -> list[Message]:
    header = quantizer_pb2.WeightsHeader(
        policy_version=int(rng.integers(1, 10**6)), learner_step=1, network=SPEC
    )
    shapes = {"layers.0.weight": (16, 4), "layers.0.bias": (16,)}
    shapes |= {"layers.1.weight": (2, 16), "layers.1.bias": (2,)}
    parts = [
        quantizer_pb2.WeightsUpload(
            tensor=quantizer_pb2.TensorPart(
                tensor=tensor.to_proto(rng.standard_normal(s).astype(np.float32) * 0.1, name)
            )
        )
        for name, s in shapes.items()
    ]
    return [quantizer_pb2.WeightsUpload(header=header), *parts]


def _one(make: Callable[[np.random.Generator], Message]) -> Build:
    return lambda rng: [make(rng)]


HEALTH = Method(
    "/grpc.health.v1.Health/Check", "uu", _one(lambda _: health_pb2.HealthCheckRequest())
)
REFLECTION = Method(
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "ss",
    _one(lambda _: reflection_pb2.ServerReflectionRequest(list_services="")),
)
METHODS: dict[str, list[Method]] = {
    "replay": [
        Method("/actorq.v1.ReplayService/Insert", "su", _insert),
        Method(
            "/actorq.v1.ReplayService/Sample",
            "us",
            _one(
                lambda rng: replay_pb2.SampleRequest(
                    batch_size=int(rng.integers(1, 64)), num_batches=int(rng.integers(0, 3))
                )
            ),
        ),
        Method("/actorq.v1.ReplayService/UpdatePriorities", "uu", _priorities),
        Method(
            "/actorq.v1.ReplayService/GetStats",
            "uu",
            _one(lambda _: replay_pb2.ReplayStatsRequest()),
        ),
    ],
    "quantizer": [
        Method("/actorq.v1.QuantizerService/PublishWeights", "su", _publish),
        Method(
            "/actorq.v1.QuantizerService/GetModel",
            "us",
            _one(
                lambda rng: quantizer_pb2.GetModelRequest(
                    precision=str(rng.choice(["fp32", "int8"]))
                )
            ),
        ),
        Method(
            "/actorq.v1.QuantizerService/ListModels",
            "uu",
            _one(lambda _: quantizer_pb2.ListModelsRequest()),
        ),
    ],
    "learner": [
        Method(
            "/actorq.v1.LearnerService/GetStatus",
            "uu",
            _one(lambda _: learner_pb2.LearnerStatusRequest()),
        )
    ],
    "actor": [
        Method(
            "/actorq.v1.ActorService/GetStatus",
            "uu",
            _one(lambda _: actor_pb2.ActorStatusRequest()),
        )
    ],
}

# --- mutations ----------------------------------------------------------------------

_INTS = [0, 1, -1, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), 2**53 + 1]
_UINTS = [0, 1, 2**32 - 1, 2**64 - 1]
_FLOATS = [math.nan, math.inf, -math.inf, 1e38, -1e38, 0.0, 5e-324, 1e300]


def _extreme(fd: descriptor.FieldDescriptor, rng: np.random.Generator) -> Any:
    t = fd.type
    if t == fd.TYPE_BOOL:
        return bool(rng.integers(2))
    if t in (fd.TYPE_STRING,):
        return str(
            rng.choice(["", "x" * int(rng.integers(1, 20_000)), "\u00e9\u4e2d\U0001f600", "fp16"])
        )
    if t == fd.TYPE_BYTES:
        return rng.bytes(int(rng.choice([0, 1, 3, 7, 4096, 65_536])))
    if t in (fd.TYPE_FLOAT, fd.TYPE_DOUBLE):
        value = float(rng.choice(_FLOATS))
        return (
            value if t == fd.TYPE_DOUBLE or not math.isfinite(value) or abs(value) < 3e38 else 3e38
        )
    if t in (fd.TYPE_UINT32, fd.TYPE_FIXED32):
        return int(rng.choice(_UINTS[:3]))
    if t in (fd.TYPE_UINT64, fd.TYPE_FIXED64):
        return int(rng.choice(_UINTS))
    if t in (fd.TYPE_INT32, fd.TYPE_SINT32, fd.TYPE_SFIXED32, fd.TYPE_ENUM):
        return int(rng.choice(_INTS[:5]))
    return int(rng.choice(_INTS))


def mutate_field(msg: Message, rng: np.random.Generator, depth: int = 0) -> None:
    """Set one scalar field somewhere in msg to an extreme value (or clear a repeated one)."""
    fields: list[Any] = list(msg.DESCRIPTOR.fields)  # upb's or Python's descriptors
    fd = fields[int(rng.integers(len(fields)))]
    if fd.message_type is not None:
        if fd.is_repeated:
            container = getattr(msg, fd.name)
            if fd.message_type.GetOptions().map_entry:
                return
            if rng.random() < 0.3:
                del container[:]
                return
            target = container.add() if not len(container) else container[0]
        else:
            target = getattr(msg, fd.name)
        if depth < 4:
            mutate_field(target, rng, depth + 1)
        return
    if fd.is_repeated:
        container = getattr(msg, fd.name)
        del container[:]
        with contextlib.suppress(TypeError, ValueError):
            container.extend(_extreme(fd, rng) for _ in range(int(rng.integers(0, 9))))
        return
    with contextlib.suppress(TypeError, ValueError):  # a value the field cannot hold
        setattr(msg, fd.name, _extreme(fd, rng))


def mutate_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    """Flip, cut or insert bytes."""
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 6))):
        op = int(rng.integers(3))
        at = int(rng.integers(len(buf) + 1))
        if op == 0 and buf:
            buf[min(at, len(buf) - 1)] ^= int(rng.integers(1, 256))
        elif op == 1:
            del buf[at : at + int(rng.integers(1, 16))]
        else:
            buf[at:at] = rng.bytes(int(rng.integers(1, 16)))
    return bytes(buf)


def fuzzed(valid: list[Message], rng: np.random.Generator) -> list[bytes]:
    """The wire bytes of one call's messages, mutated one way or another."""
    mode = rng.random()
    out = []
    for msg in valid:
        if mode < 0.1:
            out.append(msg.SerializeToString())
        elif mode < 0.55:
            copy = type(msg)()
            copy.CopyFrom(msg)
            if rng.random() < 0.7 and copy.DESCRIPTOR.fields:
                mutate_field(copy, rng)
            out.append(copy.SerializeToString())
        elif mode < 0.9:
            out.append(mutate_bytes(msg.SerializeToString(), rng))
        else:
            out.append(rng.bytes(int(rng.integers(0, 256))))
    if len(out) > 1 and rng.random() < 0.3:  # a stream cut short, or shuffled
        if rng.random() < 0.5:
            out = out[: int(rng.integers(1, len(out)))]
        else:
            out = [out[i] for i in rng.permutation(len(out))]
    return out


# --- calls --------------------------------------------------------------------------


def call(ch: grpc.Channel, method: Method, messages: list[bytes]) -> grpc.StatusCode:
    """One fuzzed call; its status code (details of UNKNOWN raised as RuntimeError)."""
    ident: Callable[[bytes], bytes] = lambda b: b  # noqa: E731
    try:
        if method.shape == "uu":
            ch.unary_unary(method.path, ident, ident)(
                messages[0] if messages else b"", timeout=CALL_TIMEOUT_S
            )
        elif method.shape == "su":
            ch.stream_unary(method.path, ident, ident)(iter(messages), timeout=CALL_TIMEOUT_S)
        else:
            if method.shape == "us":
                stream = ch.unary_stream(method.path, ident, ident)(
                    messages[0] if messages else b"", timeout=CALL_TIMEOUT_S
                )
            else:
                stream = ch.stream_stream(method.path, ident, ident)(
                    iter(messages), timeout=CALL_TIMEOUT_S
                )
            for i, _ in enumerate(stream):
                if i + 1 >= RESPONSES_READ:
                    stream.cancel()
                    break
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.UNKNOWN:
            raise RuntimeError(f"{method.path}: {err.details()}") from None
        return err.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def service_args(service: str, unreachable: str) -> list[str]:
    """Each service's flags for a fuzz run (small tables; nobody to talk to)."""
    if service == "replay":
        return ["--capacity", "2000", "--min-size-to-sample", "1"]
    if service in ("learner", "actor"):
        return [
            "--env",
            "CartPole-v1",
            "--replay-address",
            unreachable,
            "--quantizer-address",
            unreachable,
        ]
    return []


def fuzz_service(service: str, count: int, seed: int, log_dir: Path) -> Result:
    """Start service, send count fuzzed calls, measure; the process is stopped after."""
    rng = np.random.default_rng(seed)
    unreachable = f"127.0.0.1:{procs.free_port()}"
    svc = procs.start(
        service, service_args(service, unreachable), log_dir, env={"ACTORQ_LOG_LEVEL": "ERROR"}
    )
    result = Result(service)
    try:
        procs.wait_all_healthy([svc], 120)
        if service == "learner":
            # Its update warm-up imports and allocates once (tens of MiB) while it serves:
            # not growth the calls caused.
            with grpc.insecure_channel(svc.address) as ch:
                learner = LearnerClient(ch)
                procs.wait_for(
                    "the learner's update warm-up",
                    lambda: learner.status().update_warm_up_s > 0,
                    120,
                )
        methods = [*METHODS[service], HEALTH, REFLECTION]
        codes: collections.Counter[str] = collections.Counter()
        options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        warmup = max(1, int(count * WARMUP_FRACTION))
        started = time.perf_counter()
        with (
            grpc.insecure_channel(svc.address, options=options) as ch,
            ThreadPoolExecutor(CONCURRENT_CALLS) as pool,
        ):

            def one(job: tuple[Method, list[bytes]]) -> str:
                try:
                    return call(ch, *job).name
                except RuntimeError as err:
                    if len(result.unknown) < 10:
                        result.unknown.append(str(err))
                    return "UNKNOWN"

            done = 0
            while done < count:
                # The warm-up ends exactly at its count; then batches of concurrent calls.
                size = min(BATCH, count - done, warmup - done if done < warmup else count)
                jobs = []
                for _ in range(size):
                    method = methods[int(rng.integers(len(methods)))]
                    jobs.append((method, fuzzed(method.valid(rng), rng)))
                codes.update(pool.map(one, jobs))
                done += size
                if done == warmup:
                    result.rss_after_warmup_mib = rss_mib(svc.pid)
        result.seconds = time.perf_counter() - started
        result.requests, result.codes = count, dict(codes.most_common())
        result.rss_end_mib = rss_mib(svc.pid)
        result.alive = svc.alive()
        try:
            wait_healthy(svc.address, 10)
        except TimeoutError:
            result.serving = False
    finally:
        svc.stop()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actorq bench fuzz", description=__doc__)
    parser.add_argument("--count", type=int, default=10_000, help="fuzzed calls per service")
    parser.add_argument("--service", action="append", choices=SERVICES, help="(default: all four)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-growth-mib", type=float, default=20.0)
    parser.add_argument("--json", type=Path, help="write every result here")
    args = parser.parse_args(list(argv or []))
    results = []
    with tempfile.TemporaryDirectory(prefix="actorq-fuzz-") as tmp:
        for service in args.service or SERVICES:
            result = fuzz_service(service, args.count, args.seed, Path(tmp))
            results.append(result)
            verdict = "ok" if result.passed(args.max_growth_mib) else "FAILED"
            print(
                f"{service}: {result.requests} calls in {result.seconds:.1f} s; "
                f"RSS {result.rss_after_warmup_mib:.1f} -> {result.rss_end_mib:.1f} MiB "
                f"({result.growth_mib:+.1f}); UNKNOWN {len(result.unknown)}; "
                f"{'alive' if result.alive else 'DEAD'}, "
                f"{'serving' if result.serving else 'NOT SERVING'}; {verdict}\n  codes: {result.codes}",
                flush=True,
            )
            for text in result.unknown:
                print(f"  UNKNOWN: {text}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0 if all(r.passed(args.max_growth_mib) for r in results) else 1
