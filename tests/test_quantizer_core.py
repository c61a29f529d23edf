"""The quantizer's plain-Python core: int8 quality, upload reassembly, registry, publish."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from actorq import tensor
from actorq.config import ConfigError
from actorq.ort import make_session
from actorq.rpc import PART_BYTES
from actorq.v1 import common_pb2, quantizer_pb2
from services.quantizer.bench import torch_like_weights
from services.quantizer.config import QuantizerConfig
from services.quantizer.core import Quantizer
from services.quantizer.graph import WeightsError, build_onnx
from services.quantizer.quantize import matmul_add_to_gemm, quantize_int8
from services.quantizer.registry import (
    ModelRegistry,
    RegistryClosedError,
    StaleVersionError,
    StoredArtifact,
)
from services.quantizer.upload import (
    InvalidUploadError,
    UploadAssembler,
    UploadTooLargeError,
    assemble,
)
from services.quantizer.validate import ValidationError, check_onnx

SPEC = common_pb2.NetworkSpec(kind="dqn_mlp", obs_dim=8, hidden_sizes=[64, 64], output_dim=4)


def calibration(rows: int = 256, obs_dim: int = 8) -> np.ndarray:
    return np.random.default_rng(7).standard_normal((rows, obs_dim)).astype(np.float32)


def q_values(model: bytes, obs: np.ndarray) -> np.ndarray:
    return make_session(model).run(["q_values"], {"obs": obs})[0]


def optimized_op_types(model: bytes) -> set[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "opt.onnx")
        make_session(model, optimized_model_path=path)
        return {n.op_type for n in onnx.load(path).graph.node}


def upload_messages(
    weights: dict[str, np.ndarray],
    version: int = 1,
    spec: common_pb2.NetworkSpec = SPEC,
    part_bytes: int = PART_BYTES,
) -> list[quantizer_pb2.WeightsUpload]:
    msgs = [
        quantizer_pb2.WeightsUpload(
            header=quantizer_pb2.WeightsHeader(policy_version=version, learner_step=5, network=spec)
        )
    ]
    for name, array in weights.items():
        for piece, offset in tensor.split_parts(array, name, part_bytes):
            msgs.append(
                quantizer_pb2.WeightsUpload(
                    tensor=quantizer_pb2.TensorPart(tensor=piece, offset=offset)
                )
            )
    return msgs


def stored(version: int, precision: str = "fp32") -> StoredArtifact:
    return StoredArtifact(
        common_pb2.ModelArtifact(version=version, precision=precision, size_bytes=1), b"x"
    )


# --- int8 quantization -------------------------------------------------------


@pytest.mark.parametrize("method", ["dynamic", "static_qdq"])
def test_int8_model_stays_close_to_fp32_and_agrees_on_actions(method: str) -> None:
    fp32 = build_onnx(SPEC, torch_like_weights(SPEC, seed=1))
    obs = calibration()
    int8 = quantize_int8(fp32, method, obs)
    ref, quant = q_values(fp32.SerializeToString(), obs), q_values(int8, obs)
    assert np.abs(quant - ref).max() < 0.05
    assert np.mean(quant.argmax(1) == ref.argmax(1)) >= 0.9


POLICY_SPEC = common_pb2.NetworkSpec(
    kind="d4pg_policy",
    obs_dim=8,
    hidden_sizes=[32, 16],
    output_dim=3,
    layer_norm=True,
    action_low=[-1, -2, -1],
    action_high=[1, 2, 3],
)


def onnxruntime_dynamic(
    fp32: onnx.ModelProto, per_channel: bool, fp32_input_layer: bool, reduce_range: bool
) -> onnx.ModelProto:
    """What onnxruntime's own quantize_dynamic writes for the same settings."""
    first = next(n.name for n in fp32.graph.node if n.op_type == "MatMul")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32.SerializeToString())
        quantize_dynamic(
            src,
            dst,
            op_types_to_quantize=["MatMul"],
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=[first] if fp32_input_layer else [],
            extra_options={"MatMulConstBOnly": True},
        )
        return onnx.load(dst)


