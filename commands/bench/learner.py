"""`actorq bench learner`: the learner service's updates/s against a bare update loop.

The ceiling is a bare PyTorch loop in this process: the algorithm's own update
(the learner's agent, same settings, device, torch threads and batch size) on
batches already in memory. The service is the real thing: ``actorq serve
learner`` sampling from a real replay (memory store, limiter off, pre-filled
with random transitions of the env's shapes) over gRPC, sending priorities
back, publishing to a real quantizer (which builds fp32 and int8 artifacts) and
checkpointing, exactly as in ``actorq train`` minus the actors.

The two never run at once: the learner process is frozen (SIGSTOP) while the
bare loop runs, and thawed (SIGCONT) for its own windows, which alternate with
the bare loop's ``--repeats`` times. Each side's rate is its median over the
windows; the ratio is service / bare (1.0: the service costs nothing on top).
Everything else the service does (replay, quantizer, publisher, priority
writer, prefetching) shares the machine's cores with the learner, as it does
in a run.

    actorq bench learner --algo dqn --preset paper --seconds 20 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from actorq.clients import LearnerClient, ReplayClient
from actorq.config import ConfigError
from actorq.rpc import channel
from commands import procs
from commands.machine import describe, machine_info
from commands.train.args import deep_merge, default_config
from services.learner.algorithms import ALGORITHMS, EnvSpaces, random_transitions

DEFAULT_ENVS = {"dqn": "CartPole-v1", "d4pg": "dmc:cartpole-balance"}
# The network sizes compared: "acme" is the embedded default of `actorq train`
# (Acme-sized), "paper" the published ActorQ policy (2048x2048x2048).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "dqn": {
        "acme": {},
        "paper": {"hidden_sizes": [2048, 2048, 2048], "lr": 1e-4},
    },
    "d4pg": {"acme": {"preset": "acme"}, "paper": {"preset": "paper"}},
}
FILL_TRANSITIONS = 20_000
CHUNK = 500


@dataclass
class LearnerBench:
    """One comparison: the service's and the bare loop's updates/s per window."""

    algo: str
    preset: str
    env: str
    device: str
    torch_threads: int
    batch_size: int
    network: str
    seconds: float
    service: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    # The machine's 1-minute load average when the windows began and ended: ratios
    # from a loaded machine are not comparable with a quiet one's.
    load: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        """Median service rate over median bare rate."""
        if not self.service or not self.bare or statistics.median(self.bare) <= 0:
            return None
        return statistics.median(self.service) / statistics.median(self.bare)

    def line(self) -> str:
        """One line with both rates and their ratio."""
        service = statistics.median(self.service) if self.service else float("nan")
        bare = statistics.median(self.bare) if self.bare else float("nan")
        ratio = self.ratio
        return (
            f"{self.algo} {self.preset} ({self.network}, batch {self.batch_size}) on "
            f"{self.device}, {self.torch_threads} torch thread(s): service {service:.2f} "
            f"updates/s, bare loop {bare:.2f} updates/s: "
            + (f"{ratio:.1%} of the bare loop" if ratio is not None else "no ratio")
            + (f"; load {self.load[0]:.2f} -> {self.load[-1]:.2f}" if self.load else "")
        )


def run_config(algo: str, preset: str, env: str, device: str, threads: int) -> dict[str, Any]:
    """The services' settings: the embedded default of the algorithm, the preset's
    network, replay's limiter off (nothing inserts while the learner runs)."""
    cfg = default_config(algo)
    cfg.pop("train", None)
    cfg = deep_merge(
        cfg,
        {
            "replay": {"samples_per_insert": 0.0, "min_size_to_sample": 1000},
            "learner": {
                "env": env,
                "algo": algo,
                "device": device,
                "torch_threads": threads,
                algo: PRESETS[algo][preset],
            },
        },
    )
    return cfg


def bare_rate(algo: str, cfg: dict[str, Any], spaces: EnvSpaces, seconds: float) -> float:
    """Updates/s of the algorithm's own update on in-memory batches (the ceiling)."""
    from actorq import config
    from services.learner.common import resolve_device
    from services.learner.config import LearnerConfig

    learner_cfg = config.load(LearnerConfig, env={}, flags=config.flatten(cfg["learner"]))
    algorithm = ALGORITHMS[algo]
    settings = algorithm.settings(learner_cfg)
    agent = algorithm.build(settings, spaces, 0, resolve_device(learner_cfg.device))
    rng = np.random.default_rng(1)
    batches = [random_transitions(spaces, settings.batch_size, rng) for _ in range(8)]
    weights = np.ones(settings.batch_size, np.float32)  # as a sampled batch brings them
    for b in batches[:2]:  # warm-up (allocator, kernels)
        agent.update(b, weights)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        agent.update(batches[n % len(batches)], weights)
        n += 1
    return n / (time.perf_counter() - started)


