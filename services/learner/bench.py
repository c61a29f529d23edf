"""Learner updates per second, without transport: ``python -m services.learner.bench``.

Times ``DQN.update`` on random CartPole-shaped batches already in memory, so
the number is the update step's own ceiling (the service adds sampling over
gRPC on other threads/processes). Example, AMD EPYC (Zen 4), 1 torch thread:
64x64 batch 64 ~1400/s, 256x256 batch 64 ~775/s, batch 128 ~560/s,
2048x2048x2048 batch 256 ~4.2/s (7.5/s on 2 threads).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np
import torch

from actorq.transitions import Transitions
from services.learner.dqn import DQN
from services.learner.hyperparams import DQNConfig


def random_batches(
    count: int, batch_size: int, obs_dim: int, num_actions: int, seed: int = 0
) -> list[Transitions]:
    """count distinct random batches (so caches see new data every step)."""
    rng = np.random.default_rng(seed)
    return [
        Transitions(
            obs=rng.normal(size=(batch_size, obs_dim)).astype(np.float32),
            action=rng.integers(0, num_actions, batch_size).astype(np.int64),
            reward=rng.normal(size=batch_size).astype(np.float32),
            discount=np.full(batch_size, 0.97, np.float32),
            next_obs=rng.normal(size=(batch_size, obs_dim)).astype(np.float32),
        )
        for _ in range(count)
    ]


def updates_per_s(
    hidden_sizes: list[int],
    batch_size: int,
    seconds: float,
    obs_dim: int = 4,
    num_actions: int = 2,
) -> tuple[float, int]:
    """(updates per second, updates timed) after a short warm-up."""
    agent = DQN(obs_dim, num_actions, DQNConfig(hidden_sizes=hidden_sizes, batch_size=batch_size))
    batches = random_batches(8, batch_size, obs_dim, num_actions)
    for b in batches[:3]:
        agent.update(b)
    n = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        agent.update(batches[n % len(batches)])
        n += 1
    return n / (time.perf_counter() - started), n


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m services.learner.bench", description=__doc__)
    p.add_argument("--hidden-sizes", default="256,256", help="comma-separated widths")
    p.add_argument("--batch-size", type=int, default=64, help="transitions per update")
    p.add_argument("--seconds", type=float, default=5.0, help="time to measure for")
    p.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    hidden = [int(h) for h in args.hidden_sizes.split(",") if h.strip()]
    rate, n = updates_per_s(hidden, args.batch_size, args.seconds)
    print(
        f"hidden {hidden} batch {args.batch_size} threads {args.torch_threads}: "
        f"{rate:.1f} updates/s ({1000 / rate:.2f} ms/update, {n} timed)"
    )


if __name__ == "__main__":
    main()
