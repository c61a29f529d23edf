"""The actor tells a policy's kind from the contract (actorq.network), not from a local name."""

from __future__ import annotations

import onnx
import pytest
from test_actor_policy import cartpole_balancer
from test_d4pg_actor import policy_spec, policy_weights
from test_quantizer_core import SPEC

from actorq import network
from services.actor.policy import OnnxPolicy, PolicyError
from services.quantizer.bench import torch_like_weights
from services.quantizer.graph import build_onnx


def d4pg_model() -> onnx.ModelProto:
    spec = policy_spec(3, [-2.0], [2.0])
    return build_onnx(spec, policy_weights(spec))


def with_kind(model: onnx.ModelProto, kind: str | None) -> bytes:
    """model with its METADATA_KIND set to kind (removed for None)."""
    del model.metadata_props[:]
    if kind is not None:
        onnx.helper.set_model_props(model, {network.METADATA_KIND: kind})
    return model.SerializeToString()


def test_a_quantizer_artifact_is_continuous_by_its_metadata() -> None:
    policy = OnnxPolicy(d4pg_model().SerializeToString(), 1, "fp32")
    assert policy.continuous and policy.action_dim == 1 and policy.num_actions == 0


def test_a_quantizer_dqn_artifact_is_discrete_by_its_metadata() -> None:
    policy = OnnxPolicy(build_onnx(SPEC, torch_like_weights(SPEC)).SerializeToString(), 1, "fp32")
    assert not policy.continuous and policy.num_actions == 4


def test_a_file_without_metadata_is_told_by_its_output_name() -> None:
    policy = OnnxPolicy(with_kind(d4pg_model(), None), 1, "fp32")
    assert policy.continuous
    assert not OnnxPolicy(cartpole_balancer(), 1, "fp32").continuous


def test_an_unknown_kind_in_metadata_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(PolicyError, match=r"model v4: network kind 'sac_policy' is unknown.*"):
        OnnxPolicy(with_kind(d4pg_model(), "sac_policy"), 4, "fp32")


def test_metadata_naming_a_kind_of_another_output_is_refused() -> None:
    with pytest.raises(PolicyError, match=r"dqn_mlp by its metadata.*outputs 'action'"):
        OnnxPolicy(with_kind(d4pg_model(), network.DQN_MLP.name), 2, "fp32")
