"""DQN's update step, checked against hand computations on tiny networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actorq.config import ConfigError
from actorq.transitions import Transitions
from services.learner.common import Batch
from services.learner.dqn import DQN, QNetwork
from services.learner.hyperparams import DQNConfig


def make_batch(
    n: int = 8, obs_dim: int = 4, num_actions: int = 2, seed: int = 0, discount: float = 0.9
) -> Transitions:
    rng = np.random.default_rng(seed)
    return Transitions(
        obs=rng.normal(size=(n, obs_dim)).astype(np.float32),
        action=rng.integers(0, num_actions, n).astype(np.int64),
        reward=rng.normal(size=n).astype(np.float32),
        discount=np.full(n, discount, np.float32),
        next_obs=rng.normal(size=(n, obs_dim)).astype(np.float32),
    )


def params(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def linear(net: QNetwork, i: int) -> torch.nn.Linear:
    layer = net.layers[i]
    assert isinstance(layer, torch.nn.Linear)
    return layer


def set_linear(layer: torch.nn.Linear, weight: list[list[float]], bias: list[float]) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))


def forward_np(net: QNetwork, obs: np.ndarray) -> np.ndarray:
    """The MLP by hand: relu(x W^T + b) ..., linear head."""
    x = obs.astype(np.float64)
    n = len(net.layers)
    for i in range(n):
        layer = linear(net, i)
        w = layer.weight.detach().numpy().astype(np.float64)
        b = layer.bias.detach().numpy().astype(np.float64)
        x = x @ w.T + b
        if i < n - 1:
            x = np.maximum(x, 0.0)
    return x


@pytest.fixture
def tiny() -> DQN:
    """obs 2 -> hidden 2 -> 3 actions, online and target set so their argmaxes differ."""
    agent = DQN(2, 3, DQNConfig(hidden_sizes=[2], target_update_every=10**6))
    set_linear(linear(agent.online, 0), [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    set_linear(linear(agent.online, 1), [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], [0.0, 0.0, 0.0])
    set_linear(linear(agent.target, 0), [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    set_linear(linear(agent.target, 1), [[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]], [0.0, 0.0, 1.0])
    return agent


def tiny_batch() -> Batch:
    # next_obs (1, 2): online Q = [1, 2, 1.5] -> a* = 1; target Q = [2, 2, 7], max 7.
    # next_obs (3, 0): online Q = [3, 0, 1.5] -> a* = 0; target Q = [6, 0, 1], max 6.
    return Batch.from_transitions(
        Transitions(
            obs=np.zeros((2, 2), np.float32),
            action=np.array([0, 1], np.int64),
            reward=np.array([1.0, -1.0], np.float32),
            discount=np.array([0.5, 0.0], np.float32),  # the second episode terminated
            next_obs=np.array([[1.0, 2.0], [3.0, 0.0]], np.float32),
        )
    )


def test_double_dqn_target_values_the_online_argmax_with_the_target_net(tiny: DQN) -> None:
    # y = r + discount * Q_target(s', argmax_a Q_online(s', a)) = [1 + 0.5 * 2, -1 + 0 * 6]
    np.testing.assert_allclose(tiny.td_target(tiny_batch()).numpy(), [2.0, -1.0])


def test_vanilla_dqn_target_takes_the_target_nets_max(tiny: DQN) -> None:
    tiny.cfg.double_dqn = False
    np.testing.assert_allclose(tiny.td_target(tiny_batch()).numpy(), [1.0 + 0.5 * 7.0, -1.0])


def test_td_target_matches_a_numpy_forward_on_a_random_net() -> None:
    agent = DQN(4, 3, DQNConfig(hidden_sizes=[5, 6]), seed=3)
    with torch.no_grad():
        linear(agent.target, 0).bias.add_(0.3)  # target != online
    t = make_batch(16, 4, 3, discount=0.97)
    q_online = forward_np(agent.online, t.next_obs)
    q_target = forward_np(agent.target, t.next_obs)
    a_star = q_online.argmax(axis=1)
    expected = t.reward + t.discount * q_target[np.arange(16), a_star]
    got = agent.td_target(Batch.from_transitions(t)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_loss_is_the_mean_huber_of_the_td_errors_before_the_step() -> None:
    agent = DQN(4, 2, DQNConfig(hidden_sizes=[8], huber_delta=1.0), seed=1)
    t = make_batch(32, discount=0.0)
    t.reward *= 4  # errors on both sides of delta: quadratic and linear parts
    batch = Batch.from_transitions(t)
    q = forward_np(agent.online, t.obs)[np.arange(32), t.action]
    err = np.abs(agent.td_target(batch).numpy() - q)
    assert (err < 1).any() and (err > 1).any()
    huber = np.where(err <= 1.0, 0.5 * err**2, err - 0.5)
    metrics = agent.update(batch)
    assert metrics["loss"] == pytest.approx(huber.mean(), rel=1e-5)
    assert metrics["td_abs"] == pytest.approx(err.mean(), rel=1e-5)
    assert metrics["mean_q"] == pytest.approx(q.mean(), rel=1e-5, abs=1e-6)


def test_importance_weights_scale_each_transitions_loss() -> None:
    agent = DQN(4, 2, DQNConfig(hidden_sizes=[8]))
    t = make_batch(8)
    unweighted = DQN(4, 2, DQNConfig(hidden_sizes=[8])).update(t)["loss"]
    assert agent.update(t, weights=np.full(8, 0.25, np.float32))["loss"] == pytest.approx(
        0.25 * unweighted, rel=1e-5
    )


def test_weighted_loss_is_the_mean_of_weight_times_huber_per_transition() -> None:
    agent = DQN(4, 2, DQNConfig(hidden_sizes=[8], huber_delta=1.0), seed=2)
    t = make_batch(16, discount=0.0)
    t.reward *= 4  # both sides of delta
    q = forward_np(agent.online, t.obs)[np.arange(16), t.action]
    err = np.abs(t.reward.astype(np.float64) - q)
    huber = np.where(err <= 1.0, 0.5 * err**2, err - 0.5)
    weights = np.linspace(0.1, 1.0, 16).astype(np.float32)
    metrics = agent.update(t, weights=weights)
    assert metrics["loss"] == pytest.approx((weights * huber).mean(), rel=1e-5)


def test_update_leaves_each_transitions_td_error_before_the_step() -> None:
    agent = DQN(4, 2, DQNConfig(hidden_sizes=[8]), seed=4)
    assert agent.last_td_abs is None
    t = make_batch(16, discount=0.9)
    batch = Batch.from_transitions(t)
    q = forward_np(agent.online, t.obs)[np.arange(16), t.action]
    expected = np.abs(agent.td_target(batch).numpy() - q)
    agent.update(batch, weights=np.full(16, 0.5, np.float32))  # weights scale loss, not TD
    assert agent.last_td_abs is not None
    assert agent.last_td_abs.dtype == np.float32 and agent.last_td_abs.shape == (16,)
    np.testing.assert_allclose(agent.last_td_abs, expected, rtol=1e-5, atol=1e-6)


def test_zero_importance_weights_leave_the_network_unchanged() -> None:
    agent = DQN(4, 2, DQNConfig(hidden_sizes=[8]))
    before = params(agent.online)
    metrics = agent.update(make_batch(8), weights=np.zeros(8, np.float32))
    assert metrics["loss"] == 0.0
    for p, q in zip(before, agent.online.parameters(), strict=True):
        torch.testing.assert_close(p, q.detach())


def grad_norm(net: torch.nn.Module) -> float:
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))


def test_gradient_norm_is_clipped_to_max_grad_norm() -> None:
    t = make_batch(16)
    t.reward *= 1000  # huge TD errors, huge gradients
    clipped = DQN(4, 2, DQNConfig(hidden_sizes=[16], max_grad_norm=0.5))
    clipped.update(t)
    assert grad_norm(clipped.online) == pytest.approx(0.5, rel=1e-4)
    unclipped = DQN(4, 2, DQNConfig(hidden_sizes=[16], max_grad_norm=0.0))
    unclipped.update(t)
    assert grad_norm(unclipped.online) > 0.5


def test_loss_falls_when_fitting_a_fixed_batch() -> None:
    agent = DQN(4, 2, DQNConfig(hidden_sizes=[64, 64], lr=1e-3), seed=0)
    t = make_batch(64, discount=0.0)  # target = reward: plain regression
    first = agent.update(t)["loss"]
    for _ in range(300):
        last = agent.update(t)["loss"]
    assert last < 0.05 * first


def test_target_is_a_hard_copy_every_k_updates_when_tau_is_one() -> None:
    agent = DQN(4, 2, DQNConfig(hidden_sizes=[8], target_update_every=3, tau=1.0))
    initial = params(agent.target)
    t = make_batch()
    for step in (1, 2):
        agent.update(t)
        for a, b in zip(initial, agent.target.parameters(), strict=True):
            torch.testing.assert_close(a, b, msg=f"target moved at step {step}")
    agent.update(t)
    for a, b in zip(agent.online.parameters(), agent.target.parameters(), strict=True):
        torch.testing.assert_close(a.detach(), b)


def test_target_moves_tau_of_the_way_to_online_every_k_updates() -> None:
    agent = DQN(4, 2, DQNConfig(hidden_sizes=[8], target_update_every=2, tau=0.25))
    old_target = params(agent.target)
    t = make_batch()
    agent.update(t)
    agent.update(t)
    for old, online, new in zip(
        old_target, agent.online.parameters(), agent.target.parameters(), strict=True
    ):
        torch.testing.assert_close(new, 0.75 * old + 0.25 * online.detach())


def test_target_net_gets_no_gradient() -> None:
    agent = DQN(4, 2, DQNConfig(hidden_sizes=[8]))
    agent.update(make_batch())
    assert all(p.grad is None for p in agent.target.parameters())


def test_parameter_names_and_shapes_follow_the_wire_contract() -> None:
    net = QNetwork(4, 2, [256, 128])
    shapes = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert shapes == {
        "layers.0.weight": [256, 4],
        "layers.0.bias": [256],
        "layers.1.weight": [128, 256],
        "layers.1.bias": [128],
        "layers.2.weight": [2, 128],
        "layers.2.bias": [2],
    }


def test_policy_weights_are_float32_copies_named_like_the_state_dict() -> None:
    agent = DQN(4, 2, DQNConfig(hidden_sizes=[8, 8]))
    weights = agent.policy_weights()
    assert list(weights) == list(agent.online.state_dict())
    assert all(w.dtype == np.float32 for w in weights.values())
    weights["layers.0.weight"][:] = 123.0  # a copy: the network is untouched
    assert not (linear(agent.online, 0).weight == 123.0).any()


def test_network_spec_describes_the_online_net() -> None:
    spec = DQN(6, 3, DQNConfig(hidden_sizes=[32, 16])).network_spec()
    assert (spec.kind, spec.obs_dim, list(spec.hidden_sizes), spec.output_dim, spec.activation) == (
        "dqn_mlp",
        6,
        [32, 16],
        3,
        "relu",
    )


def test_same_seed_gives_the_same_initial_network_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_draw = torch.rand(1)
    torch.manual_seed(123)
    a = DQN(4, 2, DQNConfig(hidden_sizes=[8]), seed=7)
    assert torch.rand(1) == expected_draw
    b = DQN(4, 2, DQNConfig(hidden_sizes=[8]), seed=7)
    for p, q in zip(a.online.parameters(), b.online.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_state_dict_round_trip_restores_outputs_optimizer_and_step() -> None:
    cfg = DQNConfig(hidden_sizes=[16, 16], target_update_every=4)
    a = DQN(4, 2, cfg, seed=1)
    for i in range(6):
        a.update(make_batch(seed=i))
    b = DQN(4, 2, cfg, seed=99)
    b.load_state_dict(a.state_dict())
    assert b.steps == 6
    obs = torch.from_numpy(make_batch(seed=50).obs)
    torch.testing.assert_close(a.online(obs), b.online(obs))
    torch.testing.assert_close(a.target(obs), b.target(obs))
    # Same Adam moments: the next update is identical.
    batch = make_batch(seed=7)
    assert a.update(batch) == b.update(batch)
    for p, q in zip(a.online.parameters(), b.online.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_load_state_dict_of_another_shape_names_the_layers_that_differ() -> None:
    saved = DQN(4, 2, DQNConfig(hidden_sizes=[16])).state_dict()
    with pytest.raises(ValueError, match=r"layers\.0\.weight: saved \[16, 4\], now \[32, 4\]"):
        DQN(4, 2, DQNConfig(hidden_sizes=[32])).load_state_dict(saved)


def test_batch_with_the_wrong_obs_width_is_refused_naming_the_field() -> None:
    agent = DQN(4, 2, DQNConfig(hidden_sizes=[8]))
    with pytest.raises(ValueError, match=r"obs has shape \[8, 6\], expected \[8, 4\]"):
        agent.update(make_batch(8, obs_dim=6))
    assert agent.steps == 0


def test_batch_with_an_action_outside_the_action_space_is_refused() -> None:
    agent = DQN(4, 2, DQNConfig(hidden_sizes=[8]))
    with pytest.raises(ValueError, match=r"outside \[0, 1\] for 2 actions"):
        agent.update(make_batch(8, num_actions=5, seed=3))
    assert agent.steps == 0


def test_read_only_arrays_from_the_wire_are_accepted() -> None:
    t = make_batch(8)
    wire = Transitions(
        *(np.frombuffer(a.tobytes(), a.dtype).reshape(a.shape) for a in t.__dict__.values())
    )
    assert not wire.obs.flags.writeable
    DQN(4, 2, DQNConfig(hidden_sizes=[8])).update(wire)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("hidden_sizes", [], "hidden_sizes must be one or more positive widths"),
        ("hidden_sizes", [64, 0], "hidden_sizes must be one or more positive widths"),
        ("lr", 0.0, "lr must be positive"),
        ("batch_size", 0, "batch_size must be at least 1"),
        ("target_update_every", 0, "target_update_every must be at least 1"),
        ("tau", 0.0, r"tau must be in \(0, 1\]"),
        ("tau", 1.5, r"tau must be in \(0, 1\]"),
        ("huber_delta", 0.0, "huber_delta must be positive"),
        ("max_grad_norm", -1.0, "max_grad_norm must be >= 0"),
    ],
)
def test_config_refuses_values_that_cannot_work(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DQNConfig(**{field: value})  # type: ignore[arg-type]
