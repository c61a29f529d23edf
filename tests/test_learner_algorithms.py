"""The learner's algorithm registry and the scaffolding every algorithm shares:
one row per algorithm chooses its settings, spaces, agent and log line; the
configs load without torch; batches, target updates, weights and checkpoints
behave the same for every agent."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from actorq import config
from actorq.config import ConfigError
from actorq.network import ALGO_KINDS, ALGOS, bias_name, weight_name
from actorq.transitions import Transitions
from services.learner import common
from services.learner.algorithms import ALGORITHMS, EnvSpaces
from services.learner.common import resolve_device
from services.learner.config import LearnerConfig
from services.learner.d4pg import D4PG
from services.learner.dqn import DQN
from services.learner.hyperparams import D4PGConfig, DQNConfig
from services.learner.learner import Learner

ROOT = Path(__file__).resolve().parents[1]
SMALL = LearnerConfig(
    dqn=DQNConfig(hidden_sizes=[8]), d4pg=D4PGConfig(policy_sizes=[8], critic_sizes=[8])
)
SPACES = {
    "dqn": EnvSpaces(4, num_actions=2),
    "d4pg": EnvSpaces(3, action_bounds=(-np.ones(2, np.float32), np.ones(2, np.float32))),
}


def transitions(n: int = 8, obs_dim: int = 4, action: np.ndarray | None = None) -> Transitions:
    rng = np.random.default_rng(0)
    return Transitions(
        obs=rng.normal(size=(n, obs_dim)).astype(np.float32),
        action=np.zeros(n, np.int64) if action is None else action,
        reward=np.ones(n, np.float32),
        discount=np.full(n, 0.9, np.float32),
        next_obs=rng.normal(size=(n, obs_dim)).astype(np.float32),
    )


# -- the registry --------------------------------------------------------------------


def test_every_algorithm_of_the_contract_has_one_row() -> None:
    assert list(ALGORITHMS) == list(ALGOS)


def test_each_row_names_the_learner_config_section_holding_its_settings() -> None:
    fields = {f.name: f for f in dataclasses.fields(LearnerConfig)}
    for name, algorithm in ALGORITHMS.items():
        assert fields[name].type in (algorithm.settings_class, algorithm.settings_class.__name__)
        assert isinstance(algorithm.settings(LearnerConfig()), algorithm.settings_class)


@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_each_row_builds_an_agent_publishing_its_contract_kind(algo: str) -> None:
    algorithm = ALGORITHMS[algo]
    agent = algorithm.build(algorithm.settings(SMALL), SPACES[algo], 0, resolve_device("cpu"))
    assert agent.network_spec().kind == ALGO_KINDS[algo].name


def test_learner_config_batch_size_is_the_chosen_rows() -> None:
    cfg = LearnerConfig(algo="d4pg", dqn=DQNConfig(batch_size=32), d4pg=D4PGConfig(batch_size=96))
    assert cfg.batch_size == 96
    assert dataclasses.replace(cfg, algo="dqn").batch_size == 32


def test_d4pg_without_action_bounds_is_refused() -> None:
    with pytest.raises(ConfigError, match="algo d4pg needs the env's action bounds"):
        Learner(dataclasses.replace(SMALL, algo="d4pg"), 3, num_actions=2)


@pytest.mark.parametrize(
    ("algo", "env_id", "spaces"),
    [("dqn", "CartPole-v1", (4, 2, 0)), ("d4pg", "Pendulum-v1", (3, 0, 1))],
)
def test_each_row_reads_the_spaces_it_needs(
    algo: str, env_id: str, spaces: tuple[int, int, int]
) -> None:
    got = ALGORITHMS[algo].read_spaces(env_id)
    assert (got.obs_dim, got.num_actions, got.action_dim) == spaces


def test_the_log_line_describes_the_chosen_algorithms_networks() -> None:
    where = r" on (cpu \(\d+ torch threads?\)|cuda:\d+ \(.*\))"
    assert re.fullmatch(r"dqn network \[4, 8, 2\]" + where, Learner(SMALL, 4, 2).describe())
    d4pg = Learner(
        dataclasses.replace(SMALL, algo="d4pg"), 3, action_bounds=SPACES["d4pg"].action_bounds
    )
    assert re.fullmatch(r"d4pg policy \[3, 8, 2\], critic \[5, 8, 51\]" + where, d4pg.describe())


@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_embedded_default_learner_sections_are_valid_for_their_algorithm(algo: str) -> None:
    cfg = config.load(
        LearnerConfig,
        section="learner",
        file=ROOT / "commands" / "configs" / f"{algo}.yaml",
        env={},
        overrides={"algo": algo},
    )
    assert cfg.batch_size == ALGORITHMS[algo].settings(cfg).batch_size


def test_learner_config_loads_without_importing_torch() -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, services.learner.config; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert res.stdout.strip() == "[]"


# -- the shared scaffolding -------------------------------------------------------------


def test_batch_keeps_integer_actions_int64_and_makes_the_rest_float32() -> None:
    discrete = common.Batch.from_transitions(transitions())
    continuous = common.Batch.from_transitions(transitions(action=np.zeros((8, 2), np.float64)))
    assert (discrete.action.dtype, continuous.action.dtype) == (torch.int64, torch.float32)
    assert discrete.obs.dtype == torch.float32


def test_batch_check_names_the_action_width_of_continuous_networks() -> None:
    batch = common.Batch.from_transitions(transitions(action=np.zeros((8, 3), np.float32)))
    with pytest.raises(
        ValueError,
        match=r"action has shape \[8, 3\], expected \[8, 2\] \(obs_dim 4, action_dim 2, 8 transitions\)",
    ):
        batch.check(4, (2,))


def test_soft_target_update_blends_by_tau() -> None:
    online, target = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with torch.no_grad():
        online.weight.fill_(1.0)
        target.weight.fill_(0.0)
    common.update_target(online, target, tau=0.25)
    torch.testing.assert_close(target.weight, torch.full((2, 2), 0.25))
    common.update_target(online, target, tau=1.0)
    torch.testing.assert_close(target.weight, online.weight)


def test_dqn_policy_weights_carry_the_contracts_tensor_names() -> None:
    weights = DQN(4, 2, DQNConfig(hidden_sizes=[8, 8])).policy_weights()
    assert list(weights) == [name(i) for i in range(3) for name in (weight_name, bias_name)]


def test_a_checkpoint_of_another_algorithm_is_refused_with_a_sentence() -> None:
    bounds = SPACES["d4pg"].action_bounds
    assert bounds is not None
    saved = D4PG(3, *bounds, SMALL.d4pg).state_dict()
    with pytest.raises(ValueError, match=r"saved state has no 'online' network \(not a DQN"):
        DQN(3, 2, SMALL.dqn).load_state_dict(saved)
