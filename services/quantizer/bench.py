"""Measure fp32 vs int8 (dynamic, static QDQ) inference for DQN MLPs.

``python -m services.quantizer.bench [--rounds N] [--sizes 64x64,256x256] [--contended]``

Latency is the median over many single calls. Variants are interleaved in
blocks: each round runs every variant ``block`` times in a row, in a rotating
order, and times all but the first ``settle`` calls of each block. Rotating
spreads drift in a shared CPU's load over all variants alike; blocks keep a
variant's weights in cache, as in an actor that runs one model. Interleaving
single calls instead (``--contended``) makes every call fetch its weights from
DRAM: at 2048^3 the sessions' weights together (fp32 33 MB + 8 MB per int8
variant) overflow the 32 MB L3, and int8 measures ~430 us instead of ~125 us.
That is what an actor sees when other processes on its host evict its model.

Sessions come from ``actorq.ort.make_session`` (one intra-op thread, the
actors' setting). Also prints which op types the optimized graph runs (int8
kernels or not), accuracy against fp32, sizes, and the per-call floor (an
Identity graph: Python and session overhead without compute).
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from actorq.network import DQN_MLP, OBS_INPUT, Q_VALUES_OUTPUT
from actorq.ort import make_session
from actorq.v1 import common_pb2
from services.quantizer.graph import (
    IR_VERSION,
    OPSET,
    bias_name,
    build_onnx,
    layer_sizes,
    weight_name,
)
from services.quantizer.quantize import quantize_int8


def torch_like_weights(spec: common_pb2.NetworkSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """nn.Linear's default init: weight and bias ~ U(-1/sqrt(in), 1/sqrt(in))."""
    rng = np.random.default_rng(seed)
    sizes = layer_sizes(spec)
    out: dict[str, np.ndarray] = {}
    for i in range(len(sizes) - 1):
        bound = 1.0 / np.sqrt(sizes[i])
        w = rng.uniform(-bound, bound, size=(sizes[i + 1], sizes[i]))
        out[weight_name(i)] = w.astype(np.float32)
        out[bias_name(i)] = rng.uniform(-bound, bound, size=sizes[i + 1]).astype(np.float32)
    return out


@dataclass
class Variant:
    name: str
    model: bytes
    ops: list[str]


