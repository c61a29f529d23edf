"""FP32 ONNX model -> int8 ONNX model with ``onnxruntime.quantization``.

Two methods (see ``QuantizerConfig.int8_method`` for the measured trade-off):

* ``dynamic``: weights stored int8 (symmetric), activations quantized to uint8
  per call from their own range. Needs no calibration data; onnxruntime fuses
  each MatMul + Add into ``DynamicQuantizeMatMul`` (int8 GEMM, VNNI on x86).
  Written here directly (``dynamic_int8``): the graph ``quantize_dynamic``
  writes, with its weight arithmetic (``quant_utils.quantize_data``), without
  its file round trips and shape inference: at 2048x2048x2048 on a 2-vCPU AMD
  EPYC it took 240-450 ms per policy version, of which 30 ms quantized weights;
  the tests hold the two to identical tensors and identical outputs.
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
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.quant_utils import quantize_data

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

    ``dynamic`` is built in memory (``dynamic_int8``); for ``static_qdq``
    onnxruntime.quantization writes its result and an augmented calibration model
    to files: they go to a temporary directory under ``workdir`` (the system temp
    dir if None) that is removed afterwards. The first matrix product reads raw
    observations: ``fp32_input_layer`` leaves it in fp32.
    ``reduce_range`` stores weights in 7 bits: see ``QuantizerConfig.reduce_range``.
    """
    if method not in INT8_METHODS:
        raise ValueError(f"int8 method {method!r} is not one of {list(INT8_METHODS)}")
    # The first matrix product (its name survives matmul_add_to_gemm).
    first = next(n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm"))
    exclude = {first} if fp32_input_layer else set()
    if method == "dynamic":
        try:
            quantized = dynamic_int8(model, exclude, per_channel, reduce_range)
        except ValueError as err:
            raise QuantizationError(f"dynamic int8 quantization failed: {err}") from err
        return quantized.SerializeToString()
    with (
        tempfile.TemporaryDirectory(prefix="actorq-quant-", dir=workdir) as tmp,
        _quiet_root_logger(),
    ):
        # A path, not the ModelProto: quantize_static moves a ModelProto's
        # initializers to external data in place, corrupting the caller's model.
        src = Path(tmp) / "fp32.onnx"
        source = matmul_add_to_gemm(model)
        src.write_bytes(source.SerializeToString())
        out = Path(tmp) / "int8.onnx"
        try:
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
                nodes_to_exclude=sorted(exclude),
                extra_options={"MatMulConstBOnly": True},
            )
        except (RuntimeError, ValueError, onnx.checker.ValidationError) as err:
            raise QuantizationError(f"{method} int8 quantization failed: {err}") from err
        return out.read_bytes()


def _quantize_data(values: np.ndarray, reduce_range: bool) -> tuple[Any, Any, Any]:
    """onnxruntime's ``quantize_data`` (symmetric int8) as (zero point, scale, values);
    older releases also returned rmin and rmax first."""
    result = quantize_data(values, TensorProto.INT8, True, reduce_range)
    return result[-3], result[-2], result[-1]


def _int8_weight(
    weight: np.ndarray, per_channel: bool, reduce_range: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int8 weight, scale, zero point) of a MatMul's [in, out] weight, symmetric,
    per tensor or per output column: onnxruntime's own ``quantize_data``, as
    ``quantize_dynamic`` calls it (7-bit values with ``reduce_range``)."""
    if not per_channel:
        zero_point, scale, q = _quantize_data(weight, reduce_range)
        return (
            np.asarray(q, np.int8),
            np.asarray(scale, np.float32),
            np.asarray(zero_point, np.int8),
        )
    columns = [_quantize_data(weight[:, j], reduce_range) for j in range(weight.shape[1])]
    q = np.stack([np.asarray(c[2], np.int8) for c in columns], axis=1)
    scale = np.array([c[1] for c in columns], np.float32)
    zero_point = np.array([c[0] for c in columns], np.int8)
    return q, scale, zero_point


def dynamic_int8(
    model: onnx.ModelProto,
    exclude: set[str],
    per_channel: bool = False,
    reduce_range: bool = True,
) -> onnx.ModelProto:
    """A copy of model with every ``MatMul(x, W)`` whose W is an initializer (and
    whose node is not in ``exclude``) written as onnxruntime's dynamic int8 pattern:
    ``DynamicQuantizeLinear(x)`` -> ``MatMulInteger(x_q, W_q, x_zp, W_zp)`` ->
    ``Cast`` -> ``Mul(x_scale * W_scale)``, the same nodes, names and tensors
    ``quantize_dynamic(op_types_to_quantize=["MatMul"], weight_type=QInt8)`` writes
    (onnxruntime fuses them into ``DynamicQuantizeMatMul``). W_q is int8, symmetric
    (zero point 0); the fp32 W is dropped. ValueError for a W that is not float32."""
    graph = model.graph
    consts = {init.name: init for init in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    added: list[TensorProto] = []
    dropped: set[str] = set()
    quantized_inputs: dict[str, tuple[str, str, str]] = {}
    for node in graph.node:
        weight_init = consts.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight_init is None or node.name in exclude:
            nodes.append(node)
            continue
        if weight_init.data_type != TensorProto.FLOAT:
            raise ValueError(f"MatMul {node.name!r} weight {weight_init.name!r} is not float32")
        x, w = node.input[0], node.input[1]
        if x not in quantized_inputs:
            quantized_inputs[x] = (f"{x}_quantized", f"{x}_scale", f"{x}_zero_point")
            nodes.append(
                helper.make_node(
                    "DynamicQuantizeLinear", [x], list(quantized_inputs[x]), f"{x}_QuantizeLinear"
                )
            )
        x_q, x_scale, x_zero_point = quantized_inputs[x]
        q, scale, zero_point = _int8_weight(
            numpy_helper.to_array(weight_init), per_channel, reduce_range
        )
        added += [
            numpy_helper.from_array(scale, f"{w}_scale"),
            numpy_helper.from_array(zero_point, f"{w}_zero_point"),
            numpy_helper.from_array(q, f"{w}_quantized"),
        ]
        dropped.add(w)
        name = node.name
        scales = f"{name}_quant_scales_mul:0"
        product = f"{name}_output_quantized"
        cast = f"{product}_cast_output"
        nodes += [
            helper.make_node("Mul", [x_scale, f"{w}_scale"], [scales], f"{name}_quant_scales_mul"),
            helper.make_node(
                "MatMulInteger",
                [x_q, f"{w}_quantized", x_zero_point, f"{w}_zero_point"],
                [product],
                f"{name}_quant",
            ),
            helper.make_node("Cast", [product], [cast], f"{product}_cast", to=TensorProto.FLOAT),
            helper.make_node(
                "Mul", [cast, scales], [node.output[0]], f"{name}_quant_output_scale_mul"
            ),
        ]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    kept = [init for init in graph.initializer if init.name not in dropped]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept + added)
    return out
