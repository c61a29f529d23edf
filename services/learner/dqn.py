"""DQN in PyTorch, read top to bottom: config, Q-network, one update step.

Free of transport: the learner service feeds it sampled batches and ships its
weights. Its settings are ``DQNConfig`` (hyperparams.py). Transitions arrive
n-step already (the actors build them), so the target is

    y = reward + discount * Q_target(next_obs, a*)

where ``discount = gamma**k * (1 - terminated)`` was computed by the actor and
``a*`` is chosen by the online network (double DQN) or by the target network
(vanilla DQN). The loss is the Huber loss between Q_online(obs, action) and y,
weighted per transition when the replay hands out importance weights
(prioritized replay), and each update leaves the per-transition |y - Q| in
``last_td_abs``: the learner sends it back to the replay as new priorities.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from torch import nn

from actorq.config import ConfigError
from actorq.network import DQN_MLP
from actorq.transitions import Transitions
from actorq.v1 import common_pb2
from services.learner import common
from services.learner.common import Batch
from services.learner.hyperparams import DQNConfig


class QNetwork(nn.Module):
    """obs -> one Q-value per action: Linear, ReLU, ..., Linear.

    Parameters are named ``layers.{i}.weight`` ([out, in]) and ``layers.{i}.bias``
    ([out]): the wire contract with the quantizer (``actorq.network.DQN_MLP``).
    """

    def __init__(self, obs_dim: int, num_actions: int, hidden_sizes: list[int]) -> None:
        super().__init__()
        sizes = [obs_dim, *hidden_sizes, num_actions]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


class DQN:
    """Online and target Q-networks, their Adam optimizer and the update count."""

    def __init__(
        self,
        obs_dim: int,
        num_actions: int,
        cfg: DQNConfig,
        seed: int = 0,
        device: torch.device = common.CPU,
    ) -> None:
        if obs_dim < 1 or num_actions < 1:
            raise ConfigError(
                f"DQN needs obs_dim >= 1 and num_actions >= 1, got {obs_dim} and {num_actions}"
            )
        self.cfg = cfg
        self.obs_dim = obs_dim
        self.num_actions = num_actions
        self.device = device
        # Built on the CPU, then moved: the same seed gives the same weights on any device.
        with common.seeded(seed):
            self.online = QNetwork(obs_dim, num_actions, cfg.hidden_sizes).to(device)
        self.target = common.frozen_copy(self.online)
        self.optimizer = common.adam(self.online, cfg.lr, cfg.adam_eps)
        self.steps = 0  # completed updates ("learner steps")
        # |TD error| of each transition of the latest update (float32 [batch]), taken
        # before the step: the new priorities for prioritized replay.
        self.last_td_abs: np.ndarray | None = None

    def td_target(self, batch: Batch) -> torch.Tensor:
        """y = reward + discount * Q_target(next_obs, a*), with no gradient."""
        with torch.no_grad():
            next_q_target = self.target(batch.next_obs)
            chooser = self.online(batch.next_obs) if self.cfg.double_dqn else next_q_target
            next_action = chooser.argmax(dim=1, keepdim=True)
            next_value = next_q_target.gather(1, next_action).squeeze(1)
            return batch.reward + batch.discount * next_value

    def update(
        self, batch: Batch | Transitions, weights: np.ndarray | torch.Tensor | None = None
    ) -> dict[str, float]:
        """One gradient step on a batch; returns its loss, mean Q and mean |TD error|.

        ``weights`` (or ``batch.weights``) are per-transition importance weights
        (prioritized replay); None weighs every transition 1. The loss is the
        mean of weight * Huber loss over the batch. Sets ``last_td_abs`` to the
        batch's per-transition |TD error|.
        """
        batch = Batch.of(batch, weights, np.int64, self.device)
        self.check(batch)

        # 1. Regress Q_online(obs, action) onto the (fixed) TD target.
        target = self.td_target(batch)
        q = self.online(batch.obs).gather(1, batch.action.unsqueeze(1)).squeeze(1)
        per_item = nn.functional.huber_loss(q, target, reduction="none", delta=self.cfg.huber_delta)
        if batch.weights is not None:
            per_item = per_item * batch.weights
        loss = per_item.mean()

        # 2. Adam step on the clipped gradient.
        common.gradient_step(self.optimizer, self.online, loss, self.cfg.max_grad_norm)
        self.steps += 1

        # 3. Every K updates move the target towards the online net (tau 1: copy).
        if self.steps % self.cfg.target_update_every == 0:
            self.update_target()

        with torch.no_grad():
            td_abs = (target - q).abs()
            self.last_td_abs = common.numpy(td_abs)
            return {
                "loss": float(loss),
                "mean_q": float(q.mean()),
                "td_abs": float(td_abs.mean()),
            }

    def check(self, batch: Batch) -> None:
        """ValueError when the batch's shapes or action indices do not fit this network."""
        batch.check(self.obs_dim)
        action = batch.action
        if len(action) and (int(action.min()) < 0 or int(action.max()) >= self.num_actions):
            raise ValueError(
                f"batch action holds values in [{int(action.min())}, {int(action.max())}], "
                f"outside [0, {self.num_actions - 1}] for {self.num_actions} actions; do "
                "actors and learner use the same env?"
            )

    def update_target(self) -> None:
        """target <- tau * online + (1 - tau) * target (tau == 1: an exact copy)."""
        common.update_target(self.online, self.target, self.cfg.tau)

    # -- what leaves the learner ---------------------------------------------

    def policy_weights(self) -> dict[str, np.ndarray]:
        """FP32 copies of the online network's tensors, named by the wire contract."""
        return common.policy_weights(self.online)

    def network_spec(self) -> common_pb2.NetworkSpec:
        """How the quantizer should read policy_weights()."""
        return common_pb2.NetworkSpec(
            kind=DQN_MLP.name,
            obs_dim=self.obs_dim,
            hidden_sizes=list(self.cfg.hidden_sizes),
            output_dim=self.num_actions,
            activation=DQN_MLP.activations[0],
        )

    # -- checkpoints -----------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly: both nets, Adam, step."""
        return common.training_state(
            {"online": self.online, "target": self.target},
            {"optimizer": self.optimizer},
            self.steps,
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state_dict(); ValueError when its shapes do not fit this network."""
        self.steps = common.restore_training_state(
            state,
            {"online": self.online, "target": self.target},
            {"optimizer": self.optimizer},
            checked={"online": self.online},
            sizes="obs_dim, num_actions or hidden_sizes",
            algo="DQN",
        )
