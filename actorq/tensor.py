"""Numpy arrays <-> ``actorq.v1.Tensor``: dtype + shape + raw bytes.

Decoding is one ``np.frombuffer`` call (no per-element Python work) and it is
strict: a tensor whose byte length does not match its dtype and shape is an
error that names the tensor, never a silently reshaped array.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from actorq.v1 import common_pb2

_TO_NP: dict[int, np.dtype] = {
    common_pb2.FLOAT32: np.dtype("<f4"),
    common_pb2.FLOAT64: np.dtype("<f8"),
    common_pb2.INT32: np.dtype("<i4"),
    common_pb2.INT64: np.dtype("<i8"),
    common_pb2.UINT8: np.dtype("u1"),
    common_pb2.INT8: np.dtype("i1"),
    common_pb2.BOOL: np.dtype("?"),
    common_pb2.FLOAT16: np.dtype("<f2"),
}
_FROM_NP: dict[np.dtype, int] = {v.newbyteorder("="): k for k, v in _TO_NP.items()}

MAX_TENSOR_DIMS = 8


class TensorError(ValueError):
    """A tensor message that cannot be decoded as it claims to be."""


def dtype_name(dtype: int) -> str:
    """Wire dtype enum value -> its name (for error messages)."""
    try:
        return common_pb2.DType.Name(dtype)
    except ValueError:
        return f"<unknown dtype {dtype}>"


def to_proto(array: np.ndarray, name: str = "") -> common_pb2.Tensor:
    """Encode an array (any byte order; C-contiguous copy made if needed)."""
    arr = np.asarray(array)
    key = arr.dtype.newbyteorder("=") if arr.dtype.byteorder not in ("|",) else arr.dtype
    wire = _FROM_NP.get(key)
    if wire is None:
        raise TensorError(f"tensor {name!r}: dtype {arr.dtype} cannot be sent")
    little = arr.astype(_TO_NP[wire], copy=False)
    return common_pb2.Tensor(
        name=name,
        dtype=wire,  # type: ignore[arg-type]
        shape=list(arr.shape),
        data=np.ascontiguousarray(little).tobytes(),
    )


def from_proto(tensor: common_pb2.Tensor, *, writable: bool = False) -> np.ndarray:
    """Decode a tensor; raises TensorError naming what is wrong.

    The result is a read-only view of the message bytes unless ``writable``.
    """
    label = tensor.name or "<unnamed>"
    np_dtype = _TO_NP.get(tensor.dtype)
    if np_dtype is None:
        raise TensorError(f"tensor {label!r}: unsupported dtype {dtype_name(tensor.dtype)}")
    shape = tuple(int(d) for d in tensor.shape)
    if len(shape) > MAX_TENSOR_DIMS:
        raise TensorError(f"tensor {label!r}: {len(shape)} dimensions, at most {MAX_TENSOR_DIMS}")
    if any(d < 0 for d in shape):
        raise TensorError(f"tensor {label!r}: negative dimension in shape {list(shape)}")
    expected = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
    if len(tensor.data) != expected:
        raise TensorError(
            f"tensor {label!r}: {len(tensor.data)} bytes of data, but dtype "
            f"{dtype_name(tensor.dtype)} and shape {list(shape)} need {expected}"
        )
    arr = np.frombuffer(tensor.data, dtype=np_dtype).reshape(shape)
    arr = arr.astype(np_dtype.newbyteorder("="), copy=writable)
    return arr


def split_parts(
    array: np.ndarray, name: str, part_bytes: int
) -> Iterator[tuple[common_pb2.Tensor, int]]:
    """Yield (tensor slice, byte offset) pieces of at most part_bytes each.

    Each piece repeats name/dtype/shape so the receiver can check it alone.
    Used to stream blobs larger than one gRPC message (paper-size policies).
    """
    whole = to_proto(array, name)
    data = whole.data
    if not data:
        yield whole, 0
        return
    for offset in range(0, len(data), part_bytes):
        piece = common_pb2.Tensor(
            name=name, dtype=whole.dtype, shape=whole.shape, data=data[offset : offset + part_bytes]
        )
        yield piece, offset


def expect(array: np.ndarray, name: str, *, dtypes: Sequence[str], ndim: int | None = None) -> None:
    """Check an already decoded array's dtype family and rank; TensorError otherwise."""
    if array.dtype.name not in dtypes:
        raise TensorError(f"{name}: dtype {array.dtype.name}, expected one of {list(dtypes)}")
    if ndim is not None and array.ndim != ndim:
        raise TensorError(
            f"{name}: {array.ndim} dimensions (shape {list(array.shape)}), expected {ndim}"
        )
