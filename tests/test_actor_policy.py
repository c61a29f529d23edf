"""The actor's policy, exploration schedule and greedy evaluator, without any network.

Policies are small ONNX MLPs built here with onnx.helper, with the
interface the quantizer serves: input "obs" float32 [batch, obs_dim], output
"q_values" float32 [batch, num_actions].
"""

from __future__ import annotations

import itertools
from pathlib import Path

import gymnasium
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from actorq.config import ConfigError
from services.actor.evaluate import evaluate
from services.actor.exploration import EpsilonSchedule, apex_final_epsilon
from services.actor.policy import OnnxPolicy, PolicyError

Layer = tuple[np.ndarray, np.ndarray]  # weight [in, out], bias [out]


def mlp_onnx(layers: list[Layer]) -> bytes:
    """ONNX bytes of obs -> (MatMul + Add, ReLU between layers) -> q_values."""
    nodes, inits, x = [], [], "obs"
    for i, (w, b) in enumerate(layers):
        last = i == len(layers) - 1
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"mm{i}"]))
        out = "q_values" if last else f"pre{i}"
        nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [out]))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"h{i}"]))
            out = f"h{i}"
        x = out
    obs_dim, num_actions = layers[0][0].shape[0], layers[-1][0].shape[1]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", obs_dim])],
        [helper.make_tensor_value_info("q_values", TensorProto.FLOAT, ["batch", num_actions])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def random_layers(sizes: list[int], seed: int = 0) -> list[Layer]:
    rng = np.random.default_rng(seed)
    return [
        (
            (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32),
            (0.1 * rng.standard_normal(n_out)).astype(np.float32),
        )
        for n_in, n_out in itertools.pairwise(sizes)
    ]


def numpy_q(layers: list[Layer], obs: np.ndarray) -> np.ndarray:
    x = obs.astype(np.float32)
    for i, (w, b) in enumerate(layers):
        x = x @ w + b
        if i < len(layers) - 1:
            x = np.maximum(x, 0)
    return x


def cartpole_balancer() -> bytes:
    """Linear Q: push right when pole angle + angular velocity > 0 (CartPole-v1 obs)."""
    w = np.zeros((4, 2), np.float32)
    w[2, 1] = w[3, 1] = 1.0
    return mlp_onnx([(w, np.zeros(2, np.float32))])


def always_left() -> bytes:
    """Q-values that always prefer action 0 (CartPole falls in about 10 steps)."""
    return mlp_onnx([(np.zeros((4, 2), np.float32), np.array([1.0, 0.0], np.float32))])


# ----------------------------------------------------------------- policy


def test_greedy_action_matches_numpy_argmax() -> None:
    layers = random_layers([4, 32, 32, 3])
    policy = OnnxPolicy(mlp_onnx(layers), version=7, precision="fp32")
    obs = np.random.default_rng(1).standard_normal((200, 4)).astype(np.float32)
    expected = numpy_q(layers, obs).argmax(axis=1)
    assert [policy.act(row) for row in obs] == expected.tolist()


def test_q_values_match_numpy_for_a_batch() -> None:
    layers = random_layers([4, 16, 2])
    policy = OnnxPolicy(mlp_onnx(layers), version=1, precision="fp32")
    obs = np.random.default_rng(2).standard_normal((8, 4)).astype(np.float32)
    np.testing.assert_allclose(policy.q_values(obs), numpy_q(layers, obs), rtol=1e-5, atol=1e-6)


def test_policy_reports_its_shape_version_and_size() -> None:
    model = mlp_onnx(random_layers([6, 8, 5]))
    policy = OnnxPolicy(model, version=3, precision="fp32")
    assert (policy.obs_dim, policy.num_actions) == (6, 5)
    assert (policy.version, policy.precision, policy.size_bytes) == (3, "fp32", len(model))


def test_int8_model_runs_and_mostly_agrees_with_fp32(tmp_path: Path) -> None:
    layers = random_layers([4, 64, 64, 2])
    fp32_path = tmp_path / "fp32.onnx"
    int8_path = tmp_path / "int8.onnx"
    fp32_path.write_bytes(mlp_onnx(layers))
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
    fp32 = OnnxPolicy(fp32_path.read_bytes(), 1, "fp32")
    int8 = OnnxPolicy(int8_path.read_bytes(), 1, "int8")
    obs = np.random.default_rng(3).standard_normal((200, 4)).astype(np.float32)
    agree = np.mean([fp32.act(row) == int8.act(row) for row in obs])
    assert agree >= 0.9


def test_garbage_bytes_are_refused_with_the_version() -> None:
    with pytest.raises(PolicyError, match="model v4"):
        OnnxPolicy(b"not an onnx model", version=4, precision="int8")


def test_q_values_refuses_wrong_observation_width() -> None:
    policy = OnnxPolicy(mlp_onnx(random_layers([4, 2])), 1, "fp32")
    with pytest.raises(ValueError, match=r"expected \[batch, 4\]"):
        policy.q_values(np.zeros((2, 5), np.float32))


# ------------------------------------------------------------ exploration


def test_epsilon_decays_linearly_then_stays_final() -> None:
    schedule = EpsilonSchedule(start=1.0, final=0.1, decay_steps=100)
    values = [schedule(s) for s in (0, 50, 100, 10_000)]
    assert values == pytest.approx([1.0, 0.55, 0.1, 0.1])


def test_zero_decay_steps_means_final_from_the_start() -> None:
    assert EpsilonSchedule(1.0, 0.05, 0)(0) == 0.05


def test_apex_ladder_spreads_final_epsilon_over_actors() -> None:
    # Horgan et al.: eps_i = 0.4 ** (1 + 7 i / (N - 1)).
    values = [apex_final_epsilon(0.4, 7.0, i, 8) for i in range(8)]
    assert values == pytest.approx([0.4 ** (1 + i) for i in range(8)])


def test_apex_ladder_is_off_for_alpha_zero_or_one_actor() -> None:
    assert apex_final_epsilon(0.05, 0.0, 3, 4) == 0.05
    assert apex_final_epsilon(0.05, 7.0, 0, 1) == 0.05


# -------------------------------------------------------------- evaluator


def test_evaluator_runs_every_episode_and_reports_their_mean() -> None:
    policy = OnnxPolicy(cartpole_balancer(), 1, "fp32")
    result = evaluate(policy, "CartPole-v1", episodes=3, seed=5)
    assert result.episodes_run == 3 and not result.stopped_early
    assert result.mean == pytest.approx(sum(result.returns) / 3)


def test_evaluator_returns_match_a_hand_run_greedy_episode() -> None:
    policy = OnnxPolicy(cartpole_balancer(), 1, "fp32")
    result = evaluate(policy, "CartPole-v1", episodes=2, seed=11)
    env = gymnasium.make("CartPole-v1")
    expected = []
    for i in range(2):
        obs, _ = env.reset(seed=11 + i)
        total, done = 0.0, False
        while not done:
            action = int(obs[2] + obs[3] > 0)  # what the linear Q prefers
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        expected.append(total)
    assert result.returns == expected


def test_evaluator_stops_early_once_the_target_is_out_of_reach() -> None:
    policy = OnnxPolicy(always_left(), 1, "fp32")
    result = evaluate(
        policy, "CartPole-v1", 10, seed=0, target_return=475.0, max_episode_return=500.0
    )
    # One ~10-step episode leaves at most (10 + 9 * 500) / 10 < 475.
    assert result.stopped_early
    assert result.episodes_run == 1
    assert result.returns[0] < 25


def test_evaluator_keeps_going_while_the_target_is_reachable() -> None:
    policy = OnnxPolicy(always_left(), 1, "fp32")
    # A target of 5 is reached by any episode: nothing to stop for.
    result = evaluate(policy, "CartPole-v1", 4, seed=0, target_return=5.0, max_episode_return=500)
    assert result.episodes_run == 4 and not result.stopped_early


def test_evaluator_never_stops_early_without_a_return_bound() -> None:
    policy = OnnxPolicy(always_left(), 1, "fp32")
    result = evaluate(policy, "CartPole-v1", 3, seed=0, target_return=475.0)
    assert result.episodes_run == 3 and not result.stopped_early


def test_evaluator_refuses_a_policy_shaped_for_another_env() -> None:
    policy = OnnxPolicy(mlp_onnx(random_layers([8, 4])), 2, "fp32")
    with pytest.raises(PolicyError, match="CartPole-v1 has 4 and 2"):
        evaluate(policy, "CartPole-v1", 1, seed=0)


def test_evaluator_names_an_unknown_env() -> None:
    policy = OnnxPolicy(cartpole_balancer(), 1, "fp32")
    with pytest.raises(ConfigError, match=r"'NoSuchEnv-v0'.*pprint_registry"):
        evaluate(policy, "NoSuchEnv-v0", 1, seed=0)
