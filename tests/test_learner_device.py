"""The learner's device setting: auto | cpu | cuda[:N], and the launcher's core budget.

CUDA itself is exercised by scripts/gpu-paper-check.sh on a machine with a GPU; here
(no GPU) the tests check what every machine must do: resolve auto to what torch sees,
refuse cuda with a sentence when torch sees none, train and publish on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actorq.config import ConfigError, load
from commands.train.configs import learner_threads
from services.learner.algorithms import EnvSpaces, random_transitions
from services.learner.common import resolve_device
from services.learner.config import LearnerConfig
from services.learner.d4pg import D4PG
from services.learner.dqn import DQN
from services.learner.hyperparams import D4PGConfig, DQNConfig


def test_auto_is_cuda_exactly_when_torch_sees_a_gpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_cuda_without_a_gpu_is_refused_with_the_way_out() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: cuda is valid here")
    with pytest.raises(ConfigError, match=r"sees no CUDA GPU; use device auto or cpu"):
        resolve_device("cuda")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "tpu", "CPU"])
def test_a_device_setting_that_names_no_device_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"device .* is not one of auto, cpu, cuda, cuda:N"):
        load(LearnerConfig, env={}, flags={"device": bad})


def test_device_comes_from_the_actorq_device_variable() -> None:
    cfg = load(LearnerConfig, env={"ACTORQ_DEVICE": "cpu"})
    assert cfg.device == "cpu"


def test_dqn_on_an_explicit_cpu_device_trains_like_the_default() -> None:
    batch = random_transitions(EnvSpaces(4, num_actions=2), 32, np.random.default_rng(0))
    default = DQN(4, 2, DQNConfig(hidden_sizes=[16]), seed=3)
    explicit = DQN(4, 2, DQNConfig(hidden_sizes=[16]), seed=3, device=resolve_device("cpu"))
    for agent in (default, explicit):
        agent.update(batch)
    for name, w in default.policy_weights().items():
        np.testing.assert_array_equal(w, explicit.policy_weights()[name])
    assert explicit.last_td_abs is not None and explicit.last_td_abs.dtype == np.float32


def test_published_weights_are_cpu_numpy_copies() -> None:
    agent = D4PG(3, np.array([-1.0], np.float32), np.array([1.0], np.float32), D4PGConfig())
    weights = agent.policy_weights()
    assert all(isinstance(w, np.ndarray) and w.dtype == np.float32 for w in weights.values())
    first = next(iter(agent.policy.parameters()))
    with torch.no_grad():
        first.add_(1.0)  # the copy must not move with the network
    assert not np.array_equal(weights[next(iter(weights))], first.detach().numpy())


@pytest.mark.parametrize(
    ("cpus", "actors", "threads"), [(2, 2, 1), (2, 1, 1), (16, 8, 8), (4, 8, 1)]
)
def test_the_learner_gets_the_cpus_the_actors_leave(cpus: int, actors: int, threads: int) -> None:
    assert learner_threads(cpus, actors) == threads


# `actorq train --learner-device auto` runs in tests/test_d4pg_train.py (short run) and
# `--learner-device cpu` in tests/test_auth.py (token run): same checks, no extra launcher runs.
