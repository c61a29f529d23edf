"""DQN in PyTorch, read top to bottom: config, Q-network, batch, one update step.

Free of transport: the learner service feeds it sampled batches and ships its
weights. Transitions arrive n-step already (the actors build them), so the
target is

    y = reward + discount * Q_target(next_obs, a*)

where ``discount = gamma**k * (1 - terminated)`` was computed by the actor and
``a*`` is chosen by the online network (double DQN) or by the target network
(vanilla DQN). The loss is the Huber loss between Q_online(obs, action) and y,
weighted per transition when the replay hands out importance weights
(prioritized replay), and each update leaves the per-transition |y - Q| in
``last_td_abs``: the learner sends it back to the replay as new priorities.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from actorq.config import ConfigError, opt
from actorq.transitions import Transitions
from actorq.v1 import common_pb2

# NetworkSpec kind/activation the quantizer builds the ONNX graph from.
NETWORK_KIND = "dqn_mlp"
ACTIVATION = "relu"


@dataclass
class DQNConfig:
    """Every DQN knob with its default (tuned on CartPole-v1)."""

    hidden_sizes: list[int] = opt([256, 256], "hidden layer widths of the Q-network MLP")
    lr: float = opt(1e-3, "Adam learning rate")
    adam_eps: float = opt(1e-8, "Adam epsilon (numerical floor of the update denominator)")
    batch_size: int = opt(64, "transitions per update (sampled from replay)")
    target_update_every: int = opt(
        500, "every K updates, target <- tau * online + (1 - tau) * target"
    )
    tau: float = opt(1.0, "target blend factor at each target update; 1.0 = hard copy")
    huber_delta: float = opt(1.0, "Huber loss threshold between quadratic and linear")
    max_grad_norm: float = opt(10.0, "clip the global gradient norm to this (0: no clipping)")
    double_dqn: bool = opt(
        True, "choose next actions with the online net, value them with the target net"
    )

    def __post_init__(self) -> None:
        if not self.hidden_sizes or any(h < 1 for h in self.hidden_sizes):
            raise ConfigError(
                f"dqn.hidden_sizes must be one or more positive widths, got {self.hidden_sizes}"
            )
        if not self.lr > 0:
            raise ConfigError(f"dqn.lr must be positive, got {self.lr}")
        if not self.adam_eps > 0:
            raise ConfigError(f"dqn.adam_eps must be positive, got {self.adam_eps}")
        if self.batch_size < 1:
            raise ConfigError(f"dqn.batch_size must be at least 1, got {self.batch_size}")
        if self.target_update_every < 1:
            raise ConfigError(
                f"dqn.target_update_every must be at least 1, got {self.target_update_every}"
            )
        if not 0.0 < self.tau <= 1.0:
            raise ConfigError(f"dqn.tau must be in (0, 1] (1 = hard copy), got {self.tau}")
        if not self.huber_delta > 0:
            raise ConfigError(f"dqn.huber_delta must be positive, got {self.huber_delta}")
        if self.max_grad_norm < 0:
            raise ConfigError(
                f"dqn.max_grad_norm must be >= 0 (0 turns clipping off), got {self.max_grad_norm}"
            )


class QNetwork(nn.Module):
    """obs -> one Q-value per action: Linear, ReLU, ..., Linear.

    Parameters are named ``layers.{i}.weight`` ([out, in]) and ``layers.{i}.bias``
    ([out]): the wire contract with the quantizer (NetworkSpec kind "dqn_mlp").
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


