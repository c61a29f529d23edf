"""FP32 weights + NetworkSpec -> ONNX graph, built with ``onnx.helper`` (no torch).

Weight naming is torch's ``nn.ModuleList`` of ``nn.Linear`` called ``layers``:
``layers.{i}.weight`` is [out, in] and ``layers.{i}.bias`` is [out], for
i in 0..len(hidden_sizes) (the last layer is the head). The graph stores each
weight transposed to [in, out] so every layer is ``MatMul`` + ``Add`` (the
pattern onnxruntime's int8 quantizers and fusions recognise).

Tensor, input and output names, the kinds and their activations are the
learner-quantizer-actor contract of ``actorq.network``; each contract kind
registers a ``NetworkKind`` here: which tensors it expects and how to build
its graph. Every model carries its kind in its metadata (``METADATA_KIND``).

- ``dqn_mlp``: obs -> Linear, ReLU, ..., Linear -> ``q_values`` [batch, actions].
- ``d4pg_policy``: obs -> Linear [-> LayerNorm -> Tanh when ``layer_norm``,
  else the activation] -> (Linear, activation)* -> Linear -> Tanh -> affine map
  onto [action_low, action_high] -> ``action`` [batch, action_dim]. With
  ``layer_norm`` the first block is Acme's ``LayerNormMLP`` input block, and
  the LayerNorm's scale and shift are ``layer_norm.weight`` / ``layer_norm.bias``
  ([hidden_sizes[0]], torch ``nn.LayerNorm`` named ``layer_norm``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from actorq import network
from actorq.network import (
    LAYER_NORM_BIAS,
    LAYER_NORM_WEIGHT,
    METADATA_KIND,
    OBS_INPUT,
    bias_name,
    weight_name,
)
from actorq.v1 import common_pb2

# Opset 17 has everything the planned kinds need (LayerNormalization included)
# and is well inside what onnxruntime 1.32 runs; IR 8 is the matching IR version.
OPSET = 17
IR_VERSION = 8
BATCH_DIM = "batch"
# The ONNX op of each hidden activation a contract kind may name.
ACTIVATION_OPS = {"relu": "Relu", "elu": "Elu"}
# torch.nn.LayerNorm's default epsilon (the learner's policy uses it).
LAYER_NORM_EPS = 1e-5

Nodes = tuple[list[onnx.NodeProto], list[TensorProto]]


class SpecError(ValueError):
    """A NetworkSpec the quantizer cannot build a graph for."""


class WeightsError(ValueError):
    """Weights that do not match the NetworkSpec; the message names each tensor."""


def layer_sizes(spec: common_pb2.NetworkSpec) -> list[int]:
    """[obs_dim, *hidden_sizes, output_dim]: the width of every layer boundary."""
    return [int(spec.obs_dim), *(int(h) for h in spec.hidden_sizes), int(spec.output_dim)]


def linear_shapes(spec: common_pb2.NetworkSpec) -> dict[str, tuple[int, ...]]:
    """Expected weight/bias shapes of an MLP body: one Linear per layer boundary."""
    sizes = layer_sizes(spec)
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(len(sizes) - 1):
        shapes[weight_name(i)] = (sizes[i + 1], sizes[i])
        shapes[bias_name(i)] = (sizes[i + 1],)
    return shapes


def _check_mlp_dims(spec: common_pb2.NetworkSpec, contract: network.Kind) -> None:
    if spec.obs_dim <= 0:
        raise SpecError(f"network.obs_dim must be positive, got {spec.obs_dim}")
    if spec.output_dim <= 0:
        raise SpecError(f"network.output_dim must be positive, got {spec.output_dim}")
    bad = [int(h) for h in spec.hidden_sizes if h <= 0]
    if bad:
        raise SpecError(f"network.hidden_sizes must all be positive, got {list(spec.hidden_sizes)}")
    activations = contract.activations
    if spec.activation not in ("", *activations):
        raise SpecError(
            f"network.activation {spec.activation!r} is not supported for kind "
            f"{spec.kind!r}; use one of {list(activations)} (empty means {activations[0]})"
        )


def _check_dqn_spec(spec: common_pb2.NetworkSpec) -> None:
    _check_mlp_dims(spec, network.DQN_MLP)
    if spec.action_low or spec.action_high:
        raise SpecError(
            "network.action_low/action_high are for continuous policies; a dqn_mlp "
            "outputs one Q-value per discrete action and takes no bounds"
        )
    if spec.layer_norm:
        raise SpecError("network.layer_norm is not supported for kind 'dqn_mlp'")


def _check_policy_spec(spec: common_pb2.NetworkSpec) -> None:
    _check_mlp_dims(spec, network.D4PG_POLICY)
    dim = int(spec.output_dim)
    if len(spec.action_low) != dim or len(spec.action_high) != dim:
        raise SpecError(
            f"network.action_low/action_high must hold output_dim={dim} bounds each, got "
            f"{len(spec.action_low)} and {len(spec.action_high)}"
        )
    low = np.asarray(spec.action_low, np.float64)
    high = np.asarray(spec.action_high, np.float64)
    if not (np.isfinite(low).all() and np.isfinite(high).all() and (low < high).all()):
        raise SpecError(
            f"network.action_low {low.tolist()} / action_high {high.tolist()} must be finite "
            "with low < high in every dimension (tanh is mapped onto them)"
        )
    if spec.layer_norm and not spec.hidden_sizes:
        raise SpecError("network.layer_norm needs at least one hidden layer to normalize")


def policy_shapes(spec: common_pb2.NetworkSpec) -> dict[str, tuple[int, ...]]:
    """The MLP's Linear shapes, plus the LayerNorm's scale and shift when layer_norm."""
    shapes = linear_shapes(spec)
    if spec.layer_norm:
        width = int(spec.hidden_sizes[0])
        shapes[LAYER_NORM_WEIGHT] = (width,)
        shapes[LAYER_NORM_BIAS] = (width,)
    return shapes


def action_range(spec: common_pb2.NetworkSpec) -> np.ndarray | None:
    """high - low per action dimension for continuous kinds; None for discrete ones."""
    if not network_kind(spec).continuous:
        return None
    return np.asarray(spec.action_high, np.float64) - np.asarray(spec.action_low, np.float64)


def _mlp_body(
    spec: common_pb2.NetworkSpec,
    weights: Mapping[str, np.ndarray],
    output: str,
    activation: str,
    first_layer_norm: bool = False,
) -> Nodes:
    """MatMul + Add per layer, the activation between layers; the last Add writes ``output``.

    ``first_layer_norm`` replaces the first activation by LayerNormalization
    then Tanh (Acme's LayerNormMLP input block).
    """
    nodes: list[onnx.NodeProto] = []
    inits: list[TensorProto] = []
    n_layers = len(spec.hidden_sizes) + 1
    op = ACTIVATION_OPS[activation]
    x = OBS_INPUT
    for i in range(n_layers):
        w_t = f"layers.{i}.weight_t"
        b = bias_name(i)
        # [out, in] -> [in, out] so the graph computes x @ W^T like nn.Linear.
        inits.append(numpy_helper.from_array(np.ascontiguousarray(weights[weight_name(i)].T), w_t))
        inits.append(numpy_helper.from_array(np.ascontiguousarray(weights[b]), b))
        mm = f"layers.{i}.matmul"
        last = i == n_layers - 1
        added = output if last else f"layers.{i}.preact"
        nodes.append(helper.make_node("MatMul", [x, w_t], [mm], name=mm))
        nodes.append(helper.make_node("Add", [mm, b], [added], name=f"layers.{i}.add"))
        if last:
            break
        if i == 0 and first_layer_norm:
            x = _layer_norm_block(added, weights, nodes, inits)
            continue
        x = f"layers.{i}.{op.lower()}"
        nodes.append(helper.make_node(op, [added], [x], name=x))
    return nodes, inits


def _layer_norm_block(
    x: str,
    weights: Mapping[str, np.ndarray],
    nodes: list[onnx.NodeProto],
    inits: list[TensorProto],
) -> str:
    """LayerNormalization then Tanh on x (appended to nodes); returns the output's name."""
    for name in (LAYER_NORM_WEIGHT, LAYER_NORM_BIAS):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(weights[name]), name))
    normed = "layer_norm.out"
    nodes.append(
        helper.make_node(
            "LayerNormalization",
            [x, LAYER_NORM_WEIGHT, LAYER_NORM_BIAS],
            [normed],
            name="layer_norm",
            axis=-1,
            epsilon=LAYER_NORM_EPS,
        )
    )
    out = "layer_norm.tanh"
    nodes.append(helper.make_node("Tanh", [normed], [out], name=out))
    return out


