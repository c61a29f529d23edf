"""D4PG in PyTorch, read top to bottom: config, networks, projection, one update step.

Barth-Maron et al. (2018), "Distributed Distributional Deterministic Policy
Gradients", as Acme builds it (``acme/agents/jax/d4pg``):

- a deterministic policy ``pi(obs)``: an MLP whose output goes through tanh
  and is mapped affinely onto the action bounds;
- a distributional critic ``Z(obs, action)``: logits over ``num_atoms``
  atoms evenly spaced on [vmin, vmax] (categorical, as C51);
- the critic regresses onto the n-step target distribution
  ``reward + discount * Z_target(next_obs, pi_target(next_obs))`` projected
  back onto the atoms (``categorical_projection``), by cross-entropy; the
  actors already folded n-step returns into ``reward`` and ``gamma**k`` (0 at
  a terminal) into ``discount``;
- the policy follows the deterministic policy gradient through the critic's
  mean, ``dQ/da`` clipped to [-dqda_clip, dqda_clip];
- target networks for both, copied every ``target_update_every`` updates
  (``tau`` < 1 blends instead); Adam for both with global-norm gradient
  clipping.

With ``layer_norm`` both networks start with Acme's ``LayerNormMLP`` block
(Linear -> LayerNorm -> tanh), then Linear + ELU layers. The policy's
parameter names are the wire contract with the quantizer (NetworkSpec kind
``d4pg_policy``, ``actorq.network.D4PG_POLICY``): ``layers.{i}.weight``/``bias``
and ``layer_norm.weight``/``bias``. Its settings are ``D4PGConfig`` (hyperparams.py).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from torch import nn

from actorq.config import ConfigError
from actorq.network import D4PG_POLICY
from actorq.transitions import Transitions
from actorq.v1 import common_pb2
from services.learner import common
from services.learner.common import Batch
from services.learner.hyperparams import D4PGConfig

# ------------------------------------------------------------------ networks


class LayerNormMLP(nn.Module):
    """Linear layers; after the first, LayerNorm + tanh (or the activation), then the
    activation between the rest; the last layer is linear.

    Parameters: ``layers.{i}.weight`` [out, in], ``layers.{i}.bias`` [out] and,
    with layer_norm, ``layer_norm.weight`` / ``layer_norm.bias`` [sizes[1]].
    """

    def __init__(self, sizes: list[int], layer_norm: bool, activation: str) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.layer_norm = nn.LayerNorm(sizes[1]) if layer_norm else None
        self.act = nn.ELU() if activation == "elu" else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers[:-1]):
            x = layer(x)
            x = (
                torch.tanh(self.layer_norm(x))
                if i == 0 and self.layer_norm is not None
                else self.act(x)
            )
        return self.layers[-1](x)


class PolicyNetwork(LayerNormMLP):
    """obs -> deterministic action in [low, high]: low + (tanh(mlp(obs)) + 1) / 2 * (high - low)."""

    action_scale: torch.Tensor
    action_offset: torch.Tensor

    def __init__(
        self,
        obs_dim: int,
        low: np.ndarray,
        high: np.ndarray,
        hidden: list[int],
        layer_norm: bool,
        activation: str,
    ) -> None:
        super().__init__([obs_dim, *hidden, len(low)], layer_norm, activation)
        # Not persistent: the state_dict holds exactly the wire-contract tensors.
        lo, hi = (
            torch.as_tensor(low, dtype=torch.float32),
            torch.as_tensor(high, dtype=torch.float32),
        )
        self.register_buffer("action_scale", (hi - lo) / 2, persistent=False)
        self.register_buffer("action_offset", (hi + lo) / 2, persistent=False)
        # Acme's NearZeroInitializedLinear: start with near-zero actions (mid-range).
        head = self.layers[-1]
        assert isinstance(head, nn.Linear)
        nn.init.normal_(head.weight, std=float(np.sqrt(1e-4 / head.in_features)))
        nn.init.zeros_(head.bias)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.action_offset + self.action_scale * torch.tanh(super().forward(obs))


class CriticNetwork(LayerNormMLP):
    """(obs, action) -> logits over the return atoms."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: list[int],
        num_atoms: int,
        layer_norm: bool,
        activation: str,
    ) -> None:
        super().__init__([obs_dim + action_dim, *hidden, num_atoms], layer_norm, activation)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(torch.cat([obs, action], dim=-1))


# ---------------------------------------------------------------- projection


