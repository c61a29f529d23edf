"""The contract between learner, quantizer and actor: what a policy network is.

The learner names its weights and describes its network (``NetworkSpec``),
the quantizer builds an ONNX graph from them, the actor runs that graph. All
three read the names below from here, so the contract is written once:

- ``dqn_mlp``: obs -> Linear, ReLU, ..., Linear -> ``q_values`` [batch, actions]
  (the action is the argmax);
- ``d4pg_policy``: obs -> MLP -> tanh -> affine map onto the action bounds
  -> ``action`` [batch, action_dim] (the action itself).

Weights are torch's ``nn.ModuleList`` of ``nn.Linear`` called ``layers``:
``layers.{i}.weight`` [out, in] and ``layers.{i}.bias`` [out], i = 0 .. the
head; a D4PG policy with layer norm adds ``layer_norm.weight`` / ``.bias``.
Every ONNX artifact also carries its kind in the model's metadata
(``METADATA_KIND``), so a policy file tells what it is without its name.
"""

from __future__ import annotations

from dataclasses import dataclass

# Precisions the quantizer builds and actors run (the learner is always fp32).
PRECISIONS = ("fp32", "int8")
# Learning algorithms, each with the network kind its policy is published as.
ALGOS = ("dqn", "d4pg")

OBS_INPUT = "obs"
Q_VALUES_OUTPUT = "q_values"
ACTION_OUTPUT = "action"
LAYER_NORM_WEIGHT = "layer_norm.weight"
LAYER_NORM_BIAS = "layer_norm.bias"
# ONNX metadata_props key holding the NetworkSpec kind of an artifact.
METADATA_KIND = "actorq.kind"


def weight_name(layer: int) -> str:
    """Name of layer i's [out, in] weight (torch ``layers.{i}.weight``)."""
    return f"layers.{layer}.weight"


def bias_name(layer: int) -> str:
    """Name of layer i's [out] bias (torch ``layers.{i}.bias``)."""
    return f"layers.{layer}.bias"


@dataclass(frozen=True)
class Kind:
    """One network kind of the contract."""

    name: str
    # The graph's output: values to take the argmax of, or the action itself.
    output: str
    # True when the output is the action (continuous control).
    continuous: bool
    # Hidden activations the kind may use (NetworkSpec.activation; "" means the first).
    activations: tuple[str, ...]


DQN_MLP = Kind("dqn_mlp", Q_VALUES_OUTPUT, continuous=False, activations=("relu",))
D4PG_POLICY = Kind("d4pg_policy", ACTION_OUTPUT, continuous=True, activations=("relu", "elu"))
KINDS: dict[str, Kind] = {k.name: k for k in (DQN_MLP, D4PG_POLICY)}
# The kind each algorithm publishes.
ALGO_KINDS: dict[str, Kind] = {"dqn": DQN_MLP, "d4pg": D4PG_POLICY}


def kind(name: str) -> Kind:
    """The contract entry of a kind; ValueError naming the supported ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(
            f"network kind {name!r} is unknown; known kinds: {sorted(KINDS)}"
        ) from None


def kind_of_output(output: str) -> Kind | None:
    """The kind whose graph output is named ``output`` (for ONNX files without metadata)."""
    return next((k for k in KINDS.values() if k.output == output), None)
