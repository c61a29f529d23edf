"""Issue 16's side-by-side: `make run`'s runs beside SB3's peer script, as a table and a plot.

usage: python scripts/first_run_side_by_side.py DIR
  DIR holds actorq-s{SEED}/ (`make run`'s command with --seed SEED --out DIR/actorq-sSEED)
  and sb3_s{SEED}.json (../shared/peers/sb3_dqn.py --seed SEED --out DIR/sb3_sSEED.json),
  run interleaved per seed in one sitting. Writes DIR/side-by-side.md, .png and .svg.

ActorQ's times count from the command's start (start-up and evaluations included); SB3's
are its training time only (the peer script excludes evaluation).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

TARGET, HELD = 475.0, 3


def sb3_times(curve: list[dict[str, Any]]) -> tuple[float | None, float | None, int | None]:
    """SB3's first 475, the end of its first 3 evaluations in a row at 475, steps to first."""
    first = next((r for r in curve if r["mean_return"] >= TARGET), None)
    held = None
    for i in range(HELD - 1, len(curve)):
        if all(r["mean_return"] >= TARGET for r in curve[i - HELD + 1 : i + 1]):
            held = curve[i]["train_wall_s"]
            break
    return (first["train_wall_s"] if first else None, held, first["env_steps"] if first else None)


def fmt(values: list[float | None]) -> str:
    shown = " / ".join("never" if v is None else f"{v:.1f}" for v in values)
    got = [v for v in values if v is not None]
    med = f"{statistics.median(values):.1f}" if len(got) == len(values) else "n/a"  # type: ignore[type-var]
    return f"{shown}, **median {med}**"


def main(root: Path) -> None:
    seeds = sorted(int(p.name.split("-s")[1]) for p in root.glob("actorq-s*") if p.is_dir())
    aq = [json.loads((root / f"actorq-s{s}" / "summary.json").read_text()) for s in seeds]
    sb = [json.loads((root / f"sb3_s{s}.json").read_text()) for s in seeds]
    sb_t = [sb3_times(d["curve"]) for d in sb]
    rows = [
        "| seeds " + " / ".join(map(str, seeds)) + " | time to first 475 s | time to 475 held "
        "3 evaluations s | env steps to first 475 | start-up s | final return |",
        "|---|---:|---:|---:|---:|---:|",
        "| ActorQ `make run` (int8, 2 actors, from the command's start) | "
        + fmt([d["time_to_target_s"] for d in aq])
        + " | "
        + fmt([d["time_to_sustained_target_s"] for d in aq])
        + " | "
        + " / ".join(f"{d['env_steps_to_target'] / 1000:.1f}k" for d in aq)
        + " | "
        + " / ".join(f"{d['startup_s']:.1f}" for d in aq)
        + " | "
        + " / ".join(f"{d['eval']['int8']:.0f}" for d in aq)
        + " |",
        "| SB3 DQN, RL Zoo (training time only) | "
        + fmt([t[0] for t in sb_t])
        + " | "
        + fmt([t[1] for t in sb_t])
        + " | "
        + " / ".join("-" if t[2] is None else f"{t[2] / 1000:.1f}k" for t in sb_t)
        + " | "
        + " / ".join(f"{d['model_build_s']:.1f}" for d in sb)
        + " | "
        + " / ".join(f"{d['final_mean']:.0f}" for d in sb)
        + " |",
    ]
    (root / "side-by-side.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    plot(root, seeds, sb)


def plot(root: Path, seeds: list[int], sb: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(seeds), figsize=(4 * len(seeds), 3.4), sharey=True)
    for ax, seed, peer in zip(axes, seeds, sb, strict=True):
        lines = (root / f"actorq-s{seed}" / "evals.jsonl").read_text().splitlines()
        evals = [json.loads(line) for line in lines if line.strip()]
        ax.plot([e["t_s"] for e in evals], [e["mean_return"] for e in evals], ".-",
                label="ActorQ make run (incl. start-up, evals)")  # fmt: skip
        ax.plot([r["train_wall_s"] for r in peer["curve"]],
                [r["mean_return"] for r in peer["curve"]], "s--", label="SB3 (training time)")  # fmt: skip
        ax.axhline(TARGET, color="grey", lw=0.8)
        ax.set_title(f"CartPole-v1 DQN, seed {seed}")
        ax.set_xlabel("wall-clock s")
    axes[0].set_ylabel("greedy mean return (20 episodes)")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(root / f"side-by-side.{ext}", dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
