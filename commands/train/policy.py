"""``DIR/policy/``: the trained policy a run leaves behind, the product of the run.

Four ONNX files, each beside its JSON model card (same name, ``.json``):

    latest-int8.onnx  latest-fp32.onnx   the newest version the launcher evaluated
    best-int8.onnx    best-fp32.onnx     the version with the highest full greedy
                                         evaluation (every episode run) in the run's
                                         precision

The evaluator hands every artifact it evaluates (and its other-precision twin of
the same version) to ``PolicyDir.keep``, so the files are there while the run
goes on and after any stop: the target, a budget, Ctrl-C. Every file is written
to a temporary name and renamed over the old one (``os.replace``): a reader, or a
run killed half-way, never sees half a model. The ONNX file is replaced before
its card, and the card names the file's sha256, so a reader can tell a card
that belongs to the model beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import actorq
from actorq import network
from actorq.clients import FetchedModel
from commands.train.summary import EvalRecord

POLICY_DIR = "policy"
ROLES = ("best", "latest")
# Evaluations of version v use seed run_seed + EVAL_SEED_OFFSET + v, so a policy's
# evaluation differs from the training episodes and from other versions'.
EVAL_SEED_OFFSET = 10_000
CARD_FORMAT = 1


def eval_seed(run_seed: int, version: int) -> int:
    """The seed of the launcher's greedy evaluations of ``version`` (``actorq eval``'s default)."""
    return run_seed + EVAL_SEED_OFFSET + version


def file_name(role: str, precision: str, suffix: str = ".onnx") -> str:
    """``best-int8.onnx``: the file of a role (best, latest) and precision."""
    return f"{role}-{precision}{suffix}"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, whole.

    The bytes go to a hidden temporary file in the same directory (same file
    system, so the rename is atomic), are flushed to disk, and replace ``path``.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@dataclass
class Evaluation:
    """The greedy evaluation a model card reports: reproduce it with ``actorq eval``."""

    mean_return: float
    episodes: int
    seed: int  # episode i was reset with seed + i
    env_steps: int  # the run's env steps when it began
    t_s: float  # seconds into the run when it ended


def evaluation_of(record: EvalRecord, run_seed: int) -> Evaluation | None:
    """A card's evaluation from a full evaluation record (None when it stopped early:
    its mean covers only the episodes run, so it is no score)."""
    if record.stopped_early:
        return None
    return Evaluation(
        mean_return=record.mean_return,
        episodes=record.episodes,
        seed=eval_seed(run_seed, record.version),
        env_steps=record.env_steps,
        t_s=record.t_s,
    )


def spaces(spec: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(observation space, action space) of a NetworkSpec, as plain JSON."""
    obs = {"type": "box", "shape": [int(spec.obs_dim)], "dtype": "float32"}
    try:
        continuous = network.kind(spec.kind).continuous
    except ValueError:
        continuous = len(spec.action_low) > 0
    if not continuous:
        return obs, {"type": "discrete", "n": int(spec.output_dim), "from": "argmax of q_values"}
    return obs, {
        "type": "box",
        "shape": [int(spec.output_dim)],
        "low": [float(x) for x in spec.action_low],
        "high": [float(x) for x in spec.action_high],
        "from": "the action output",
    }


def output_name(kind: str) -> str:
    """The graph output of a network kind ('' for a kind this version does not know)."""
    return network.KINDS[kind].output if kind in network.KINDS else ""


def model_card(
    fetched: FetchedModel,
    role: str,
    run: Mapping[str, Any],
    evaluation: Evaluation | None,
) -> dict[str, Any]:
    """The JSON card of one policy file. ``run``: env, algo, precision (the run's), seed."""
    import onnxruntime

    art = fetched.artifact
    obs_space, action_space = spaces(art.network)
    quant = art.quantization
    return {
        "format": CARD_FORMAT,
        "file": file_name(role, art.precision),
        "role": role,
        "env": run["env"],
        "algo": run["algo"],
        "precision": art.precision,
        "run_precision": run["precision"],
        "run_seed": run["seed"],
        "policy_version": int(art.version),
        "learner_step": int(art.learner_step),
        "observation_space": obs_space,
        "action_space": action_space,
        "input": network.OBS_INPUT,
        "output": output_name(art.network.kind),
        "network": {
            "kind": art.network.kind,
            "hidden_sizes": [int(h) for h in art.network.hidden_sizes],
            "activation": art.network.activation,
            "layer_norm": bool(art.network.layer_norm),
        },
        "quantization": {
            "method": quant.method or ("none" if art.precision == "fp32" else ""),
            "max_abs_err": float(quant.max_abs_err),
            "action_agreement": float(quant.action_agreement),
            "calibration_samples": int(quant.calibration_samples),
            "calibration_source": quant.calibration_source,
        },
        "evaluation": asdict(evaluation) if evaluation is not None else None,
        "sha256": hashlib.sha256(fetched.data).hexdigest(),
        "size_bytes": len(fetched.data),
        "actorq_version": actorq.__version__,
        "onnxruntime_version": onnxruntime.__version__,
        "written_unix": round(time.time(), 3),
    }


