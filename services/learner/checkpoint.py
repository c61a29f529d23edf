"""Learner checkpoints: one file per directory, replaced atomically.

``save`` writes a temporary file in the same directory, fsyncs it and
``os.replace``s it over ``learner.pt``: a crash mid-write leaves the previous
checkpoint intact, so ``load_latest`` always finds a whole one (or none).
Only the latest is kept; it holds plain data and tensors, so it loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

FILENAME = "learner.pt"
_TMP_PREFIX = ".learner-"
_TMP_SUFFIX = ".tmp"


class CheckpointError(RuntimeError):
    """A checkpoint file that exists but cannot be read."""


def path_in(directory: str | Path) -> Path:
    """Where the checkpoint of ``directory`` lives."""
    return Path(directory) / FILENAME


def save(directory: str | Path, state: dict[str, Any]) -> Path:
    """Write state to DIR/learner.pt atomically (creating DIR); returns the path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(f"{_TMP_PREFIX}*{_TMP_SUFFIX}"):  # left by a crash mid-write
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        path = path_in(directory)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(directory)  # make the rename itself survive a power cut
    return path


def load_latest(directory: str | Path) -> dict[str, Any] | None:
    """The saved state, None when DIR holds no checkpoint, CheckpointError when unreadable."""
    path = path_in(directory)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); "
            "move it away to start from scratch"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds {type(state).__name__}, not a dict")
    return state


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories; the data is written
        pass
    finally:
        os.close(fd)
