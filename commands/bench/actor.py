"""`actorq bench actor`: actor inference and step micro-benchmark, fp32 vs int8.

For DQN MLPs with three hidden layers of width 64, 256, 1024 and 2048 (obs and
actions of the env, CartPole-v1 by default) it times, in one run:

- onnxruntime fp32 and int8 (the quantizer's default method): what our actors run;
- PyTorch fp32 and PyTorch dynamic int8 (``torch.ao.quantization.quantize_dynamic``
  on Linear layers, ``torch.set_num_threads(1)``): the published system's actor;

at batch 1 and 16 (one ``run`` of obs -> Q-values), and one actor step at
batch 1 (greedy act on the observation, then ``env.step``; the ONNX policies
use ``OnnxPolicy.act``, the actor's own hot path). Everything runs on one
thread, as an actor does.

Timing reuses the quantizer benchmark's harness
(``services.quantizer.bench.time_interleaved``): variants are interleaved in
blocks so each keeps its weights in cache like an actor running one model, and
rotate order each round so machine drift hits all alike. Latency is the
median over all timed calls.

This benchmark imports torch; the actor service never does.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from actorq.config import ConfigError
from actorq.envs import env_info, flat_obs, make_env
from actorq.v1 import common_pb2
from commands.machine import describe, machine_info
from services.actor.policy import OnnxPolicy
from services.quantizer.bench import time_interleaved, torch_like_weights
from services.quantizer.config import QuantizerConfig
from services.quantizer.graph import bias_name, build_onnx, weight_name
from services.quantizer.quantize import quantize_int8, synthetic_calibration

WIDTHS = (64, 256, 1024, 2048)
BATCHES = (1, 16)
DEPTH = 3
VARIANTS = ("ort_fp32", "ort_int8", "torch_fp32", "torch_int8")
DEFAULT_OUT = "runs/bench-actor.json"


def _torch() -> Any:
    """torch with one intra-op thread, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    return torch


def torch_models(torch: Any, weights: dict[str, np.ndarray], layers: int) -> tuple[Any, Any]:
    """The same MLP as an fp32 torch module and its dynamic-int8 twin (Linear layers)."""
    from torch import nn

    modules: list[Any] = []
    for i in range(layers):
        w = weights[weight_name(i)]
        linear = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w))
            linear.bias.copy_(torch.from_numpy(weights[bias_name(i)]))
        modules.append(linear)
        if i < layers - 1:
            modules.append(nn.ReLU())
    fp32 = nn.Sequential(*modules).eval()
    with warnings.catch_warnings():
        # torch.ao.quantization warns that it is deprecated; it is still the
        # API the published actor used, and what we compare against.
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        int8 = quantize_dynamic(fp32, {nn.Linear}, dtype=torch.qint8).eval()
    return fp32, int8


def _torch_bytes(torch: Any, model: Any) -> int:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(model.state_dict(), buf)
    return len(buf.getvalue())