def read_card(path: Path) -> dict[str, Any] | None:
    """A model card (the ``.json`` beside an ``.onnx``), None when missing or unreadable."""
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


class PolicyDir:
    """Keeps ``DIR/policy/`` up to date as the run's artifacts are evaluated.

    Thread-safe: the evaluator thread and the launcher's final evaluation both call
    ``keep``. A resumed run starts from the best evaluation the folder already holds.
    """

    def __init__(self, run_dir: Path, env: str, algo: str, precision: str, seed: int) -> None:
        self.dir = run_dir / POLICY_DIR
        remove_stale_temporaries(run_dir)
        self.run: dict[str, Any] = {"env": env, "algo": algo, "precision": precision, "seed": seed}
        self._lock = threading.Lock()
        self.best_version = 0
        self.best_return = float("-inf")
        best = read_card(self.dir / file_name("best", precision, ".json"))
        if best and best.get("evaluation"):
            self.best_version = int(best["policy_version"])
            self.best_return = float(best["evaluation"]["mean_return"])

    def keep(
        self, models: Mapping[str, FetchedModel], records: Mapping[str, EvalRecord]
    ) -> list[Path]:
        """Write the artifacts of one version (per precision) with their evaluations.

        Each becomes ``latest-PREC``; the run precision's full evaluation, if it beats
        the best so far, makes its version ``best`` (its twin too). A later call for
        the best version (the twin's own final evaluation) refreshes the best cards.
        Returns the files written.
        """
        written: list[Path] = []
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            own = records.get(self.run["precision"])
            score = evaluation_of(own, self.run["seed"]) if own is not None else None
            if own is not None and score is not None and score.mean_return > self.best_return:
                self.best_version, self.best_return = own.version, score.mean_return
            for precision, fetched in models.items():
                record = records.get(precision)
                evaluation = evaluation_of(record, self.run["seed"]) if record else None
                roles = ["latest"]
                if fetched.artifact.version == self.best_version:
                    roles.append("best")
                for role in roles:
                    written += self._write(role, fetched, evaluation)
        return written

    def _write(self, role: str, fetched: FetchedModel, evaluation: Evaluation | None) -> list[Path]:
        precision = fetched.artifact.precision
        onnx_path = self.dir / file_name(role, precision)
        card_path = self.dir / file_name(role, precision, ".json")
        old = read_card(card_path)
        if evaluation is None and old and old.get("policy_version") == fetched.artifact.version:
            # Same version, no new evaluation: keep the one the card already has.
            kept = old.get("evaluation")
            evaluation = Evaluation(**kept) if kept else None
        card = model_card(fetched, role, self.run, evaluation)
        write_atomic(onnx_path, fetched.data)
        write_atomic(card_path, (json.dumps(card, indent=2) + "\n").encode())
        return [onnx_path, card_path]


def remove_stale_temporaries(run_dir: Path) -> None:
    """Remove temporary files a killed run left in ``DIR/policy/`` (never a policy file)."""
    folder = run_dir / POLICY_DIR
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp-*"):
            with contextlib.suppress(OSError):
                tmp.unlink()


class PolicyFileError(ValueError):
    """A path that holds no policy file ``actorq eval``/``export`` can use (one sentence)."""


@dataclass
class PolicyFile:
    """One ``.onnx`` policy and its model card (None: a bare file without one)."""

    path: Path
    card: dict[str, Any] | None


def locate(path: Path, precision: str | None = None, role: str | None = None) -> PolicyFile:
    """The policy file ``path`` names: a run directory, its ``policy/`` folder or one ``.onnx``.

    In a folder: ``ROLE-PRECISION.onnx``, the run's precision and ``best`` unless
    given (``latest`` when no evaluation ran every episode, so there is no best).
    """
    if path.is_file():
        if path.suffix != ".onnx":
            raise PolicyFileError(f"{path} is not an .onnx file; give a run directory or a .onnx")
        return PolicyFile(path, read_card(path.with_suffix(".json")))
    if not path.is_dir():
        raise PolicyFileError(
            f"{path} does not exist; give a run directory, its policy/ or a .onnx"
        )
    folder = path / POLICY_DIR if (path / POLICY_DIR).is_dir() else path
    cards = {p.stem: c for p in sorted(folder.glob("*.json")) if (c := read_card(p)) is not None}
    if not any(folder.glob("*.onnx")):
        raise PolicyFileError(
            f"{path} holds no policy (no {POLICY_DIR}/*.onnx): give the directory of a run "
            "made by this version of actorq train, or one .onnx file"
        )
    if precision is None:
        precision = next(
            (str(c["run_precision"]) for c in cards.values() if c.get("run_precision")), "int8"
        )
    for candidate in [role] if role else list(ROLES):
        onnx = folder / file_name(candidate, precision)
        if onnx.is_file():
            return PolicyFile(onnx, cards.get(onnx.stem))
    have = ", ".join(sorted(p.name for p in folder.glob("*.onnx")))
    raise PolicyFileError(
        f"{folder} has no {file_name(role or 'best', precision)} (it has {have}); "
        "choose another --precision or --policy"
    )