def categorical_projection(
    probs: torch.Tensor, reward: torch.Tensor, discount: torch.Tensor, atoms: torch.Tensor
) -> torch.Tensor:
    """Project the distribution ``reward + discount * Z`` back onto ``atoms``.

    ``probs`` [B, K] are Z's probabilities on ``atoms`` [K] (evenly spaced);
    each shifted atom ``reward + discount * z_j`` is clamped to
    [atoms[0], atoms[-1]] and its mass split between the two nearest atoms in
    proportion to closeness (Bellemare et al., 2017, Algorithm 1). Returns
    [B, K] probabilities (rows sum to 1).
    """
    k = atoms.shape[0]
    vmin, vmax = atoms[0], atoms[-1]
    delta = (vmax - vmin) / (k - 1)
    shifted = (reward[:, None] + discount[:, None] * atoms[None, :]).clamp(vmin, vmax)
    b = (shifted - vmin) / delta  # fractional atom index in [0, K-1]
    lower = b.floor().clamp(0, k - 1)
    upper = b.ceil().clamp(0, k - 1)
    # When b lands exactly on an atom (lower == upper) all its mass goes there.
    to_lower = probs * (upper - b + (lower == upper).to(probs.dtype))
    to_upper = probs * (b - lower)
    out = torch.zeros_like(probs)
    out.scatter_add_(1, lower.long(), to_lower)
    out.scatter_add_(1, upper.long(), to_upper)
    return out


# --------------------------------------------------------------------- agent


