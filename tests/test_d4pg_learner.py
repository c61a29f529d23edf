"""D4PG's learner side: categorical projection, networks, update step, config, checkpoints.

No network: the agent is driven with hand-made batches. The learner service
running D4PG against real replay and quantizer processes is in test_d4pg_service.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from actorq.config import ConfigError
from actorq.transitions import Transitions
from services.learner.algorithms import continuous_env_spaces
from services.learner.config import LearnerConfig
from services.learner.d4pg import D4PG, PolicyNetwork, categorical_projection
from services.learner.hyperparams import PRESETS, D4PGConfig
from services.learner.learner import Learner
from services.quantizer.graph import expected_tensors

ROOT = Path(__file__).resolve().parents[1]
BOUNDS = (-np.ones(2, np.float32), np.ones(2, np.float32))


def small_config(**kw: object) -> D4PGConfig:
    kw.setdefault("policy_sizes", [32, 32])
    kw.setdefault("critic_sizes", [64, 64])
    return D4PGConfig(**kw)  # type: ignore[arg-type]


def agent(obs_dim: int = 3, **kw: object) -> D4PG:
    return D4PG(obs_dim, *BOUNDS, small_config(**kw), seed=0)


def transitions(n: int = 16, obs_dim: int = 3, action_dim: int = 2, seed: int = 0) -> Transitions:
    rng = np.random.default_rng(seed)
    return Transitions(
        obs=rng.standard_normal((n, obs_dim)).astype(np.float32),
        action=rng.uniform(-1, 1, (n, action_dim)).astype(np.float32),
        reward=rng.random(n).astype(np.float32),
        discount=np.full(n, 0.9, np.float32),
        next_obs=rng.standard_normal((n, obs_dim)).astype(np.float32),
    )


# ------------------------------------------------------------ projection


def test_categorical_projection_matches_a_hand_computed_case() -> None:
    atoms = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.0]] * 3)
    reward = torch.tensor([0.5, 3.0, 1.25])
    discount = torch.tensor([0.5, 1.0, 0.0])
    projected = categorical_projection(probs, reward, discount, atoms)
    expected = torch.tensor(
        [
            # 0.5 + 0.5 z = [0.5, 1, 1.5, 2, 2.5]: 0.5 splits 0.05/0.05 between atoms
            # 0 and 1, 1.0 lands on atom 1, 1.5 splits 0.15/0.15, 2.0 lands on atom 2.
            [0.05, 0.4, 0.55, 0.0, 0.0],
            # 3 + z = [3, 4, 5, 6, 7] clamped to [3, 4, 4, 4, 4].
            [0.0, 0.0, 0.0, 0.1, 0.9],
            # A terminal (discount 0): all mass at 1.25, 3/4 to atom 1 and 1/4 to atom 2.
            [0.0, 0.75, 0.25, 0.0, 0.0],
        ]
    )
    torch.testing.assert_close(projected, expected)


def test_categorical_projection_keeps_every_row_a_distribution() -> None:
    gen = torch.Generator().manual_seed(0)
    atoms = torch.linspace(-150, 150, 51)
    probs = torch.softmax(torch.randn(64, 51, generator=gen), dim=-1)
    reward = 10 * torch.randn(64, generator=gen)
    discount = torch.rand(64, generator=gen)
    projected = categorical_projection(probs, reward, discount, atoms)
    assert (projected >= 0).all()
    torch.testing.assert_close(projected.sum(dim=-1), torch.ones(64))


def test_projection_of_the_identity_shift_changes_nothing() -> None:
    atoms = torch.linspace(-10, 10, 21)
    probs = torch.softmax(torch.randn(4, 21, generator=torch.Generator().manual_seed(1)), dim=-1)
    projected = categorical_projection(probs, torch.zeros(4), torch.ones(4), atoms)
    torch.testing.assert_close(projected, probs)


# -------------------------------------------------------------- networks


def test_policy_maps_tanh_onto_asymmetric_bounds() -> None:
    low, high = np.array([-2.0, 0.0], np.float32), np.array([2.0, 10.0], np.float32)
    policy = PolicyNetwork(3, low, high, [16], layer_norm=True, activation="elu")
    with torch.no_grad():
        policy.layers[-1].bias.copy_(torch.tensor([50.0, -50.0]))  # saturate tanh
        action = policy(torch.zeros(1, 3))
    torch.testing.assert_close(action, torch.tensor([[2.0, 0.0]]))


def test_initial_policy_acts_near_the_middle_of_the_bounds() -> None:
    actions = agent().act(np.random.default_rng(0).standard_normal((32, 3)).astype(np.float32))
    assert np.abs(actions).max() < 0.05


def test_policy_weights_are_exactly_the_tensors_the_quantizer_expects() -> None:
    for layer_norm in (True, False):
        a = agent(layer_norm=layer_norm)
        expected = expected_tensors(a.network_spec())
        got = {name: tuple(w.shape) for name, w in a.policy_weights().items()}
        assert got == expected
        assert all(w.dtype == np.float32 for w in a.policy_weights().values())


def test_network_spec_describes_the_policy_for_the_quantizer() -> None:
    spec = agent(layer_norm=True, activation="relu").network_spec()
    assert spec.kind == "d4pg_policy"
    assert (spec.obs_dim, list(spec.hidden_sizes), spec.output_dim) == (3, [32, 32], 2)
    assert (spec.activation, spec.layer_norm) == ("relu", True)
    assert list(spec.action_low) == [-1.0, -1.0] and list(spec.action_high) == [1.0, 1.0]


def test_presets_size_the_networks() -> None:
    acme = D4PG(5, *BOUNDS, D4PGConfig(preset="acme"))
    paper = D4PG(5, *BOUNDS, D4PGConfig(preset="paper"))
    assert acme.network_spec().hidden_sizes == [256, 256, 256]
    assert paper.network_spec().hidden_sizes == [2048, 2048, 2048]
    for a in (acme, paper):
        widths = [layer.out_features for layer in a.critic.layers]
        assert widths == [512, 512, 256, 51]
    assert PRESETS["paper"]["critic_sizes"] == PRESETS["acme"]["critic_sizes"]


# ----------------------------------------------------------------- update


def test_update_returns_finite_losses_and_counts_steps() -> None:
    a = agent()
    metrics = a.update(transitions())
    assert set(metrics) >= {"loss", "policy_loss", "mean_q", "td_abs"}
    assert all(np.isfinite(v) for v in metrics.values())
    assert a.steps == 1


def test_critic_learns_the_value_of_a_one_step_reward() -> None:
    """Reward 1 then a terminal: Z(obs, action) should put its mass at 1."""
    a = agent(vmin=-2.0, vmax=2.0, critic_lr=1e-3)
    batch = transitions(64)
    batch.reward[:] = 1.0
    batch.discount[:] = 0.0
    for _ in range(300):
        metrics = a.update(batch)
    assert metrics["mean_q"] == pytest.approx(1.0, abs=0.05)


def test_policy_climbs_the_critic_towards_the_best_action() -> None:
    """One-step bandit with reward 1 - (a - 0.5)^2 summed over dims: best a = 0.5."""
    a = agent(vmin=-3.0, vmax=3.0, critic_lr=3e-3, policy_lr=3e-4)
    rng = np.random.default_rng(0)
    for _ in range(1000):
        batch = transitions(64, seed=int(rng.integers(1 << 30)))
        batch.reward[:] = 1.0 - ((batch.action - 0.5) ** 2).sum(axis=1)
        batch.discount[:] = 0.0
        a.update(batch)
    actions = a.act(rng.standard_normal((32, 3)).astype(np.float32))
    np.testing.assert_allclose(actions, 0.5, atol=0.2)


def test_targets_follow_the_online_networks_every_k_updates() -> None:
    a = agent(target_update_every=3)
    batch = transitions()
    a.update(batch)
    a.update(batch)
    assert not torch.equal(a.policy.layers[0].weight, a.target_policy.layers[0].weight)
    a.update(batch)
    assert torch.equal(a.policy.layers[0].weight, a.target_policy.layers[0].weight)
    assert torch.equal(a.critic.layers[0].weight, a.target_critic.layers[0].weight)


def test_importance_weights_scale_the_critic_loss() -> None:
    batch = transitions()
    plain = agent().update(batch)["loss"]
    halved = agent().update(batch, np.full(16, 0.5, np.float32))["loss"]
    assert halved == pytest.approx(plain / 2, rel=1e-5)


def test_batch_with_actions_of_the_wrong_width_is_refused_naming_action() -> None:
    bad = transitions(action_dim=3)
    with pytest.raises(ValueError, match=r"batch action has shape \[16, 3\], expected \[16, 2\]"):
        agent().update(bad)


def test_batch_with_discrete_actions_is_refused() -> None:
    bad = transitions()
    bad.action = np.zeros(16, np.int64)
    with pytest.raises(ValueError, match=r"batch action has shape \[16\], expected \[16, 2\]"):
        agent().update(bad)


# ------------------------------------------------------------- checkpoints


def test_state_dict_round_trip_continues_identically() -> None:
    a, b = agent(), D4PG(3, *BOUNDS, small_config(), seed=5)
    a.update(transitions())
    b.load_state_dict(a.state_dict())
    obs = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_array_equal(a.act(obs), b.act(obs))
    batch = transitions(seed=2)
    assert a.update(batch) == b.update(batch)
    assert a.steps == b.steps == 2


def test_state_of_other_network_sizes_is_refused_naming_tensors() -> None:
    saved = agent().state_dict()
    other = D4PG(3, *BOUNDS, small_config(policy_sizes=[16, 32]))
    with pytest.raises(
        ValueError, match=r"policy\.layers\.0\.weight: saved \[32, 3\], now \[16, 3\]"
    ):
        other.load_state_dict(saved)


def test_learner_core_trains_d4pg_and_remembers_calibration_obs(tmp_path: Path) -> None:
    cfg = LearnerConfig(algo="d4pg", checkpoint_dir=str(tmp_path), d4pg=small_config())
    core = Learner(cfg, 3, action_bounds=BOUNDS)
    core.train_step(transitions())
    calib = core.calibration_obs()
    assert calib is not None and calib.shape == (16, 3)
    assert core.snapshot().weights.keys() == expected_tensors(core.agent.network_spec()).keys()
    core.save_checkpoint(published_version=1)
    resumed = Learner(cfg, 3, action_bounds=BOUNDS)
    assert (resumed.steps, resumed.resumed_version) == (1, 1)


# ------------------------------------------------------------------ config


def test_learner_batch_size_follows_the_algorithm() -> None:
    assert LearnerConfig(algo="d4pg", d4pg=D4PGConfig(batch_size=128)).batch_size == 128
    assert LearnerConfig(algo="dqn").batch_size == LearnerConfig().dqn.batch_size


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"preset": "huge"}, r"d4pg.preset 'huge' is not one of \['acme', 'paper'\]"),
        ({"policy_sizes": [0, 8]}, "d4pg.policy_sizes must be positive widths"),
        ({"num_atoms": 1}, "d4pg.num_atoms must be at least 2"),
        ({"vmin": 1.0, "vmax": -1.0}, "vmin < vmax"),
        ({"activation": "tanh"}, r"d4pg.activation 'tanh' is not one of"),
        ({"tau": 0.0}, r"d4pg.tau must be in \(0, 1\]"),
        ({"dqda_clip": -1.0}, "d4pg.dqda_clip must be >= 0"),
    ],
)
def test_config_refuses_values_that_cannot_work(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        D4PGConfig(**overrides)


def test_continuous_spaces_come_from_dm_control_ids() -> None:
    obs_dim, low, high = continuous_env_spaces("dmc:walker-walk")
    assert obs_dim == 24
    np.testing.assert_array_equal(low, -np.ones(6))
    np.testing.assert_array_equal(high, np.ones(6))


def test_discrete_env_is_refused_for_d4pg_with_a_sentence() -> None:
    with pytest.raises(
        ConfigError, match=r"'CartPole-v1' has 2 discrete actions; D4PG needs a Box"
    ):
        continuous_env_spaces("CartPole-v1")


@pytest.mark.parametrize(
    ("env_id", "message"),
    [
        ("CartPole-v1", "D4PG needs a Box of continuous actions"),
        ("dmc:walker-fly", "domain 'walker' has no task 'fly'; its tasks: run, stand, walk"),
    ],
)
def test_learner_service_refuses_an_env_d4pg_cannot_learn_at_start(
    env_id: str, message: str
) -> None:
    res = subprocess.run(
        [
            *(sys.executable, "-m", "commands.cli", "serve", "learner", "--port", "0"),
            *("--algo", "d4pg", "--env", env_id),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode != 0
    assert message in res.stderr