def optimized_ops(model: bytes) -> list[str]:
    """Op types (with domain) of the graph onnxruntime actually runs."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "opt.onnx")
        make_session(model, optimized_model_path=path)
        opt = onnx.load(path)
    return sorted({f"{n.domain + '.' if n.domain else ''}{n.op_type}" for n in opt.graph.node})


def identity_model(obs_dim: int) -> bytes:
    """An ONNX graph copying ``obs`` to ``q_values``: one call of it is the floor."""
    io = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", obs_dim])
        for n in (OBS_INPUT, Q_VALUES_OUTPUT)
    ]
    graph = helper.make_graph(
        [helper.make_node("Identity", [OBS_INPUT], [Q_VALUES_OUTPUT])], "floor", [io[0]], [io[1]]
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    return model.SerializeToString()


def time_interleaved(
    runs: dict[str, Callable[[], object]],
    rounds: int,
    block: int = 25,
    settle: int = 5,
    warmup: int = 20,
) -> dict[str, float]:
    """Median seconds per call of each callable.

    Each round calls every callable ``block`` times in a row (order rotating
    round to round) and keeps the times of all but the first ``settle`` calls
    of the block, which refill the cache another callable evicted. ``block=1,
    settle=0`` interleaves single calls: every call pays for those evictions.
    """
    if not 0 <= settle < block:
        raise ValueError(f"settle must be in [0, block), got settle={settle}, block={block}")
    names = list(runs)
    for name in names:
        for _ in range(warmup):
            runs[name]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            run = runs[name]
            for i in range(block):
                t0 = time.perf_counter()
                run()
                if i >= settle:
                    samples[name].append(time.perf_counter() - t0)
    return {n: float(np.median(s)) for n, s in samples.items()}


def bench_size(
    obs_dim: int,
    hidden: Sequence[int],
    n_out: int,
    batches: Sequence[int],
    rounds: int,
    block: int,
    contended: bool,
) -> None:
    """Build every variant of one network and print its accuracy and latency table."""
    spec = common_pb2.NetworkSpec(
        kind=DQN_MLP.name, obs_dim=obs_dim, hidden_sizes=list(hidden), output_dim=n_out
    )
    weights = torch_like_weights(spec)
    fp32 = build_onnx(spec, weights)
    calib = np.random.default_rng(1).standard_normal((256, obs_dim)).astype(np.float32)
    variants = [Variant("fp32", fp32.SerializeToString(), [])]
    for method in ("dynamic", "static_qdq"):
        for per_channel in (False, True):
            t0 = time.perf_counter()
            data = quantize_int8(fp32, method, calib, per_channel=per_channel)
            build_ms = 1000 * (time.perf_counter() - t0)
            name = f"{method}{'/pc' if per_channel else ''}"
            variants.append(Variant(name, data, []))
            print(f"  built {name} in {build_ms:.0f} ms")
    for v in variants:
        v.ops = optimized_ops(v.model)
    sessions = {v.name: make_session(v.model) for v in variants}
    ref = sessions["fp32"].run(None, {OBS_INPUT: calib})[0]
    label = f"obs {obs_dim}, hidden {'x'.join(map(str, hidden))}, {n_out} outputs"
    print(f"\n{label}")
    print(f"  {'variant':<14}{'bytes':>11}  {'max_abs_err':>11} {'agree':>6}  ops")
    for v in variants:
        out = sessions[v.name].run(None, {OBS_INPUT: calib})[0]
        err = float(np.abs(out - ref).max())
        agree = float((out.argmax(1) == ref.argmax(1)).mean())
        print(f"  {v.name:<14}{len(v.model):>11}  {err:>11.2e} {agree:>6.3f}  {','.join(v.ops)}")
    floor = make_session(identity_model(obs_dim))
    settle = min(5, block - 1)
    # (label, block, settle, rounds): contended gets as many timed calls as hot.
    modes = [("hot", block, settle, rounds)]
    if contended:
        modes.append(("contended", 1, 0, rounds * (block - settle)))
    for batch in batches:
        obs = calib[:batch].copy()
        runs: dict[str, Callable[[], object]] = {
            name: functools.partial(sess.run, None, {OBS_INPUT: obs})
            for name, sess in sessions.items()
        }
        runs["floor"] = functools.partial(floor.run, None, {OBS_INPUT: obs})
        for mode, blk, skip, n_rounds in modes:
            med = time_interleaved(runs, n_rounds, block=blk, settle=skip)
            base = med["fp32"]
            cells = "  ".join(
                f"{n} {1e6 * t:.1f}us" + ("" if n == "floor" else f" x{base / t:.2f}")
                for n, t in med.items()
            )
            print(f"  batch {batch:>3} {mode:<9}: {cells}")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark table (sizes as 'HxH' lists, obs/outputs pairs as 'O:A')."""
    parser = argparse.ArgumentParser(prog="python -m services.quantizer.bench")
    parser.add_argument("--sizes", default="64x64,256x256,2048x2048x2048")
    parser.add_argument("--io", default="4:2,24:6", help="obs_dim:outputs pairs")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument(
        "--rounds", type=int, default=30, help="rounds; each times block-5 calls per variant"
    )
    parser.add_argument("--block", type=int, default=25, help="calls per variant in a row")
    parser.add_argument(
        "--contended",
        action="store_true",
        help="also time single calls interleaved across variants (weights evicted per call)",
    )
    args = parser.parse_args(argv)
    if args.block < 2:
        parser.error(
            f"--block must be at least 2 (the first call of a block is discarded), got {args.block}"
        )
    batches = [int(b) for b in args.batches.split(",")]
    for io in args.io.split(","):
        obs_dim, n_out = (int(x) for x in io.split(":"))
        for size in args.sizes.split(","):
            hidden = [int(h) for h in size.split("x")]
            bench_size(obs_dim, hidden, n_out, batches, args.rounds, args.block, args.contended)


if __name__ == "__main__":
    main()
