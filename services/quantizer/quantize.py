"""FP32 ONNX model -> int8 ONNX model with ``onnxruntime.quantization``.

Two methods (see ``QuantizerConfig.int8_method`` for the measured trade-off):

* ``dynamic``: weights stored int8 (symmetric), activations quantized to uint8
  per call from their own range. Needs no calibration data; onnxruntime fuses
  each MatMul + Add into ``DynamicQuantizeMatMul`` (int8 GEMM, VNNI on x86).
* ``static_qdq``: weights int8 and activation ranges fixed from a calibration
  batch (MinMax), written as QuantizeLinear/DequantizeLinear pairs (QDQ
  format). Each MatMul + Add is first rewritten to one Gemm so onnxruntime
  fuses layer, bias and ReLU into a single ``QGemm`` (int32 bias, uint8
  activations from layer to layer): half the error of QLinearMatMul +
  QLinearAdd, which requantizes between the product and the bias.

Both keep weights QInt8 with uint8 activations: the u8s8 GEMM is the one
with an AVX-512 VNNI / AVX-VNNI kernel in onnxruntime's MLAS. QUInt8 weights
take the u8u8 path, measured 1.4x slower at batch 1 and 2.5x at batch 16.
Without VNNI (AVX2 only), the u8s8 kernel multiplies with VPMADDUBSW, whose
int16 pair sums saturate with full-range 8-bit weights: hence ``reduce_range``
(7-bit weights) by default, see ``QuantizerConfig.reduce_range``.

Calibration observations come from the learner (sampled from replay); without
them a seeded standard-normal batch stands in ("synthetic"): right for
unit-scale observations, a guess for others, which matters for static_qdq
(activation ranges) but not for dynamic (only the report uses it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from actorq.network import OBS_INPUT
from services.quantizer.config import INT8_METHODS

Int8Method = Literal["dynamic", "static_qdq"]
SYNTHETIC_SEED = 0


class QuantizationError(RuntimeError):
    """onnxruntime.quantization failed on a model we built (a quantizer bug, not bad input)."""


def synthetic_calibration(obs_dim: int, rows: int, seed: int = SYNTHETIC_SEED) -> np.ndarray:
    """A seeded standard-normal float32 [rows, obs_dim] batch, used when the
    learner sent no observations (calibration_source "synthetic")."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, obs_dim)).astype(np.float32)


class _QuietQuantizationLogs(logging.Filter):
    """Drops onnxruntime.quantization's below-ERROR chatter, which it logs on the
    root logger ("consider pre-processing", "parameters not specified") every build."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_ort = f"onnxruntime{os.sep}quantization" in record.pathname
        return record.levelno >= logging.ERROR or not from_ort


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    quiet = _QuietQuantizationLogs()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


class _ObsReader(CalibrationDataReader):
    """Feeds calibration observations to quantize_static in fixed-size batches."""

    def __init__(self, obs: np.ndarray, batch: int = 64) -> None:
        self._batches: Iterator[np.ndarray] = iter(
            [obs[i : i + batch] for i in range(0, len(obs), batch)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        chunk = next(self._batches, None)
        return None if chunk is None else {OBS_INPUT: chunk}


def matmul_add_to_gemm(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of model with every ``MatMul(x, W) -> Add(., b)`` pair, W and b
    initializers and the product read only by that Add, replaced by one
    ``Gemm(x, W, b)``; other nodes are kept as they are, in order."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    consts = {init.name for init in graph.initializer}
    # A graph output counts as a consumer: the product must not disappear.
    consumers: dict[str, int] = {o.name: 1 for o in graph.output}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    producers = {
        node.output[0]: node
        for node in graph.node
        if node.op_type == "MatMul" and node.input[1] in consts
    }
    nodes: list[onnx.NodeProto] = []
    fused: set[str] = set()
    for node in graph.node:
        if node.op_type == "Add" and len(node.input) == 2:
            product, bias = node.input
            mm = producers.get(product)
            if mm is not None and bias in consts and consumers.get(product) == 1:
                nodes.append(
                    onnx.helper.make_node(
                        "Gemm", [mm.input[0], mm.input[1], bias], [node.output[0]], name=mm.name
                    )
                )
                fused.add(product)
                continue
        nodes.append(node)
    kept = [n for n in nodes if not (n.op_type == "MatMul" and n.output[0] in fused)]
    del graph.node[:]
    graph.node.extend(kept)
    return out


def quantize_int8(
    model: onnx.ModelProto,
    method: str,
    calibration_obs: np.ndarray,
    workdir: str | Path | None = None,
    per_channel: bool = False,
    fp32_input_layer: bool = False,
    reduce_range: bool = True,
) -> bytes:
    """The int8 ONNX bytes of an FP32 model built by ``graph.build_onnx``.

    onnxruntime.quantization writes its result (and, for static_qdq, an
    augmented calibration model) to files: they go to a temporary directory
    under ``workdir`` (the system temp dir if None) that is removed afterwards.
    ``reduce_range`` stores weights in 7 bits: see ``QuantizerConfig.reduce_range``.
    """
    if method not in INT8_METHODS:
        raise ValueError(f"int8 method {method!r} is not one of {list(INT8_METHODS)}")
    with (
        tempfile.TemporaryDirectory(prefix="actorq-quant-", dir=workdir) as tmp,
        _quiet_root_logger(),
    ):
        # A path, not the ModelProto: quantize_static moves a ModelProto's
        # initializers to external data in place, corrupting the caller's model.
        src = Path(tmp) / "fp32.onnx"
        source = model if method == "dynamic" else matmul_add_to_gemm(model)
        src.write_bytes(source.SerializeToString())
        out = Path(tmp) / "int8.onnx"
        # The first matrix product reads raw observations: left in fp32 on request.
        first = next(n.name for n in source.graph.node if n.op_type in ("MatMul", "Gemm"))
        exclude = [first] if fp32_input_layer else []
        try:
            if method == "dynamic":
                quantize_dynamic(
                    src,
                    out,
                    op_types_to_quantize=["MatMul"],
                    per_channel=per_channel,
                    reduce_range=reduce_range,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=exclude,
                    extra_options={"MatMulConstBOnly": True},
                )
            else:
                quantize_static(
                    src,
                    out,
                    _ObsReader(np.ascontiguousarray(calibration_obs, dtype=np.float32)),
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Gemm", "Relu"],
                    per_channel=per_channel,
                    reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=exclude,
                    extra_options={"MatMulConstBOnly": True},
                )
        except (RuntimeError, ValueError, onnx.checker.ValidationError) as err:
            raise QuantizationError(f"{method} int8 quantization failed: {err}") from err
        return out.read_bytes()