class ServiceUnderTest:
    """Replay (filled), quantizer and a learner process, whose learner can be frozen."""

    def __init__(self, cfg: dict[str, Any], spaces: EnvSpaces, workdir: Path) -> None:
        self.workdir = workdir
        ports = {name: procs.free_port() for name in ("replay", "quantizer", "learner")}
        cfg["learner"].update(
            replay_address=f"127.0.0.1:{ports['replay']}",
            quantizer_address=f"127.0.0.1:{ports['quantizer']}",
            checkpoint_dir=str(workdir / "checkpoints"),
        )
        (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
        flags = ["--config", str(workdir / "config.yaml")]
        env = {"ACTORQ_METRICS_PORT": "0"}
        logs = workdir / "logs"
        self.processes = [
            procs.start(name, flags, logs, port=ports[name], env=env)
            for name in ("replay", "quantizer")
        ]
        procs.wait_all_healthy(self.processes, 120)
        self._channels = [channel(f"127.0.0.1:{ports[n]}") for n in ("replay", "learner")]
        replay = ReplayClient(self._channels[0])
        rng = np.random.default_rng(0)
        for _ in range(FILL_TRANSITIONS // CHUNK):
            replay.insert([random_transitions(spaces, CHUNK, rng)], actor_id="bench")
        self.learner_proc = procs.start("learner", flags, logs, port=ports["learner"], env=env)
        self.processes.append(self.learner_proc)
        procs.wait_all_healthy(self.processes, 300)
        self.learner = LearnerClient(self._channels[1])

    def steps(self) -> int:
        status = self.learner.status()
        if status.state == "failed":
            raise RuntimeError(f"the learner failed: {status.error}")
        return int(status.learner_steps)

    def wait_training(self, timeout_s: float = 300.0) -> None:
        """Until the learner has made a few updates (it publishes and warms up first)."""
        deadline = time.monotonic() + timeout_s
        while self.steps() < 3:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the learner made no updates in {timeout_s:g}s; see {self.workdir}"
                )
            time.sleep(0.5)

    def rate(self, seconds: float) -> float:
        """Thaw the learner, measure its updates/s over ``seconds``, freeze it again."""
        os.kill(self.learner_proc.pid, signal.SIGCONT)
        time.sleep(1.0)  # let in-flight work (a publish, a checkpoint) settle
        s0, t0 = self.steps(), time.monotonic()
        time.sleep(seconds)
        s1, t1 = self.steps(), time.monotonic()
        os.kill(self.learner_proc.pid, signal.SIGSTOP)
        return (s1 - s0) / (t1 - t0)

    def close(self) -> None:
        os.kill(self.learner_proc.pid, signal.SIGCONT)
        for ch in self._channels:
            ch.close()
        procs.stop_all(self.processes)


def run(
    algo: str, preset: str, env: str, device: str, threads: int, seconds: float, repeats: int
) -> LearnerBench:
    """Alternate service and bare-loop windows ``repeats`` times."""
    import torch

    torch.set_num_threads(threads)
    cfg = run_config(algo, preset, env, device, threads)
    spaces = ALGORITHMS[algo].read_spaces(env)
    from actorq import config
    from services.learner.config import LearnerConfig

    learner_cfg = config.load(LearnerConfig, env={}, flags=config.flatten(cfg["learner"]))
    settings = ALGORITHMS[algo].settings(learner_cfg)
    result = LearnerBench(
        algo=algo,
        preset=preset,
        env=env,
        device=device,
        torch_threads=threads,
        batch_size=settings.batch_size,
        network=ALGORITHMS[algo].describe(settings, spaces),
        seconds=seconds,
        machine=machine_info(),
    )
    with tempfile.TemporaryDirectory(prefix="actorq-bench-learner-") as tmp:
        service = ServiceUnderTest(cfg, spaces, Path(tmp))
        try:
            service.wait_training()
            os.kill(service.learner_proc.pid, signal.SIGSTOP)
            result.load.append(os.getloadavg()[0])
            for i in range(repeats):
                result.bare.append(bare_rate(algo, cfg, spaces, seconds))
                result.service.append(service.rate(seconds))
                print(
                    f"[{i + 1}/{repeats}] bare {result.bare[-1]:.2f}/s, "
                    f"service {result.service[-1]:.2f}/s",
                    file=sys.stderr,
                    flush=True,
                )
            result.load.append(os.getloadavg()[0])
        finally:
            service.close()
    return result


def main(argv: Sequence[str]) -> int:
    """``actorq bench learner [--algo ...] [--preset ...] [--device ...]``."""
    p = argparse.ArgumentParser(prog="actorq bench learner", description=__doc__.split("\n")[0])
    p.add_argument("--algo", choices=sorted(ALGORITHMS), default="dqn")
    p.add_argument("--preset", choices=["acme", "paper"], default="acme")
    p.add_argument("--env", default=None, help="env whose shapes the networks take")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--torch-threads", type=int, default=1, help="torch threads on both sides (default 1)"
    )
    p.add_argument("--seconds", type=float, default=15.0, help="length of each window")
    p.add_argument("--repeats", type=int, default=3, help="windows per side, interleaved")
    p.add_argument("--out", default="", help="also write the result as JSON here")
    args = p.parse_args(list(argv))
    if args.seconds <= 0 or args.repeats < 1 or args.torch_threads < 1:
        p.error("--seconds must be > 0, --repeats and --torch-threads at least 1")
    env = args.env or DEFAULT_ENVS[args.algo]
    try:
        result = run(
            args.algo, args.preset, env, args.device, args.torch_threads, args.seconds, args.repeats
        )
    except ConfigError as err:
        print(f"actorq bench learner: {err}", file=sys.stderr)
        return 2
    print(describe(result.machine))
    print(result.line())
    if args.out:
        Path(args.out).write_text(json.dumps({**asdict(result), "ratio": result.ratio}, indent=2))
    return 0
