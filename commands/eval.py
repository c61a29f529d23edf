"""``actorq eval PATH``: greedy episodes with a trained policy, onnxruntime alone.

PATH is a run directory, its ``policy/`` folder or one ``.onnx`` file. No
service runs and torch is never imported: the same ``OnnxPolicy`` and greedy
loop as the launcher's evaluator, so with the model card's seed and episode
count (the defaults) the mean is the one the card reports. ``--video FILE.mp4``
records the episodes (see ``commands.video``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actorq.config import ConfigError
from actorq.envs import make_env
from actorq.network import PRECISIONS
from commands.train.policy import ROLES, PolicyFile, PolicyFileError, locate

DEFAULT_EPISODES = 10


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """``actorq eval``'s flags."""
    p = argparse.ArgumentParser(
        prog="actorq eval",
        description="Run greedy episodes with a trained policy (onnxruntime only, no services).",
    )
    p.add_argument("path", type=Path, help="run directory, its policy/ folder, or one .onnx")
    p.add_argument(
        "--episodes", type=int, help="episodes (default: the model card's evaluation, else 10)"
    )
    p.add_argument(
        "--precision", choices=PRECISIONS, help="which file of a folder (default: the run's)"
    )
    p.add_argument("--policy", choices=ROLES, help="best (default) or latest version of a folder")
    p.add_argument(
        "--seed", type=int, help="episode i resets with SEED + i (default: the card's evaluation)"
    )
    p.add_argument("--env", help="env id (default: the model card's env)")
    p.add_argument("--video", type=Path, metavar="FILE.mp4", help="record the episodes to FILE")
    return p.parse_args(list(argv))


def settings(ns: argparse.Namespace, found: PolicyFile) -> tuple[str, int, int]:
    """(env, episodes, seed): the flags, else the model card's, else defaults."""
    card = found.card or {}
    evaluation = card.get("evaluation") or {}
    env = ns.env or card.get("env")
    if not env:
        raise ConfigError(f"{found.path} has no model card naming its env; give --env ENV_ID")
    episodes = ns.episodes if ns.episodes is not None else evaluation.get("episodes")
    episodes = int(episodes or DEFAULT_EPISODES)
    if episodes < 1:
        raise ConfigError(f"--episodes {episodes}: need at least one episode")
    seed = ns.seed if ns.seed is not None else int(evaluation.get("seed", 0))
    return str(env), episodes, seed


def report(found: PolicyFile, env: str, seed: int, result: Any) -> str:
    """What ``actorq eval`` prints: the file, the returns, the episode lengths, the card's score."""
    card = found.card or {}
    returns = result.returns
    std = statistics.pstdev(returns) if len(returns) > 1 else 0.0
    head = f"{found.path}"
    if card:
        head += f" (v{card.get('policy_version')}, {card.get('precision')}, {card.get('algo')})"
    lines = [
        f"{head} on {env}: {len(returns)} greedy episodes, seeds {seed}..{seed + len(returns) - 1}",
        f"return  mean {result.mean:.2f}  std {std:.2f}  min {min(returns):.2f}  "
        f"max {max(returns):.2f}",
        f"episode lengths  {' '.join(str(n) for n in result.lengths)}",
    ]
    evaluation = card.get("evaluation")
    if evaluation:
        lines.append(
            f"the run's evaluation of this version: {evaluation['mean_return']:.2f} over "
            f"{evaluation['episodes']} episodes (seed {evaluation['seed']})"
        )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    """``actorq eval ...``: 0 after the episodes ran, 2 for a path or setting it cannot use."""
    ns = parse_args(argv)
    # Imported here, so that `actorq eval --help` answers at once.
    from commands import video
    from services.actor.evaluate import evaluate
    from services.actor.policy import OnnxPolicy, PolicyError

    try:
        found = locate(ns.path, ns.precision, ns.policy)
        env, episodes, seed = settings(ns, found)
        card = found.card or {}
        policy = OnnxPolicy(
            found.path.read_bytes(),
            int(card.get("policy_version", 0)),
            str(card.get("precision", ns.precision or "")),
        )
        recorder = video.Recorder(ns.video, env) if ns.video else None
        result = evaluate(policy, env, episodes, seed, make=recorder.make if recorder else make_env)
        if recorder is not None:
            recorder.write()
    except (PolicyFileError, PolicyError, ConfigError, video.VideoError, OSError) as err:
        print(f"actorq eval: {err}", file=sys.stderr)
        return 2
    print(report(found, env, seed, result))
    if recorder is not None:
        print(f"video: {ns.video} ({recorder.frames_written} frames)")
    return 0
