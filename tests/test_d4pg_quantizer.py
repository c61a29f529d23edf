"""The D4PG policy in the quantizer: the ``d4pg_policy`` ONNX graph (fp32 and int8),
its validation against fp32, and refusals of policies that do not match their spec.

Graph numerics are checked against the learner's own torch forward pass; the
service tests publish to a real ``actorq serve quantizer`` process.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import torch
from conftest import ServiceProcess, start_service

from actorq.clients import QuantizerClient
from actorq.network import ACTION_OUTPUT, OBS_INPUT
from actorq.ort import make_session
from actorq.rpc import channel
from actorq.v1 import common_pb2
from services.actor.policy import OnnxPolicy
from services.learner.d4pg import D4PG, D4PGConfig
from services.quantizer.graph import (
    SpecError,
    WeightsError,
    action_range,
    build_onnx,
    check_weights,
    expected_tensors,
)
from services.quantizer.quantize import quantize_int8
from services.quantizer.validate import ACTION_TOLERANCE, compare

LOW = np.array([-2.0, 0.0, -1.0], np.float32)
HIGH = np.array([2.0, 10.0, 1.0], np.float32)


def trained_like_agent(layer_norm: bool = True, activation: str = "elu", seed: int = 0) -> D4PG:
    """A small D4PG agent whose policy head is scaled up, so actions spread over the bounds."""
    cfg = D4PGConfig(
        policy_sizes=[64, 32], critic_sizes=[32], layer_norm=layer_norm, activation=activation
    )
    agent = D4PG(6, LOW, HIGH, cfg, seed=seed)
    with torch.no_grad():
        head = agent.policy.layers[-1]
        torch.nn.init.normal_(head.weight, std=0.5)
    return agent


def obs_batch(rows: int = 128, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 6)).astype(np.float32)


def run(model: bytes, obs: np.ndarray) -> np.ndarray:
    return make_session(model).run([ACTION_OUTPUT], {OBS_INPUT: obs})[0]


def policy_spec(**kw: object) -> common_pb2.NetworkSpec:
    fields: dict[str, object] = {
        "kind": "d4pg_policy",
        "obs_dim": 6,
        "hidden_sizes": [16],
        "output_dim": 3,
        "activation": "elu",
        "action_low": LOW.tolist(),
        "action_high": HIGH.tolist(),
        "layer_norm": True,
    }
    fields.update(kw)
    return common_pb2.NetworkSpec(**fields)  # type: ignore[arg-type]


def spec_weights(spec: common_pb2.NetworkSpec) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        name: rng.uniform(-0.3, 0.3, shape).astype(np.float32)
        for name, shape in expected_tensors(spec).items()
    }


# ------------------------------------------------------------------ graph


@pytest.mark.parametrize(("layer_norm", "activation"), [(True, "elu"), (False, "relu")])
def test_policy_graph_matches_the_learners_torch_forward_pass(
    layer_norm: bool, activation: str
) -> None:
    agent = trained_like_agent(layer_norm, activation)
    model = build_onnx(agent.network_spec(), agent.policy_weights()).SerializeToString()
    obs = obs_batch()
    np.testing.assert_allclose(run(model, obs), agent.act(obs), rtol=1e-5, atol=1e-5)


def test_policy_graph_matches_a_numpy_forward_pass() -> None:
    spec = policy_spec(hidden_sizes=[16, 8])
    w = spec_weights(spec)
    obs = obs_batch(5)
    x = obs.astype(np.float64) @ w["layers.0.weight"].T + w["layers.0.bias"]
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    x = np.tanh(x * w["layer_norm.weight"] + w["layer_norm.bias"])
    x = x @ w["layers.1.weight"].T + w["layers.1.bias"]
    x = np.where(x > 0, x, np.expm1(x))  # ELU
    x = np.tanh(x @ w["layers.2.weight"].T + w["layers.2.bias"])
    expected = (HIGH + LOW) / 2 + (HIGH - LOW) / 2 * x
    got = run(build_onnx(spec, w).SerializeToString(), obs)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_policy_actions_stay_within_the_bounds_for_extreme_observations() -> None:
    agent = trained_like_agent()
    model = build_onnx(agent.network_spec(), agent.policy_weights()).SerializeToString()
    actions = run(model, 1e4 * obs_batch())
    assert (actions >= LOW).all() and (actions <= HIGH).all()


def test_served_policy_reports_a_continuous_action_output() -> None:
    agent = trained_like_agent()
    model = build_onnx(agent.network_spec(), agent.policy_weights()).SerializeToString()
    policy = OnnxPolicy(model, version=2, precision="fp32")
    assert policy.continuous and (policy.obs_dim, policy.action_dim, policy.num_actions) == (
        6,
        3,
        0,
    )
    obs = obs_batch(3)
    np.testing.assert_allclose(policy.action(obs[1]), agent.act(obs[1:2])[0], atol=1e-5)


@pytest.mark.parametrize("method", ["dynamic", "static_qdq"])
def test_int8_policy_stays_within_tolerance_of_fp32(method: str) -> None:
    agent = trained_like_agent()
    spec = agent.network_spec()
    fp32 = build_onnx(spec, agent.policy_weights())
    obs = obs_batch(256)
    int8 = quantize_int8(fp32, method, obs, fp32_input_layer=True)
    cmp = compare(run(fp32.SerializeToString(), obs), run(int8, obs), action_range(spec))
    assert cmp.action_agreement >= 0.95
    assert cmp.max_abs_err < ACTION_TOLERANCE * float((HIGH - LOW).max())


def test_continuous_agreement_counts_rows_within_the_tolerance_of_the_range() -> None:
    reference = np.zeros((4, 2))
    quantized = np.array([[0.0, 0.0], [0.09, -0.09], [0.11, 0.0], [0.0, 0.5]])
    # Range 2 in dim 0 (tolerance 0.1) and 10 in dim 1 (tolerance 0.5).
    cmp = compare(reference, quantized, np.array([2.0, 10.0]))
    assert cmp.action_agreement == 0.75
    assert cmp.max_abs_err == 0.5


def test_discrete_kind_has_no_action_range() -> None:
    spec = common_pb2.NetworkSpec(kind="dqn_mlp", obs_dim=4, hidden_sizes=[8], output_dim=2)
    assert action_range(spec) is None
    np.testing.assert_array_equal(action_range(policy_spec()), HIGH - LOW)


# -------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"action_low": [-1.0]}, r"action_low/action_high must hold output_dim=3 bounds each"),
        ({"action_high": [2.0, -1.0, 1.0]}, r"must be finite with low < high"),
        ({"action_low": [-np.inf, 0.0, -1.0]}, r"must be finite with low < high"),
        (
            {"activation": "sigmoid"},
            r"activation 'sigmoid' is not supported for kind 'd4pg_policy'",
        ),
        ({"hidden_sizes": []}, r"layer_norm needs at least one hidden layer"),
    ],
)
def test_unbuildable_policy_spec_is_refused(overrides: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        expected_tensors(policy_spec(**overrides))


def test_policy_blob_without_its_layer_norm_tensors_is_refused_naming_them() -> None:
    spec = policy_spec()
    w = spec_weights(spec)
    del w["layer_norm.weight"], w["layer_norm.bias"]
    with pytest.raises(
        WeightsError, match=r"missing tensors \['layer_norm.weight', 'layer_norm.bias'\]"
    ):
        check_weights(spec, w)


def test_policy_blob_with_a_layer_norm_the_spec_does_not_describe_is_refused() -> None:
    spec = policy_spec(layer_norm=False)
    w = spec_weights(policy_spec(layer_norm=True))
    with pytest.raises(
        WeightsError, match=r"unexpected tensors \['layer_norm.bias', 'layer_norm.weight'\]"
    ):
        check_weights(spec, w)


def test_policy_blob_with_a_head_of_another_action_dim_is_refused_naming_it() -> None:
    spec = policy_spec()
    w = spec_weights(spec)
    w["layers.1.weight"] = np.zeros((2, 16), np.float32)
    with pytest.raises(
        WeightsError, match=r"'layers.1.weight' has shape \[2, 16\], expected \[3, 16\]"
    ):
        check_weights(spec, w)


# ---------------------------------------------------------------- service


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuantizerClient]:
    svc: ServiceProcess = start_service(
        "quantizer", ["--calibration-size", "128"], tmp_path_factory.mktemp("quantizer")
    )
    try:
        with channel(svc.address) as ch:
            yield QuantizerClient(ch)
    finally:
        svc.stop()


def test_service_serves_fp32_and_int8_policies_with_an_action_error_report(
    client: QuantizerClient,
) -> None:
    agent = trained_like_agent()
    response = client.publish(
        policy_version=1,
        learner_step=100,
        network=agent.network_spec(),
        weights=agent.policy_weights(),
        calibration_obs=obs_batch(128),
    )
    reports = {a.precision: a.quantization for a in response.artifacts}
    assert set(reports) == {"fp32", "int8"}
    assert reports["int8"].calibration_source == "replay"
    assert reports["int8"].action_agreement >= 0.95
    assert 0 < reports["int8"].max_abs_err < 0.5
    fetched = client.fetch("int8")
    assert fetched is not None
    policy = OnnxPolicy(fetched.data, int(fetched.artifact.version), "int8")
    assert policy.continuous and policy.action_dim == 3
    assert list(fetched.artifact.network.action_high) == HIGH.tolist()


def test_service_refuses_a_policy_blob_that_does_not_match_its_spec_and_stays_up(
    client: QuantizerClient,
) -> None:
    before = client.list_models()
    served = max((a.version for a in before.artifacts), default=0)
    agent = trained_like_agent()
    bad = agent.policy_weights()
    bad["layers.0.weight"] = np.zeros((64, 5), np.float32)  # spec says obs_dim 6
    with pytest.raises(grpc.RpcError) as info:
        client.publish(
            policy_version=served + 1,
            learner_step=1,
            network=agent.network_spec(),
            weights=bad,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'layers.0.weight' has shape [64, 5], expected [64, 6]" in (info.value.details() or "")
    after = client.list_models()
    assert max((a.version for a in after.artifacts), default=0) == served
    assert after.versions_built == before.versions_built
    # Still serving: the same version number publishes fine with the right weights.
    client.publish(
        policy_version=served + 1,
        learner_step=2,
        network=agent.network_spec(),
        weights=agent.policy_weights(),
    )
    assert max(a.version for a in client.list_models().artifacts) == served + 1
