"""The quantizer's ONNX graph builder: numerics, contract names, and refusals."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from actorq.network import OBS_INPUT, Q_VALUES_OUTPUT
from actorq.ort import make_session
from actorq.v1 import common_pb2
from services.quantizer.bench import torch_like_weights
from services.quantizer.graph import (
    SpecError,
    WeightsError,
    build_onnx,
    expected_tensors,
)


def dqn_spec(obs_dim: int = 4, hidden: tuple[int, ...] = (32, 16), actions: int = 3):
    return common_pb2.NetworkSpec(
        kind="dqn_mlp", obs_dim=obs_dim, hidden_sizes=list(hidden), output_dim=actions
    )


def numpy_forward(weights: dict[str, np.ndarray], obs: np.ndarray, n_layers: int) -> np.ndarray:
    """torch's nn.Linear stack with ReLU between layers, in float64."""
    x = obs.astype(np.float64)
    for i in range(n_layers):
        x = x @ weights[f"layers.{i}.weight"].T.astype(np.float64) + weights[f"layers.{i}.bias"]
        if i < n_layers - 1:
            x = np.maximum(x, 0.0)
    return x


def run(model: onnx.ModelProto, obs: np.ndarray) -> np.ndarray:
    return make_session(model.SerializeToString()).run([Q_VALUES_OUTPUT], {OBS_INPUT: obs})[0]


@pytest.mark.parametrize("batch", [1, 7])
def test_dqn_graph_matches_numpy_forward_pass(batch: int) -> None:
    spec = dqn_spec()
    weights = torch_like_weights(spec, seed=3)
    obs = np.random.default_rng(0).standard_normal((batch, 4)).astype(np.float32)
    q = run(build_onnx(spec, weights), obs)
    assert q.shape == (batch, 3)
    np.testing.assert_allclose(q, numpy_forward(weights, obs, 3), rtol=1e-5, atol=1e-5)


def test_graph_without_hidden_layers_is_a_single_linear_head() -> None:
    spec = dqn_spec(obs_dim=5, hidden=(), actions=2)
    weights = torch_like_weights(spec)
    obs = np.ones((2, 5), np.float32)
    np.testing.assert_allclose(
        run(build_onnx(spec, weights), obs), numpy_forward(weights, obs, 1), atol=1e-6
    )


def test_graph_passes_onnx_checker_with_dynamic_batch_and_contract_names() -> None:
    model = build_onnx(dqn_spec(), torch_like_weights(dqn_spec()))
    onnx.checker.check_model(model, full_check=True)
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == "obs" and out.name == "q_values"
    assert inp.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert inp.type.tensor_type.shape.dim[1].dim_value == 4
    assert out.type.tensor_type.shape.dim[1].dim_value == 3
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_expected_tensors_follow_torch_module_list_naming() -> None:
    assert expected_tensors(dqn_spec()) == {
        "layers.0.weight": (32, 4),
        "layers.0.bias": (32,),
        "layers.1.weight": (16, 32),
        "layers.1.bias": (16,),
        "layers.2.weight": (3, 16),
        "layers.2.bias": (3,),
    }


def test_missing_tensor_is_named() -> None:
    weights = torch_like_weights(dqn_spec())
    del weights["layers.1.bias"]
    with pytest.raises(WeightsError, match=r"missing tensors \['layers.1.bias'\]"):
        build_onnx(dqn_spec(), weights)


def test_extra_tensor_is_named() -> None:
    weights = torch_like_weights(dqn_spec())
    weights["layers.9.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(WeightsError, match=r"unexpected tensors \['layers.9.weight'\]"):
        build_onnx(dqn_spec(), weights)


def test_wrong_shape_is_named_with_expected_shape() -> None:
    weights = torch_like_weights(dqn_spec())
    weights["layers.0.weight"] = np.zeros((4, 32), np.float32)  # [in, out]: transposed
    with pytest.raises(WeightsError, match=r"'layers.0.weight' has shape \[4, 32\], expected"):
        build_onnx(dqn_spec(), weights)


def test_non_float32_tensor_is_named() -> None:
    weights = torch_like_weights(dqn_spec())
    weights["layers.2.weight"] = weights["layers.2.weight"].astype(np.float64)
    with pytest.raises(WeightsError, match=r"'layers.2.weight' has dtype float64"):
        build_onnx(dqn_spec(), weights)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_tensor_is_named(bad: float) -> None:
    weights = torch_like_weights(dqn_spec())
    weights["layers.1.weight"][3, 4] = bad
    with pytest.raises(WeightsError, match=r"'layers.1.weight' has 1 non-finite"):
        build_onnx(dqn_spec(), weights)


def test_unknown_kind_is_refused_listing_supported_kinds() -> None:
    spec = dqn_spec()
    spec.kind = "transformer"
    with pytest.raises(SpecError, match=r"'transformer' is not supported.*dqn_mlp"):
        expected_tensors(spec)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("obs_dim", 0, "obs_dim must be positive"),
        ("output_dim", -1, "output_dim must be positive"),
        ("activation", "gelu", "activation 'gelu' is not supported"),
        ("layer_norm", True, "layer_norm is not supported"),
    ],
)
def test_unbuildable_dqn_spec_is_refused(field: str, value: object, message: str) -> None:
    spec = dqn_spec()
    setattr(spec, field, value)
    with pytest.raises(SpecError, match=message):
        expected_tensors(spec)


def test_dqn_spec_with_action_bounds_is_refused() -> None:
    spec = dqn_spec()
    spec.action_low.append(-1.0)
    with pytest.raises(SpecError, match="action_low/action_high"):
        expected_tensors(spec)


def test_zero_hidden_size_is_refused() -> None:
    with pytest.raises(SpecError, match="hidden_sizes must all be positive"):
        expected_tensors(dqn_spec(hidden=(8, 0)))