def _activation(spec: common_pb2.NetworkSpec, contract: network.Kind) -> str:
    """The spec's hidden activation; empty means the kind's first."""
    return spec.activation or contract.activations[0]


def _policy_nodes(spec: common_pb2.NetworkSpec, weights: Mapping[str, np.ndarray]) -> Nodes:
    head = "head.preact"
    activation = _activation(spec, network.D4PG_POLICY)
    nodes, inits = _mlp_body(spec, weights, head, activation, bool(spec.layer_norm))
    low = np.asarray(spec.action_low, np.float32)
    high = np.asarray(spec.action_high, np.float32)
    # tanh in [-1, 1] -> [low, high]: offset + scale * tanh.
    inits.append(numpy_helper.from_array((high - low) / 2, "action_scale"))
    inits.append(numpy_helper.from_array((high + low) / 2, "action_offset"))
    nodes.append(helper.make_node("Tanh", [head], ["head.tanh"], name="head.tanh"))
    nodes.append(
        helper.make_node("Mul", ["head.tanh", "action_scale"], ["head.scaled"], name="head.scale")
    )
    nodes.append(
        helper.make_node(
            "Add",
            ["head.scaled", "action_offset"],
            [network.D4PG_POLICY.output],
            name="head.offset",
        )
    )
    return nodes, inits