class Width:
    """Every variant of one network width, built once."""

    def __init__(
        self, width: int, obs_dim: int, num_actions: int, quant: QuantizerConfig, torch: Any
    ) -> None:
        spec = common_pb2.NetworkSpec(
            kind="dqn_mlp", obs_dim=obs_dim, hidden_sizes=[width] * DEPTH, output_dim=num_actions
        )
        weights = torch_like_weights(spec)
        fp32_model = build_onnx(spec, weights)
        self.width = width
        self.calib = synthetic_calibration(obs_dim, 256)
        self.onnx = {
            "ort_fp32": fp32_model.SerializeToString(),
            # Built as the quantizer service builds it, from the same config.
            "ort_int8": quantize_int8(
                fp32_model, quant.int8_method, self.calib, **quant.int8_options()
            ),
        }
        self.policies = {
            name: OnnxPolicy(data, 1, name.removeprefix("ort_")) for name, data in self.onnx.items()
        }
        self.torch = torch
        self.modules: dict[str, Any] = {}
        if torch is not None:
            fp32, int8 = torch_models(torch, weights, DEPTH + 1)
            self.modules = {"torch_fp32": fp32, "torch_int8": int8}

    def sizes(self) -> dict[str, int]:
        """Serialized model bytes of each variant."""
        out = {k: len(v) for k, v in self.onnx.items()}
        for name, module in self.modules.items():
            out[name] = _torch_bytes(self.torch, module)
        return out

    def q_values(self, name: str, obs: np.ndarray) -> np.ndarray:
        """Q-values of one variant (numpy in, numpy out)."""
        if name in self.policies:
            return self.policies[name].q_values(obs)
        with self.torch.inference_mode():
            out: np.ndarray = self.modules[name](self.torch.from_numpy(obs)).numpy()
        return out

    def accuracy(self) -> dict[str, dict[str, float]]:
        """Each int8 variant against its fp32 source on the calibration batch."""
        out = {}
        for fp32, int8 in (("ort_fp32", "ort_int8"), ("torch_fp32", "torch_int8")):
            if int8 not in self.policies and int8 not in self.modules:
                continue
            ref, q = self.q_values(fp32, self.calib), self.q_values(int8, self.calib)
            out[int8] = {
                "max_abs_err": float(np.abs(q - ref).max()),
                "action_agreement": float((q.argmax(1) == ref.argmax(1)).mean()),
            }
        return out

    def inference_calls(self, obs: np.ndarray) -> dict[str, Callable[[], object]]:
        """One obs batch -> Q-values call per variant (numpy in and out, as an actor)."""
        calls: dict[str, Callable[[], object]] = {}
        for name, policy in self.policies.items():
            calls[name] = functools.partial(policy.session.run, None, {policy.input_name: obs})
        torch = self.torch
        for name, module in self.modules.items():

            def call(m: Any = module) -> object:
                with torch.inference_mode():
                    return m(torch.from_numpy(obs)).numpy()

            calls[name] = call
        return calls

    def step_calls(self, env_id: str, seed: int) -> dict[str, Callable[[], object]]:
        """One actor step per variant: greedy act on the current obs, then env.step."""
        calls: dict[str, Callable[[], object]] = {}
        for name in [*self.policies, *self.modules]:
            env, _ = make_env(env_id)
            obs0, _ = env.reset(seed=seed)
            calls[name] = _Stepper(env, flat_obs(obs0), self._act_fn(name), seed)
        env, _ = make_env(env_id)
        obs0, _ = env.reset(seed=seed)
        calls["env_only"] = _Stepper(env, flat_obs(obs0), lambda _obs: 0, seed)
        return calls

    def _act_fn(self, name: str) -> Callable[[np.ndarray], int]:
        if name in self.policies:
            return self.policies[name].act
        torch, module = self.torch, self.modules[name]

        def act(obs: np.ndarray) -> int:
            with torch.inference_mode():
                return int(module(torch.from_numpy(obs).unsqueeze(0)).argmax())

        return act


class _Stepper:
    """One actor step per call: greedy act on the current obs, env.step, reset at episode end."""

    def __init__(self, env: Any, obs: np.ndarray, act: Callable[[np.ndarray], int], seed: int):
        self.env, self.obs, self.act, self.seed, self.episode = env, obs, act, seed, 0

    def __call__(self) -> None:
        obs_next, _r, terminated, truncated, _ = self.env.step(self.act(self.obs))
        if terminated or truncated:
            self.episode += 1
            obs_next, _ = self.env.reset(seed=self.seed + self.episode)
        self.obs = flat_obs(obs_next)