@pytest.mark.parametrize("spec", [SPEC, POLICY_SPEC], ids=["dqn_mlp", "d4pg_policy"])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("fp32_input_layer", [False, True])
@pytest.mark.parametrize("reduce_range", [False, True])
def test_dynamic_int8_is_what_onnxruntime_quantize_dynamic_writes(
    spec: common_pb2.NetworkSpec, per_channel: bool, fp32_input_layer: bool, reduce_range: bool
) -> None:
    weights = torch_like_weights(spec, seed=3)
    if spec.layer_norm:
        rng = np.random.default_rng(4)
        weights["layer_norm.weight"] = rng.uniform(0.5, 1.5, 32).astype(np.float32)
        weights["layer_norm.bias"] = rng.uniform(-0.1, 0.1, 32).astype(np.float32)
    fp32 = build_onnx(spec, weights)
    obs = calibration()
    ours = onnx.load_from_string(
        quantize_int8(
            fp32,
            "dynamic",
            obs,
            per_channel=per_channel,
            fp32_input_layer=fp32_input_layer,
            reduce_range=reduce_range,
        )
    )
    theirs = onnxruntime_dynamic(fp32, per_channel, fp32_input_layer, reduce_range)

    def tensors(model: onnx.ModelProto) -> dict[str, np.ndarray]:
        return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}

    def nodes(model: onnx.ModelProto) -> list[tuple[str, list[str], list[str]]]:
        return [(n.op_type, list(n.input), list(n.output)) for n in model.graph.node]

    ours_t, theirs_t = tensors(ours), tensors(theirs)
    assert sorted(ours_t) == sorted(theirs_t)
    for name, value in theirs_t.items():
        assert ours_t[name].dtype == value.dtype, name
        np.testing.assert_array_equal(ours_t[name], value, err_msg=name)
    assert nodes(ours) == nodes(theirs)
    output = ours.graph.output[0].name
    ours_out = make_session(ours.SerializeToString()).run([output], {"obs": obs})[0]
    theirs_out = make_session(theirs.SerializeToString()).run([output], {"obs": obs})[0]
    np.testing.assert_array_equal(ours_out, theirs_out)


def test_check_onnx_passes_a_built_model_and_names_bytes_that_are_no_model() -> None:
    check_onnx(build_onnx(SPEC, torch_like_weights(SPEC)).SerializeToString(), "v1 fp32")
    with pytest.raises(ValidationError, match="v1 int8 model is not a serialized ONNX model"):
        check_onnx(b"not a model", "v1 int8")
    broken = build_onnx(SPEC, torch_like_weights(SPEC))
    broken.graph.node[0].input[0] = "nowhere"
    with pytest.raises(ValidationError, match="v1 fp32 model fails onnx.checker"):
        check_onnx(broken.SerializeToString(), "v1 fp32")


@pytest.mark.parametrize(
    ("method", "int8_kernel"),
    [("dynamic", "DynamicQuantizeMatMul"), ("static_qdq", "QGemm")],
)
def test_int8_model_runs_int8_kernels_after_onnxruntime_fusion(
    method: str, int8_kernel: str
) -> None:
    fp32 = build_onnx(SPEC, torch_like_weights(SPEC))
    ops = optimized_op_types(quantize_int8(fp32, method, calibration()))
    assert int8_kernel in ops
    assert not ops & {"MatMul", "Gemm", "FusedGemm"}, f"float matmuls left in {sorted(ops)}"


@pytest.mark.parametrize(
    ("method", "int8_kernel"),
    [("dynamic", "DynamicQuantizeMatMul"), ("static_qdq", "QGemm")],
)
def test_fp32_input_layer_keeps_the_first_layer_float_and_the_rest_int8(
    method: str, int8_kernel: str
) -> None:
    fp32 = build_onnx(SPEC, torch_like_weights(SPEC))
    ops = optimized_op_types(quantize_int8(fp32, method, calibration(), fp32_input_layer=True))
    assert int8_kernel in ops
    assert ops & {"MatMul", "Gemm", "FusedGemm"}, f"no float layer in {sorted(ops)}"