def _dqn_nodes(spec: common_pb2.NetworkSpec, weights: Mapping[str, np.ndarray]) -> Nodes:
    contract = network.DQN_MLP
    return _mlp_body(spec, weights, contract.output, _activation(spec, contract))


@dataclass(frozen=True)
class NetworkKind:
    """How one kind of the contract (``actorq.network.Kind``) is checked and built."""

    contract: network.Kind
    check_spec: Callable[[common_pb2.NetworkSpec], None]
    expected_shapes: Callable[[common_pb2.NetworkSpec], dict[str, tuple[int, ...]]]
    # The graph's nodes and initializers, from OBS_INPUT to the contract's output.
    build_nodes: Callable[[common_pb2.NetworkSpec, Mapping[str, np.ndarray]], Nodes]

    @property
    def output_name(self) -> str:
        """Graph output holding the values actions are chosen from (argmax for DQN)
        or the actions themselves (continuous kinds)."""
        return self.contract.output

    @property
    def continuous(self) -> bool:
        """True when the output is the action (compared with fp32 by distance, not argmax)."""
        return self.contract.continuous


# Adding a network kind: its contract entry in actorq.network, and one row here.
KINDS: dict[str, NetworkKind] = {
    kind.contract.name: kind
    for kind in (
        NetworkKind(network.DQN_MLP, _check_dqn_spec, linear_shapes, _dqn_nodes),
        NetworkKind(network.D4PG_POLICY, _check_policy_spec, policy_shapes, _policy_nodes),
    )
}


def network_kind(spec: common_pb2.NetworkSpec) -> NetworkKind:
    """The kind entry for spec.kind; SpecError for an unknown kind."""
    kind = KINDS.get(spec.kind)
    if kind is None:
        raise SpecError(
            f"network.kind {spec.kind!r} is not supported; supported kinds: {sorted(KINDS)}"
        )
    return kind


def check_spec(spec: common_pb2.NetworkSpec) -> NetworkKind:
    """Validate a NetworkSpec; returns its kind. SpecError with the reason otherwise."""
    kind = network_kind(spec)
    kind.check_spec(spec)
    return kind


def expected_tensors(spec: common_pb2.NetworkSpec) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every float32 tensor the spec's weights must contain."""
    return check_spec(spec).expected_shapes(spec)


def check_weights(spec: common_pb2.NetworkSpec, weights: Mapping[str, np.ndarray]) -> None:
    """Raise WeightsError naming every missing, extra, mis-shaped, non-float32 or
    non-finite tensor (SpecError if the spec itself is unusable)."""
    expected = expected_tensors(spec)
    problems: list[str] = []
    missing = [name for name in expected if name not in weights]
    if missing:
        problems.append(f"missing tensors {missing}")
    extra = sorted(name for name in weights if name not in expected)
    if extra:
        problems.append(f"unexpected tensors {extra} (expected {sorted(expected)})")
    for name, shape in expected.items():
        if name not in weights:
            continue
        arr = weights[name]
        if arr.dtype != np.float32:
            problems.append(f"tensor {name!r} has dtype {arr.dtype}, expected float32")
            continue
        if tuple(arr.shape) != shape:
            problems.append(f"tensor {name!r} has shape {list(arr.shape)}, expected {list(shape)}")
            continue
        if not np.isfinite(arr).all():
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            problems.append(f"tensor {name!r} has {bad} non-finite values (NaN or inf)")
    if problems:
        raise WeightsError(
            f"weights do not match network kind {spec.kind!r}: " + "; ".join(problems)
        )


def build_onnx(spec: common_pb2.NetworkSpec, weights: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """The FP32 ONNX model for spec with the given weights (validated first).

    Input ``obs`` float32 [batch, obs_dim] with a dynamic batch; for ``dqn_mlp``
    output ``q_values`` float32 [batch, output_dim], for ``d4pg_policy`` output
    ``action`` float32 [batch, output_dim] within the spec's bounds. The model's
    metadata names its kind (``actorq.network.METADATA_KIND``).
    """
    kind = check_spec(spec)
    check_weights(spec, weights)
    nodes, inits = kind.build_nodes(spec, weights)
    graph = helper.make_graph(
        nodes,
        kind.contract.name,
        inputs=[_float_io(OBS_INPUT, spec.obs_dim)],
        outputs=[_float_io(kind.output_name, spec.output_dim)],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        producer_name="actorq-quantizer",
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
    )
    helper.set_model_props(model, {METADATA_KIND: kind.contract.name})
    return model


def _float_io(name: str, width: int) -> onnx.ValueInfoProto:
    """A float32 [batch, width] graph input or output."""
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH_DIM, int(width)])


def output_name(spec: common_pb2.NetworkSpec) -> str:
    """Name of the graph output actions are chosen from for spec's kind."""
    return network_kind(spec).output_name