def run(
    widths: Sequence[int] = WIDTHS,
    batches: Sequence[int] = BATCHES,
    env_id: str = "CartPole-v1",
    rounds: int = 30,
    block: int = 25,
    step: bool = True,
    torch_enabled: bool = True,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """Build and time every variant; returns the JSON-able result."""
    torch = _torch() if torch_enabled else None
    info = env_info(env_id)
    if info.continuous:
        raise ConfigError(
            f"{env_id} has continuous actions and this benchmark times DQN networks "
            "(discrete actions): give a discrete env such as CartPole-v1 (a D4PG policy of "
            "the same widths multiplies the same matrices)"
        )
    quant = QuantizerConfig()
    method = quant.int8_method
    result: dict[str, Any] = {
        "env": env_id,
        "obs_dim": info.obs_dim,
        "num_actions": info.num_actions,
        "depth": DEPTH,
        "int8_method": method,
        "int8_options": quant.int8_options(),
        "torch_quantized_engine": torch.backends.quantized.engine if torch is not None else None,
        "threads": 1,
        "rounds": rounds,
        "block": block,
        "machine": machine_info(),
        "inference": [],
        "step": [],
        "models": [],
    }
    settle = min(5, block - 1)
    rng = np.random.default_rng(0)
    for width in widths:
        t0 = time.perf_counter()
        w = Width(width, info.obs_dim, info.num_actions, quant, torch)
        log(f"width {width}x{width}x{width}: built in {time.perf_counter() - t0:.1f} s; timing")
        result["models"].append({"width": width, "bytes": w.sizes(), "accuracy": w.accuracy()})
        for batch in batches:
            obs = rng.standard_normal((batch, info.obs_dim)).astype(np.float32)
            med = time_interleaved(w.inference_calls(obs), rounds, block=block, settle=settle)
            result["inference"].append(
                {"width": width, "batch": batch, "us": {k: 1e6 * v for k, v in med.items()}}
            )
        if step:
            med = time_interleaved(w.step_calls(env_id, 0), rounds, block=block, settle=settle)
            result["step"].append(
                {"width": width, "env": env_id, "us": {k: 1e6 * v for k, v in med.items()}}
            )
    return result


def _cell(us: dict[str, float], key: str) -> str:
    return f"{us[key]:.1f}" if key in us else "-"


def _ratio(us: dict[str, float], a: str, b: str) -> str:
    return f"{us[a] / us[b]:.2f}x" if a in us and b in us and us[b] > 0 else "-"


def table(result: dict[str, Any]) -> str:
    """The printed table: median us per call and the int8 speedups."""
    head = (
        f"{'width':>6} {'what':>9} | {'ort fp32':>9} {'ort int8':>9} {'torch fp32':>10} "
        f"{'torch int8':>10} | {'ort fp32/int8':>13} {'torch int8/ort int8':>19}"
    )
    lines = [
        f"actor micro-benchmark, median us per call, 1 thread; {result['env']} "
        f"(obs {result['obs_dim']}, {result['num_actions']} actions), {result['depth']} hidden "
        f"layers; int8: ours = onnxruntime {result['int8_method']}, torch = quantize_dynamic",
        f"machine: {describe(result['machine'])}; onnxruntime "
        f"{result['machine']['versions'].get('onnxruntime')}, torch "
        f"{result['machine']['versions'].get('torch')} (engine {result['torch_quantized_engine']})",
        head,
        "-" * len(head),
    ]
    rows = [(r["width"], f"batch {r['batch']}", r["us"]) for r in result["inference"]]
    rows += [(r["width"], "step", r["us"]) for r in result["step"]]
    rows.sort(key=lambda r: (r[0], r[1] == "step", r[1]))
    for width, what, us in rows:
        lines.append(
            f"{width:>6} {what:>9} | {_cell(us, 'ort_fp32'):>9} {_cell(us, 'ort_int8'):>9} "
            f"{_cell(us, 'torch_fp32'):>10} {_cell(us, 'torch_int8'):>10} | "
            f"{_ratio(us, 'ort_fp32', 'ort_int8'):>13} {_ratio(us, 'torch_int8', 'ort_int8'):>19}"
            + (f"   (env step alone {us['env_only']:.1f})" if "env_only" in us else "")
        )
    lines.append("model bytes (ort fp32 / ort int8 / torch fp32 / torch int8) and int8 accuracy:")
    for m in result["models"]:
        b = m["bytes"]
        acc = ", ".join(
            f"{k} max|err| {v['max_abs_err']:.2e} agree {v['action_agreement']:.3f}"
            for k, v in m["accuracy"].items()
        )
        sizes = " / ".join(str(b.get(k, "-")) for k in VARIANTS)
        lines.append(f"{m['width']:>6}: {sizes}; {acc}")
    return "\n".join(lines)


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(
            f"actorq bench actor: {flag} {text!r}: give comma-separated integers"
        ) from None
    if not values or any(v < 1 for v in values):
        raise SystemExit(f"actorq bench actor: {flag} {text!r}: give positive integers")
    return values


def main(argv: Sequence[str]) -> int:
    """`actorq bench actor [--widths ...] [--batches ...] [--out FILE]`."""
    p = argparse.ArgumentParser(prog="actorq bench actor", description=__doc__.split("\n")[0])
    p.add_argument(
        "--widths", default=",".join(map(str, WIDTHS)), help="hidden widths (3 layers each)"
    )
    p.add_argument("--batches", default=",".join(map(str, BATCHES)), help="inference batch sizes")
    p.add_argument(
        "--env", default="CartPole-v1", help="env whose obs/actions size the nets and steps"
    )
    p.add_argument(
        "--rounds", type=int, default=30, help="rounds; each times block-5 calls per variant"
    )
    p.add_argument("--block", type=int, default=25, help="calls per variant in a row (>= 2)")
    p.add_argument("--no-step", action="store_true", help="skip the env-step benchmark")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch variants")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"JSON result (default {DEFAULT_OUT})")
    args = p.parse_args(list(argv))
    if args.block < 2 or args.rounds < 1:
        p.error(f"--block must be >= 2 and --rounds >= 1, got {args.block} and {args.rounds}")
    try:
        result = run(
            _ints(args.widths, "--widths"),
            _ints(args.batches, "--batches"),
            args.env,
            args.rounds,
            args.block,
            step=not args.no_step,
            torch_enabled=not args.no_torch,
        )
    except ConfigError as err:  # the env: unknown, or with continuous actions
        raise SystemExit(f"actorq bench actor: {err}") from None
    print(table(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written: {out}")
    return 0
