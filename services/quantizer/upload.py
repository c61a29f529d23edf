"""Reassemble a PublishWeights stream: one header, then TensorPart pieces.

Every check happens as pieces arrive, so a bad or oversized upload is refused
before it is buffered: a tensor's first piece declares its dtype and shape,
which must match the network spec, and its full size is counted against the
upload cap before its buffer is allocated. Pieces of one tensor must arrive in
order with contiguous offsets and repeat the same dtype and shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from actorq import tensor
from actorq.network import PRECISIONS
from actorq.v1 import common_pb2, quantizer_pb2
from services.quantizer import graph


class InvalidUploadError(ValueError):
    """An upload that breaks the PublishWeights contract; the message says how."""


class UploadTooLargeError(ValueError):
    """An upload bigger than the configured cap."""


@dataclass
class Upload:
    """A complete, checked upload: header fields plus decoded float32 weights."""

    header: quantizer_pb2.WeightsHeader
    precisions: list[str]
    weights: dict[str, np.ndarray]
    # float32 [B, obs_dim] or None when the learner sent none.
    calibration_obs: np.ndarray | None

    @property
    def policy_version(self) -> int:
        return int(self.header.policy_version)


@dataclass
class _Buffer:
    dtype: int
    shape: tuple[int, ...]
    data: bytearray
    received: int = 0


def _decode_calibration(header: quantizer_pb2.WeightsHeader, obs_dim: int) -> np.ndarray | None:
    if not header.HasField("calibration_obs"):
        return None
    try:
        obs = tensor.from_proto(header.calibration_obs)
    except tensor.TensorError as err:
        raise InvalidUploadError(f"header.calibration_obs: {err}") from err
    if obs.dtype != np.float32 or obs.ndim != 2 or obs.shape[1] != obs_dim or obs.shape[0] < 1:
        raise InvalidUploadError(
            f"header.calibration_obs must be float32 [rows >= 1, obs_dim={obs_dim}], "
            f"got {obs.dtype} {list(obs.shape)}"
        )
    if not np.isfinite(obs).all():
        raise InvalidUploadError("header.calibration_obs contains NaN or inf")
    return obs


class UploadAssembler:
    """Feed it the stream's messages with ``add``; ``finish`` returns the Upload.

    Raises InvalidUploadError / UploadTooLargeError (or graph.SpecError) at the
    first message that breaks the contract.
    """

    def __init__(self, precisions: Sequence[str], max_bytes: int) -> None:
        self._allowed = list(precisions)
        self._max_bytes = max_bytes
        self._header: quantizer_pb2.WeightsHeader | None = None
        self._precisions: list[str] = []
        self._calibration: np.ndarray | None = None
        self._expected: dict[str, tuple[int, ...]] = {}
        self._buffers: dict[str, _Buffer] = {}
        self._total = 0

    @property
    def header(self) -> quantizer_pb2.WeightsHeader | None:
        """The header once received (for logging and early version checks)."""
        return self._header

    def _count(self, nbytes: int, what: str) -> None:
        self._total += nbytes
        if self._total > self._max_bytes:
            raise UploadTooLargeError(
                f"upload exceeds max_upload_bytes={self._max_bytes}: {what} brings it to "
                f"{self._total} bytes"
            )

    def add(self, message: quantizer_pb2.WeightsUpload) -> None:
        """Take one stream message (header first, then tensor pieces)."""
        which = message.WhichOneof("part")
        if which == "header":
            self._add_header(message.header)
        elif which == "tensor":
            if self._header is None:
                raise InvalidUploadError(
                    "the first message of a PublishWeights stream must be the header; "
                    f"got a piece of tensor {message.tensor.tensor.name!r}"
                )
            self._add_part(message.tensor)
        else:
            raise InvalidUploadError("empty WeightsUpload message (neither header nor tensor)")

    def _add_header(self, header: quantizer_pb2.WeightsHeader) -> None:
        if self._header is not None:
            raise InvalidUploadError("a PublishWeights stream carries exactly one header; got two")
        self._count(header.ByteSize(), "the header")
        if header.policy_version <= 0:
            raise InvalidUploadError(
                f"header.policy_version must be positive, got {header.policy_version}"
            )
        if header.learner_step < 0:
            raise InvalidUploadError(f"header.learner_step must be >= 0, got {header.learner_step}")
        if not header.HasField("network"):
            raise InvalidUploadError("header.network is missing; the graph needs a NetworkSpec")
        self._expected = graph.expected_tensors(header.network)
        requested = list(header.precisions) or list(self._allowed)
        for p in requested:
            if p not in PRECISIONS:
                raise InvalidUploadError(
                    f"header.precisions: unknown precision {p!r}; supported: {list(PRECISIONS)}"
                )
            if p not in self._allowed:
                raise InvalidUploadError(
                    f"header.precisions: this quantizer does not build {p!r} "
                    f"(configured: {self._allowed})"
                )
        if len(set(requested)) != len(requested):
            raise InvalidUploadError(f"header.precisions {requested} lists a precision twice")
        self._precisions = requested
        self._calibration = _decode_calibration(header, int(header.network.obs_dim))
        self._header = header

    def _add_part(self, part: quantizer_pb2.TensorPart) -> None:
        piece = part.tensor
        name = piece.name
        shape = tuple(int(d) for d in piece.shape)
        buf = self._buffers.get(name)
        if buf is None:
            if name not in self._expected:
                kind = self._header.network.kind if self._header is not None else ""
                raise InvalidUploadError(
                    f"unexpected tensor {name!r} for network kind {kind!r}; "
                    f"expected {sorted(self._expected)}"
                )
            if piece.dtype != common_pb2.FLOAT32:
                raise InvalidUploadError(
                    f"tensor {name!r} has dtype {tensor.dtype_name(piece.dtype)}, expected FLOAT32"
                )
            if shape != self._expected[name]:
                raise InvalidUploadError(
                    f"tensor {name!r} has shape {list(shape)}, expected "
                    f"{list(self._expected[name])}"
                )
            nbytes = int(np.prod(shape, dtype=np.int64)) * 4
            # Counted before allocating, so a declared shape cannot make us allocate
            # past the cap.
            self._count(nbytes, f"tensor {name!r} ({nbytes} bytes)")
            buf = _Buffer(dtype=piece.dtype, shape=shape, data=bytearray(nbytes))
            self._buffers[name] = buf
        elif piece.dtype != buf.dtype or shape != buf.shape:
            raise InvalidUploadError(
                f"tensor {name!r}: a piece says {tensor.dtype_name(piece.dtype)} {list(shape)} "
                f"but its first piece said {tensor.dtype_name(buf.dtype)} {list(buf.shape)}"
            )
        if part.offset != buf.received:
            raise InvalidUploadError(
                f"tensor {name!r}: piece at offset {part.offset}, expected offset {buf.received} "
                "(pieces must be contiguous and in order)"
            )
        end = buf.received + len(piece.data)
        if end > len(buf.data):
            raise InvalidUploadError(
                f"tensor {name!r}: pieces carry {end} bytes, but dtype and shape need "
                f"{len(buf.data)}"
            )
        buf.data[buf.received : end] = piece.data
        buf.received = end

    def finish(self) -> Upload:
        """The assembled upload; InvalidUploadError if anything is missing or partial."""
        if self._header is None:
            raise InvalidUploadError("the PublishWeights stream was empty; it needs a header")
        incomplete = [
            f"{name!r} ({b.received} of {len(b.data)} bytes)"
            for name, b in self._buffers.items()
            if b.received != len(b.data)
        ]
        if incomplete:
            raise InvalidUploadError(f"incomplete tensors: {', '.join(incomplete)}")
        missing = [name for name in self._expected if name not in self._buffers]
        if missing:
            raise InvalidUploadError(
                f"missing tensors {missing} for network kind {self._header.network.kind!r}"
            )
        weights = {
            name: np.frombuffer(b.data, dtype=np.float32).reshape(b.shape)
            for name, b in self._buffers.items()
        }
        return Upload(
            header=self._header,
            precisions=self._precisions,
            weights=weights,
            calibration_obs=self._calibration,
        )


def assemble(
    messages: Iterable[quantizer_pb2.WeightsUpload], precisions: Sequence[str], max_bytes: int
) -> Upload:
    """Read a whole PublishWeights stream into an Upload (errors as UploadAssembler)."""
    assembler = UploadAssembler(precisions, max_bytes)
    for message in messages:
        assembler.add(message)
    return assembler.finish()
