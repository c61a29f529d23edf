"""The learning algorithms the learner can run, one row each (``ALGORITHMS``).

A row knows everything the service needs of its algorithm: the settings
class and the ``LearnerConfig`` section holding it, which env spaces it can
learn (and the ConfigError naming a mismatch), how to build its agent, and
how to describe its networks for the log. The service reads the row chosen by
``LearnerConfig.algo`` and nothing else, so adding an algorithm is one row
here plus its module (and its settings section in ``LearnerConfig``).

Torch-free: an agent's module (and torch with it) is imported only when the
agent is built, so configs can be loaded and checked without paying for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from actorq.config import ConfigError
from actorq.envs import env_info
from actorq.transitions import Transitions
from actorq.v1 import common_pb2
from services.learner.hyperparams import D4PGConfig, DQNConfig


class Agent(Protocol):
    """What the learner needs of an algorithm (DQN and D4PG both are one)."""

    steps: int
    obs_dim: int
    # The torch.device its networks live on.
    device: Any
    # Per-transition |TD error| of the latest update, or None if the agent sends
    # no priorities back (D4PG samples uniformly).
    last_td_abs: np.ndarray | None

    def update(self, batch: Transitions, weights: np.ndarray | None = None) -> dict[str, float]: ...

    def policy_weights(self) -> dict[str, np.ndarray]: ...

    def network_spec(self) -> common_pb2.NetworkSpec: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class EnvSpaces:
    """The sizes of an env that shape an algorithm's networks."""

    obs_dim: int
    # Discrete actions: how many (0 for a Box).
    num_actions: int = 0
    # Box actions: float32 (low, high), each of shape [action_dim] (None when Discrete).
    action_bounds: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def action_dim(self) -> int:
        """Length of a continuous action (0 for discrete actions)."""
        return 0 if self.action_bounds is None else len(self.action_bounds[0])


def random_transitions(spaces: EnvSpaces, count: int, rng: np.random.Generator) -> Transitions:
    """count transitions of the env's shapes with random (valid) values: for benchmarks
    and the learner's warm-up, never for training."""
    obs = rng.normal(size=(count, spaces.obs_dim)).astype(np.float32)
    if spaces.action_bounds is None:
        action = rng.integers(0, spaces.num_actions, count).astype(np.int64)
    else:
        low, high = spaces.action_bounds
        action = rng.uniform(low, high, (count, len(low))).astype(np.float32)
    return Transitions(
        obs=obs,
        action=action,
        reward=rng.normal(size=count).astype(np.float32),
        discount=np.full(count, 0.97, np.float32),
        next_obs=rng.normal(size=(count, spaces.obs_dim)).astype(np.float32),
    )


def env_spaces(env_id: str) -> tuple[int, int]:
    """(obs_dim, num_actions) of an env with Discrete actions; ConfigError if DQN cannot
    learn it (the env layer's error for an unknown id or a non-Box observation)."""
    info = env_info(env_id)
    if info.continuous:
        raise ConfigError(
            f"env {env_id!r} has {info.describe_actions()}; DQN needs Discrete actions "
            "(use --algo d4pg for it)"
        )
    return info.obs_dim, info.num_actions


def continuous_env_spaces(env_id: str) -> tuple[int, np.ndarray, np.ndarray]:
    """(obs_dim, action_low, action_high) of an env with bounded Box actions; ConfigError
    if D4PG cannot learn it. ``dmc:DOMAIN-TASK`` ids load the dm_control adapter."""
    info = env_info(env_id)
    if info.action_low is None or info.action_high is None:
        raise ConfigError(
            f"env {env_id!r} has {info.num_actions} discrete actions; D4PG needs a Box of "
            "continuous actions (use --algo dqn for it)"
        )
    return info.obs_dim, info.action_low, info.action_high


class Settings(Protocol):
    """What every algorithm's settings hold."""

    batch_size: int


S = TypeVar("S", bound=Settings)


@dataclass(frozen=True)
class Algorithm(Generic[S]):
    """How the learner reads, builds and logs one algorithm."""

    # The name: --algo value, and the LearnerConfig field holding the settings
    # (so also the file section and the flag prefix: learner: {dqn: ...}, --dqn-lr).
    name: str
    settings_class: type[S]
    # The env's spaces this algorithm needs; ConfigError naming what does not fit.
    read_spaces: Callable[[str], EnvSpaces]
    # The agent for (settings, spaces, seed, torch device); imports the algorithm's module.
    build: Callable[[S, EnvSpaces, int, Any], Agent]
    # Network sizes for the start-up log line.
    describe: Callable[[S, EnvSpaces], str]

    def settings(self, cfg: object) -> S:
        """This algorithm's section of a LearnerConfig."""
        settings = getattr(cfg, self.name)
        if not isinstance(settings, self.settings_class):
            raise TypeError(f"{self.name} settings must be a {self.settings_class.__name__}")
        return settings

    def batch_size(self, cfg: object) -> int:
        """Transitions per update under a LearnerConfig."""
        return self.settings(cfg).batch_size


# -- DQN: Discrete actions ---------------------------------------------------------


def _dqn_spaces(env_id: str) -> EnvSpaces:
    obs_dim, num_actions = env_spaces(env_id)
    return EnvSpaces(obs_dim, num_actions=num_actions)


def _build_dqn(settings: DQNConfig, spaces: EnvSpaces, seed: int, device: Any) -> Agent:
    from services.learner.dqn import DQN  # torch: only once an agent is built

    return DQN(spaces.obs_dim, spaces.num_actions, settings, seed=seed, device=device)


def _describe_dqn(settings: DQNConfig, spaces: EnvSpaces) -> str:
    return f"network {[spaces.obs_dim, *settings.hidden_sizes, spaces.num_actions]}"


# -- D4PG: bounded Box actions -------------------------------------------------------


def _d4pg_spaces(env_id: str) -> EnvSpaces:
    obs_dim, low, high = continuous_env_spaces(env_id)
    return EnvSpaces(obs_dim, action_bounds=(low, high))


def _build_d4pg(settings: D4PGConfig, spaces: EnvSpaces, seed: int, device: Any) -> Agent:
    if spaces.action_bounds is None:
        raise ConfigError("algo d4pg needs the env's action bounds (a Box action space)")
    from services.learner.d4pg import D4PG  # torch: only once an agent is built

    return D4PG(spaces.obs_dim, *spaces.action_bounds, settings, seed=seed, device=device)


def _describe_d4pg(settings: D4PGConfig, spaces: EnvSpaces) -> str:
    obs_dim, action_dim = spaces.obs_dim, spaces.action_dim
    return (
        f"policy {[obs_dim, *settings.policy_hidden, action_dim]}, critic "
        f"{[obs_dim + action_dim, *settings.critic_hidden, settings.num_atoms]}"
    )


ALGORITHMS: dict[str, Algorithm[Any]] = {
    a.name: a
    for a in (
        Algorithm("dqn", DQNConfig, _dqn_spaces, _build_dqn, _describe_dqn),
        Algorithm("d4pg", D4PGConfig, _d4pg_spaces, _build_d4pg, _describe_d4pg),
    )
}