def test_fp32_input_layer_preserves_small_range_observation_features() -> None:
    """CartPole-like inputs: one feature spans +-3, another +-0.2 (the pole angle)."""
    spec = common_pb2.NetworkSpec(kind="dqn_mlp", obs_dim=4, hidden_sizes=[64, 64], output_dim=2)
    weights = torch_like_weights(spec, seed=3)
    weights["layers.0.weight"][:, 2] *= 30.0  # the small feature matters most
    fp32 = build_onnx(spec, weights)
    rng = np.random.default_rng(0)
    obs = (rng.standard_normal((512, 4)) * np.array([1.0, 3.0, 0.07, 1.0])).astype(np.float32)
    ref = q_values(fp32.SerializeToString(), obs)
    errs = {
        keep: np.abs(
            q_values(quantize_int8(fp32, "dynamic", obs, fp32_input_layer=keep), obs) - ref
        ).max()
        for keep in (False, True)
    }
    assert errs[True] < errs[False] / 2, errs


def test_static_qdq_fuses_bias_and_relu_into_one_int8_gemm_per_layer() -> None:
    fp32 = build_onnx(SPEC, torch_like_weights(SPEC))
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "opt.onnx")
        make_session(quantize_int8(fp32, "static_qdq", calibration()), optimized_model_path=path)
        ops = [n.op_type for n in onnx.load(path).graph.node]
    # One QGemm per layer; activations stay uint8 between layers (no requantize, no Relu).
    assert ops.count("QGemm") == len(SPEC.hidden_sizes) + 1
    assert ops.count("QuantizeLinear") == 1 and ops.count("DequantizeLinear") == 1
    assert "Relu" not in ops


def test_matmul_add_to_gemm_computes_the_same_q_values() -> None:
    fp32 = build_onnx(SPEC, torch_like_weights(SPEC))
    gemm = matmul_add_to_gemm(fp32)
    assert [n.op_type for n in gemm.graph.node] == ["Gemm", "Relu", "Gemm", "Relu", "Gemm"]
    obs = calibration()
    np.testing.assert_allclose(
        q_values(gemm.SerializeToString(), obs),
        q_values(fp32.SerializeToString(), obs),
        rtol=1e-5,
        atol=1e-5,
    )


def test_quantizing_leaves_the_fp32_model_untouched() -> None:
    fp32 = build_onnx(SPEC, torch_like_weights(SPEC))
    before = fp32.SerializeToString()
    quantize_int8(fp32, "static_qdq", calibration())
    assert fp32.SerializeToString() == before


# --- upload reassembly -------------------------------------------------------


def test_upload_reassembles_tensors_split_into_many_parts() -> None:
    weights = torch_like_weights(SPEC)
    upload = assemble(upload_messages(weights, part_bytes=100), ["fp32", "int8"], 1 << 20)
    assert upload.precisions == ["fp32", "int8"]
    for name, array in weights.items():
        np.testing.assert_array_equal(upload.weights[name], array)


def test_upload_refuses_out_of_order_parts() -> None:
    msgs = upload_messages(torch_like_weights(SPEC), part_bytes=100)
    msgs[1], msgs[2] = msgs[2], msgs[1]
    with pytest.raises(InvalidUploadError, match=r"'layers.0.weight': piece at offset 100"):
        assemble(msgs, ["fp32"], 1 << 20)


def test_upload_counts_declared_size_before_allocating() -> None:
    assembler = UploadAssembler(["fp32"], max_bytes=4096)
    msgs = upload_messages(torch_like_weights(SPEC), part_bytes=64)
    assembler.add(msgs[0])
    # layers.0.weight is 64x8 float32 = 2048 B; layers.0.bias fits; layers.1.weight
    # (16 KiB) is refused on its first 64-byte piece.
    with pytest.raises(UploadTooLargeError, match=r"tensor 'layers.1.weight' \(16384 bytes\)"):
        for msg in msgs[1:]:
            assembler.add(msg)


def test_upload_refuses_a_tensor_whose_parts_stop_early() -> None:
    msgs = upload_messages(torch_like_weights(SPEC), part_bytes=1024)
    assert msgs[2].tensor.tensor.name == "layers.0.weight" and msgs[2].tensor.offset == 1024
    del msgs[2]  # the second half of layers.0.weight never comes
    with pytest.raises(InvalidUploadError, match=r"'layers.0.weight' \(1024 of 2048 bytes\)"):
        assemble(msgs, ["fp32"], 1 << 20)


# --- registry ----------------------------------------------------------------


def test_registry_refuses_a_version_that_is_not_newer_naming_both() -> None:
    registry = ModelRegistry(["fp32"])
    registry.commit(3, [stored(3)])
    with pytest.raises(StaleVersionError, match=r"policy_version 3 .* served policy_version 3"):
        registry.commit(3, [stored(3)])
    assert registry.latest("fp32").meta.version == 3  # type: ignore[union-attr]