class D4PG:
    """Policy, distributional critic, their targets and optimizers, and the update count."""

    def __init__(
        self,
        obs_dim: int,
        low: np.ndarray,
        high: np.ndarray,
        cfg: D4PGConfig,
        seed: int = 0,
        device: torch.device = common.CPU,
    ) -> None:
        low = np.asarray(low, np.float32).reshape(-1)
        high = np.asarray(high, np.float32).reshape(-1)
        if obs_dim < 1 or low.size < 1 or low.shape != high.shape:
            raise ConfigError(
                f"D4PG needs obs_dim >= 1 and matching action bounds, got obs_dim {obs_dim}, "
                f"low {low.tolist()}, high {high.tolist()}"
            )
        if not (np.isfinite(low).all() and np.isfinite(high).all() and (low < high).all()):
            raise ConfigError(
                f"D4PG needs finite action bounds with low < high, got {low.tolist()} "
                f"and {high.tolist()}"
            )
        self.cfg = cfg
        self.obs_dim = obs_dim
        self.action_dim = int(low.size)
        self.action_low, self.action_high = low, high
        self.device = device
        # Built on the CPU, then moved: the same seed gives the same weights on any device.
        with common.seeded(seed):
            self.policy = PolicyNetwork(
                obs_dim, low, high, cfg.policy_hidden, cfg.layer_norm, cfg.activation
            )
            self.critic = CriticNetwork(
                obs_dim,
                self.action_dim,
                cfg.critic_hidden,
                cfg.num_atoms,
                cfg.layer_norm,
                cfg.activation,
            )
        self.policy.to(device)
        self.critic.to(device)
        self.target_policy = common.frozen_copy(self.policy)
        self.target_critic = common.frozen_copy(self.critic)
        self.atoms = torch.linspace(cfg.vmin, cfg.vmax, cfg.num_atoms, device=device)
        self.policy_optimizer = common.adam(self.policy, cfg.policy_lr, cfg.adam_eps)
        self.critic_optimizer = common.adam(self.critic, cfg.critic_lr, cfg.adam_eps)
        self.steps = 0  # completed updates ("learner steps")
        # D4PG samples uniformly (as in Acme), so it sends no priorities back.
        self.last_td_abs: np.ndarray | None = None

    def target_distribution(self, batch: Batch) -> torch.Tensor:
        """Projected n-step target probabilities [B, num_atoms], with no gradient."""
        with torch.no_grad():
            next_action = self.target_policy(batch.next_obs)
            next_probs = torch.softmax(self.target_critic(batch.next_obs, next_action), dim=-1)
            return categorical_projection(next_probs, batch.reward, batch.discount, self.atoms)

    def update(
        self, batch: Batch | Transitions, weights: np.ndarray | None = None
    ) -> dict[str, float]:
        """One critic step and one policy step; returns losses, mean Q and mean |TD error|.

        ``weights`` (or ``batch.weights``) weigh each transition's critic loss
        (prioritized replay); None weighs every transition 1.
        """
        batch = Batch.of(batch, weights, np.float32, self.device)
        batch.check(self.obs_dim, (self.action_dim,))

        # 1. Critic: cross-entropy between the projected target and Z(obs, action).
        target = self.target_distribution(batch)
        critic_loss, logits = self.critic_step(batch, target)

        # 2. Policy: deterministic policy gradient through the critic's mean.
        q = self.policy_step(batch)
        self.steps += 1

        # 3. Every K updates move both targets towards their online nets (tau 1: copy).
        if self.steps % self.cfg.target_update_every == 0:
            self.update_targets()

        with torch.no_grad():
            q_taken = (torch.softmax(logits, dim=-1) * self.atoms).sum(dim=-1)
            q_target = (target * self.atoms).sum(dim=-1)
            return {
                "loss": float(critic_loss),
                "policy_loss": float(-q.mean()),
                "mean_q": float(q_taken.mean()),
                "td_abs": float((q_target - q_taken).abs().mean()),
            }

    def critic_step(self, batch: Batch, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One Adam step of the critic towards the target distribution; returns
        (its weighted cross-entropy loss, the logits of Z(obs, action))."""
        logits = self.critic(batch.obs, batch.action)
        per_item = -(target * torch.log_softmax(logits, dim=-1)).sum(dim=-1)
        if batch.weights is not None:
            per_item = per_item * batch.weights
        loss = per_item.mean()
        common.gradient_step(self.critic_optimizer, self.critic, loss, self.cfg.max_grad_norm)
        return loss, logits

    def policy_step(self, batch: Batch) -> torch.Tensor:
        """One Adam step of the policy along the critic's clipped dQ/da; returns Q(obs, pi(obs)).

        dQ/da is taken with respect to the action alone (no critic weight
        gradients are computed), clipped, then pushed through the policy.
        """
        action = self.policy(batch.obs)
        probe = action.detach().requires_grad_(True)
        q = (torch.softmax(self.critic(batch.obs, probe), dim=-1) * self.atoms).sum(dim=-1)
        (dqda,) = torch.autograd.grad(q.sum(), probe)
        if self.cfg.dqda_clip > 0:
            dqda = dqda.clamp(-self.cfg.dqda_clip, self.cfg.dqda_clip)
        loss = -(action * dqda).sum(dim=-1).mean()
        common.gradient_step(self.policy_optimizer, self.policy, loss, self.cfg.max_grad_norm)
        return q

    def update_targets(self) -> None:
        """target <- tau * online + (1 - tau) * target for both networks."""
        common.update_target(self.policy, self.target_policy, self.cfg.tau)
        common.update_target(self.critic, self.target_critic, self.cfg.tau)

    # -- what leaves the learner ---------------------------------------------

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The policy's deterministic actions [B, A] for observations [B, obs_dim] (float32)."""
        with torch.no_grad():
            return common.numpy(self.policy(common.tensor(obs, device=self.device)))

    def policy_weights(self) -> dict[str, np.ndarray]:
        """FP32 copies of the policy's tensors, named by the wire contract."""
        return common.policy_weights(self.policy)

    def network_spec(self) -> common_pb2.NetworkSpec:
        """How the quantizer should read policy_weights()."""
        return common_pb2.NetworkSpec(
            kind=D4PG_POLICY.name,
            obs_dim=self.obs_dim,
            hidden_sizes=self.cfg.policy_hidden,
            output_dim=self.action_dim,
            activation=self.cfg.activation,
            action_low=self.action_low.tolist(),
            action_high=self.action_high.tolist(),
            layer_norm=self.cfg.layer_norm,
        )

    # -- checkpoints -----------------------------------------------------------

    def _networks(self) -> dict[str, nn.Module]:
        return {
            "policy": self.policy,
            "critic": self.critic,
            "target_policy": self.target_policy,
            "target_critic": self.target_critic,
        }

    def _optimizers(self) -> dict[str, common.DeferredAdam]:
        return {
            "policy_optimizer": self.policy_optimizer,
            "critic_optimizer": self.critic_optimizer,
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly: four nets, two Adams, step."""
        return common.training_state(self._networks(), self._optimizers(), self.steps)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state_dict(); ValueError when its shapes do not fit these networks."""
        self.steps = common.restore_training_state(
            state,
            self._networks(),
            self._optimizers(),
            checked={"policy": self.policy, "critic": self.critic},
            sizes="obs/action dims, sizes or layer_norm",
            algo="D4PG",
        )
