"""``actorq export RUN --precision int8 --out policy.onnx``: one policy file to deploy.

Copies a run's best (or latest) policy of one precision to ``--out`` and its
model card beside it (``policy.json``), after checking that the card's sha256 is
the file's. The file needs only onnxruntime and numpy to run (README: "Your
trained policy"). An existing ``--out`` is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from actorq.network import PRECISIONS
from commands.train.policy import ROLES, PolicyFileError, locate, write_atomic


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """``actorq export``'s flags."""
    p = argparse.ArgumentParser(
        prog="actorq export",
        description="Copy a run's trained policy (.onnx + model card) to one file to deploy.",
    )
    p.add_argument("run", type=Path, help="run directory, its policy/ folder, or one .onnx")
    p.add_argument("--precision", choices=PRECISIONS, help="default: the run's precision")
    p.add_argument("--policy", choices=ROLES, default="best", help="best (default) or latest")
    p.add_argument("--out", type=Path, default=Path("policy.onnx"), help="the .onnx to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return p.parse_args(list(argv))


def export(run: Path, out: Path, precision: str | None, role: str, overwrite: bool) -> str:
    """Copy the policy and its card; returns what was done, in one line."""
    if out.suffix != ".onnx":
        raise PolicyFileError(f"--out {out}: give a file name ending in .onnx")
    card_out = out.with_suffix(".json")
    if not overwrite and (existing := [p for p in (out, card_out) if p.exists()]):
        raise PolicyFileError(
            f"{existing[0]} already exists; give another --out or add --overwrite to replace it"
        )
    if not out.parent.is_dir():
        raise PolicyFileError(f"--out {out}: folder {out.parent} does not exist")
    found = locate(run, precision, role if not run.is_file() else None)
    data = found.path.read_bytes()
    card = found.card
    if card is not None and card.get("sha256") != hashlib.sha256(data).hexdigest():
        raise PolicyFileError(
            f"{found.path} does not match its model card (sha256 differs): the run may be "
            "writing it right now; try again"
        )
    write_atomic(out, data)
    what = f"{found.path} -> {out}"
    if card is not None:
        write_atomic(card_out, (json.dumps({**card, "file": out.name}, indent=2) + "\n").encode())
        evaluation = card.get("evaluation") or {}
        score = (
            f", greedy return {evaluation['mean_return']:.2f} over {evaluation['episodes']} episodes"
            if evaluation
            else ""
        )
        what = (
            f"{card.get('role')} policy v{card.get('policy_version')} ({card.get('precision')}, "
            f"{card.get('env')}{score}): {what} and {card_out.name}"
        )
    return what


def main(argv: Sequence[str]) -> int:
    """``actorq export ...``: 0 when written, 2 for a path it cannot use."""
    ns = parse_args(argv)
    try:
        print(export(ns.run, ns.out, ns.precision, ns.policy, ns.overwrite))
    except (PolicyFileError, OSError) as err:
        print(f"actorq export: {err}", file=sys.stderr)
        return 2
    return 0
