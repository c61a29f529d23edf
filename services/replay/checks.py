"""Checks on what callers hand the replay, before any lock or wait: pure functions.

``validate_chunk`` turns one chunk of columns into a ``Chunk`` or says which
field is wrong; ``check_insert`` does it for a whole Insert; the others check
a chunk's agreement with the table's signature, a priority update, and
whether a batch fits in one message. Both tables (memory, Redis) call them,
so a request is refused with the same words whichever store serves it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from services.replay.errors import BatchTooLargeError, InvalidChunkError, TooManyTransitionsError
from services.replay.store import FIELDS, Signature

_FLOAT_FIELDS = ("obs", "reward", "discount", "next_obs")


@dataclass(frozen=True)
class Chunk:
    """A validated chunk: N >= 1 transitions, columnar, checked dtypes and values."""

    columns: Mapping[str, np.ndarray]
    size: int


def validate_chunk(columns: Mapping[str, np.ndarray | None], index: int = 0) -> Chunk:
    """Check one chunk; InvalidChunkError naming chunk index, field and problem.

    Rules: all five fields present; each has the same leading N >= 1;
    obs/next_obs float32 with equal shapes; reward/discount float32 [N];
    action int64 [N] (discrete) or float32 [N, A] (continuous); float values
    finite; discount in [0, 1].
    """
    where = f"chunk {index}: "
    missing = [name for name in FIELDS if columns.get(name) is None]
    if missing:
        raise InvalidChunkError(
            f"{where}{', '.join(missing)} missing; every chunk needs {', '.join(FIELDS)}"
        )
    cols = {name: cast(np.ndarray, columns[name]) for name in FIELDS}
    n, continuous = _check_layout(cols, where)
    _check_values(cols, where, continuous)
    return Chunk(cols, n)


def _check_layout(cols: Mapping[str, np.ndarray], where: str) -> tuple[int, bool]:
    """Shapes and dtypes of a chunk's five columns: (N, whether actions are continuous)."""
    obs = cols["obs"]
    if obs.ndim < 1 or obs.shape[0] < 1:
        raise InvalidChunkError(
            f"{where}obs has shape {list(obs.shape)}; a chunk needs at least one "
            "transition (leading dimension N >= 1)"
        )
    n = int(obs.shape[0])
    for name in FIELDS[1:]:
        arr = cols[name]
        if arr.ndim < 1 or arr.shape[0] != n:
            raise InvalidChunkError(
                f"{where}{name} has shape {list(arr.shape)} but obs has {n} rows; "
                "all five tensors need the same leading dimension N"
            )
    for name in _FLOAT_FIELDS:
        if cols[name].dtype != np.float32:
            raise InvalidChunkError(f"{where}{name} is {cols[name].dtype.name}, expected float32")
    if cols["next_obs"].shape != obs.shape:
        raise InvalidChunkError(
            f"{where}next_obs has shape {list(cols['next_obs'].shape)}, but obs has "
            f"{list(obs.shape)}; they must match"
        )
    for name in ("reward", "discount"):
        if cols[name].ndim != 1:
            raise InvalidChunkError(
                f"{where}{name} has shape {list(cols[name].shape)}, expected [{n}]"
            )
    action = cols["action"]
    discrete = action.dtype == np.int64 and action.ndim == 1
    continuous = action.dtype == np.float32 and action.ndim == 2 and action.shape[1] >= 1
    if not (discrete or continuous):
        raise InvalidChunkError(
            f"{where}action is {action.dtype.name} with shape {list(action.shape)}; expected "
            f"int64 [{n}] (discrete) or float32 [{n}, A] (continuous)"
        )
    return n, continuous


def _check_values(cols: Mapping[str, np.ndarray], where: str, continuous: bool) -> None:
    """Float values finite (continuous actions included), discounts in [0, 1]."""
    for name in (*_FLOAT_FIELDS, "action") if continuous else _FLOAT_FIELDS:
        finite = np.isfinite(cols[name])
        if not finite.all():
            row = int(np.argwhere(~finite)[0][0])
            raise InvalidChunkError(f"{where}{name} contains NaN or infinity (row {row})")
    discount = cols["discount"]
    outside = (discount < 0) | (discount > 1)
    if outside.any():
        row = int(np.argmax(outside))
        raise InvalidChunkError(
            f"{where}discount must be in [0, 1], row {row} is {float(discount[row]):g}"
        )


def check_insert(
    chunks: Sequence[Chunk | Mapping[str, np.ndarray | None]], max_insert_transitions: int
) -> tuple[list[Chunk], int]:
    """Validated chunks of one Insert and their transition count.

    InvalidChunkError (a bad chunk, or none), TooManyTransitionsError.
    """
    valid = [c if isinstance(c, Chunk) else validate_chunk(c, i) for i, c in enumerate(chunks)]
    if not valid:
        raise InvalidChunkError("the Insert carried no chunks; send at least one")
    total = sum(c.size for c in valid)
    if total > max_insert_transitions:
        raise TooManyTransitionsError(
            f"the Insert carries {total} transitions, more than max_insert_transitions "
            f"{max_insert_transitions}; split it into several Insert calls"
        )
    return valid, total


def check_chunks_agree(chunks: Sequence[Chunk], signature: Signature | None) -> Signature:
    """The signature the chunks share (the table's, or the first chunk's); SignatureError."""
    signature = signature or Signature.of(chunks[0].columns)
    for i, chunk in enumerate(chunks):
        signature.check(chunk.columns, f"chunk {i}: ")
    return signature


def check_priorities(keys: np.ndarray, priorities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated priority update with duplicate keys removed (the last one wins).

    ValueError if keys are not int64 [M] or priorities not finite,
    non-negative float32 [M].
    """
    if keys.dtype != np.int64 or keys.ndim != 1:
        raise ValueError(f"keys is {keys.dtype.name} {list(keys.shape)}, expected int64 [M]")
    if priorities.dtype != np.float32 or priorities.shape != keys.shape:
        raise ValueError(
            f"priorities is {priorities.dtype.name} {list(priorities.shape)}, expected "
            f"float32 {list(keys.shape)} (one per key)"
        )
    if not (np.isfinite(priorities).all() and (priorities >= 0).all()):
        raise ValueError("priorities must be finite and >= 0")
    # np.unique keeps the first occurrence: take it on the reversed arrays.
    unique, last = np.unique(keys[::-1], return_index=True)
    return unique, priorities[::-1][last]


def check_batch_bytes(
    batch_size: int, signature: Signature | None, max_batch_bytes: int | None
) -> None:
    """BatchTooLargeError if batch_size transitions would not fit in max_batch_bytes."""
    if max_batch_bytes is None or signature is None:
        return
    per = signature.transition_bytes
    if batch_size * per > max_batch_bytes:
        raise BatchTooLargeError(
            f"batch_size {batch_size} x {per} bytes per transition exceeds the "
            f"{max_batch_bytes} bytes a batch may take; use batch_size <= "
            f"{max(1, max_batch_bytes // per)}"
        )