def test_registry_wait_returns_when_another_thread_commits() -> None:
    registry = ModelRegistry(["fp32"])
    registry.commit(1, [stored(1)])
    timer = threading.Timer(0.2, registry.commit, args=(2, [stored(2)]))
    started = time.monotonic()
    timer.start()
    found = registry.wait_newer("fp32", newer_than=1, wait_s=10.0)
    assert found is not None and found.meta.version == 2
    assert time.monotonic() - started < 2.0


def test_registry_wait_gives_up_when_its_caller_goes_away() -> None:
    registry = ModelRegistry(["fp32"])
    active = threading.Event()
    active.set()

    def caller_goes_away() -> None:
        active.clear()
        registry.wake()

    threading.Timer(0.2, caller_goes_away).start()
    started = time.monotonic()
    assert registry.wait_newer("fp32", 0, 30.0, is_active=active.is_set) is None
    assert time.monotonic() - started < 2.0


def test_registry_close_ends_waits() -> None:
    registry = ModelRegistry(["fp32"])
    threading.Timer(0.1, registry.close).start()
    with pytest.raises(RegistryClosedError):
        registry.wait_newer("fp32", 0, 30.0)


# --- publish -----------------------------------------------------------------


def test_publish_serves_every_precision_of_a_version_together() -> None:
    core = Quantizer(QuantizerConfig(calibration_size=32))
    upload = assemble(
        upload_messages(torch_like_weights(SPEC), version=4), ["fp32", "int8"], 1 << 20
    )
    metas = core.publish(upload)
    assert [(m.precision, m.version) for m in metas] == [("fp32", 4), ("int8", 4)]
    assert metas[1].quantization.calibration_source == "synthetic"
    assert metas[1].quantization.calibration_samples == 32
    assert core.registry.latest("int8").data  # type: ignore[union-attr]


def test_publish_rejects_weights_whose_outputs_overflow_and_stores_nothing() -> None:
    core = Quantizer(QuantizerConfig())
    weights = torch_like_weights(SPEC)
    for name in weights:
        weights[name] = np.full_like(weights[name], 1e30)  # finite, but q_values overflow
    upload = assemble(upload_messages(weights), ["fp32", "int8"], 1 << 20)
    with pytest.raises(ValidationError, match="non-finite q_values"):
        core.publish(upload)
    assert core.registry.version == 0
    assert core.registry.all_latest() == []


def test_publish_rejects_nan_weights_naming_the_tensor() -> None:
    core = Quantizer(QuantizerConfig())
    weights = torch_like_weights(SPEC)
    weights["layers.2.bias"][0] = np.nan
    upload = assemble(upload_messages(weights), ["fp32", "int8"], 1 << 20)
    with pytest.raises(WeightsError, match="'layers.2.bias'"):
        core.publish(upload)
    assert core.registry.all_latest() == []


def test_publish_below_min_action_agreement_stores_nothing() -> None:
    core = Quantizer(QuantizerConfig(min_action_agreement=1.0))
    weights = torch_like_weights(SPEC)
    # Head rows equal up to 1e-6: fp32 still ranks the actions, int8 cannot tell them apart.
    head = weights["layers.2.weight"]
    head[:] = head[0] + 1e-6 * np.random.default_rng(0).standard_normal(head.shape)
    weights["layers.2.bias"][:] = 0.0
    upload = assemble(upload_messages(weights), ["fp32", "int8"], 1 << 20)
    with pytest.raises(ValidationError, match="below min_action_agreement"):
        core.publish(upload)
    assert core.registry.all_latest() == []


# --- config ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"precisions": ["fp32", "fp16"]}, r"precisions \['fp16'\] unknown"),
        ({"precisions": []}, "precisions is empty"),
        ({"int8_method": "qat"}, "int8_method 'qat' unknown"),
        ({"calibration_size": 0}, "calibration_size must be at least 1"),
        ({"min_action_agreement": 1.5}, r"min_action_agreement must be in \[0, 1\]"),
        ({"workdir": "/nonexistent/quantizer"}, "is not an existing directory"),
    ],
)
def test_config_refuses_settings_that_cannot_work(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        QuantizerConfig(**overrides)