@dataclass
class Batch:
    """Torch views of a sampled batch: float32 except action (int64); weights optional."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    next_obs: torch.Tensor
    weights: torch.Tensor | None = None

    @classmethod
    def from_transitions(
        cls, t: Transitions, weights: np.ndarray | torch.Tensor | None = None
    ) -> Batch:
        """Wrap a columnar numpy batch (copies only what is read-only or of another dtype)."""
        return cls(
            obs=_tensor(t.obs, np.float32),
            action=_tensor(t.action, np.int64),
            reward=_tensor(t.reward, np.float32),
            discount=_tensor(t.discount, np.float32),
            next_obs=_tensor(t.next_obs, np.float32),
            weights=None if weights is None else _tensor(weights, np.float32),
        )

    def check(self, obs_dim: int, num_actions: int) -> None:
        """ValueError naming the field when the batch cannot belong to this network."""
        n = self.obs.shape[0] if self.obs.ndim else 0
        expected = {
            "obs": (n, obs_dim),
            "action": (n,),
            "reward": (n,),
            "discount": (n,),
            "next_obs": (n, obs_dim),
        }
        if self.weights is not None:
            expected["weights"] = (n,)
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(
                    f"batch {name} has shape {list(got)}, expected {list(shape)} "
                    f"(obs_dim {obs_dim}, {n} transitions); do actors and learner use the same env?"
                )
        if n and (int(self.action.min()) < 0 or int(self.action.max()) >= num_actions):
            raise ValueError(
                f"batch action holds values in [{int(self.action.min())}, "
                f"{int(self.action.max())}], outside [0, {num_actions - 1}] for "
                f"{num_actions} actions; do actors and learner use the same env?"
            )


_TORCH_DTYPES: dict[type[np.generic], torch.dtype] = {
    np.float32: torch.float32,
    np.int64: torch.int64,
}


def _tensor(x: np.ndarray | torch.Tensor, dtype: type[np.generic]) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(_TORCH_DTYPES[dtype])
    arr = np.asarray(x, dtype=dtype)
    if not arr.flags.writeable or not arr.flags.c_contiguous:
        # torch.from_numpy wants a writable array (np.frombuffer gives read-only ones).
        arr = np.array(arr, dtype=dtype, order="C")
    return torch.from_numpy(arr)


class DQN:
    """Online and target Q-networks, their Adam optimizer and the update count."""

    def __init__(self, obs_dim: int, num_actions: int, cfg: DQNConfig, seed: int = 0) -> None:
        if obs_dim < 1 or num_actions < 1:
            raise ConfigError(
                f"DQN needs obs_dim >= 1 and num_actions >= 1, got {obs_dim} and {num_actions}"
            )
        self.cfg = cfg
        self.obs_dim = obs_dim
        self.num_actions = num_actions
        with torch.random.fork_rng():  # seed the initialisation without touching global RNG
            torch.manual_seed(seed)
            self.online = QNetwork(obs_dim, num_actions, cfg.hidden_sizes)
            self.target = QNetwork(obs_dim, num_actions, cfg.hidden_sizes)
        self.target.load_state_dict(self.online.state_dict())
        self.target.requires_grad_(False)
        # fused: one kernel for all parameters, ~20% more updates/s for small nets on CPU.
        self.optimizer = torch.optim.Adam(
            self.online.parameters(), lr=cfg.lr, eps=cfg.adam_eps, fused=True
        )
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
        mean of weight * Huber loss over the batch. Sets ``last_td_abs`` to the batch's per-transition |TD error|.
        """
        if isinstance(batch, Transitions):
            batch = Batch.from_transitions(batch, weights)
        elif weights is not None:
            batch = dataclasses.replace(batch, weights=_tensor(weights, np.float32))
        batch.check(self.obs_dim, self.num_actions)

        # 1. Regress Q_online(obs, action) onto the (fixed) TD target.
        target = self.td_target(batch)
        q = self.online(batch.obs).gather(1, batch.action.unsqueeze(1)).squeeze(1)
        per_item = nn.functional.huber_loss(q, target, reduction="none", delta=self.cfg.huber_delta)
        if batch.weights is not None:
            per_item = per_item * batch.weights
        loss = per_item.mean()

        # 2. Adam step on the clipped gradient.
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.online.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.steps += 1

        # 3. Every K updates move the target towards the online net (tau 1: copy).
        if self.steps % self.cfg.target_update_every == 0:
            self.update_target()

        with torch.no_grad():
            td_abs = (target - q).abs()
            self.last_td_abs = td_abs.numpy().astype(np.float32, copy=True)
            return {
                "loss": float(loss),
                "mean_q": float(q.mean()),
                "td_abs": float(td_abs.mean()),
            }

    def update_target(self) -> None:
        """target <- tau * online + (1 - tau) * target (tau == 1: an exact copy)."""
        with torch.no_grad():
            for p, tp in zip(self.online.parameters(), self.target.parameters(), strict=True):
                if self.cfg.tau >= 1.0:
                    tp.copy_(p)
                else:
                    tp.lerp_(p, self.cfg.tau)

    # -- what leaves the learner ---------------------------------------------

    def policy_weights(self) -> dict[str, np.ndarray]:
        """FP32 copies of the online network's tensors, named by the wire contract."""
        return {
            name: t.detach().numpy().astype(np.float32, copy=True)
            for name, t in self.online.state_dict().items()
        }

    def network_spec(self) -> common_pb2.NetworkSpec:
        """How the quantizer should read policy_weights()."""
        return common_pb2.NetworkSpec(
            kind=NETWORK_KIND,
            obs_dim=self.obs_dim,
            hidden_sizes=list(self.cfg.hidden_sizes),
            output_dim=self.num_actions,
            activation=ACTIVATION,
        )

    # -- checkpoints -----------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly: both nets, Adam, step."""
        return {
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state_dict(); ValueError when its shapes do not fit this network."""
        mine = {k: tuple(v.shape) for k, v in self.online.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in state["online"].items()}
        if mine != theirs:
            diff = sorted(
                f"{k}: saved {list(theirs[k]) if k in theirs else 'absent'}, "
                f"now {list(mine[k]) if k in mine else 'absent'}"
                for k in set(mine) | set(theirs)
                if mine.get(k) != theirs.get(k)
            )
            raise ValueError(
                "saved network does not fit this one (obs_dim, num_actions or hidden_sizes "
                f"changed): {'; '.join(diff)}"
            )
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        # A copy: Optimizer.load_state_dict keeps the given moment tensors, which would
        # otherwise stay shared with whoever else holds this state.
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.steps = int(state["steps"])
