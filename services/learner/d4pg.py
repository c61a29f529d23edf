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
``d4pg_policy``): ``layers.{i}.weight``/``bias`` and ``layer_norm.weight``/``bias``.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from actorq.config import ConfigError, opt
from actorq.transitions import Transitions
from actorq.v1 import common_pb2

NETWORK_KIND = "d4pg_policy"
ACTIVATIONS = ("elu", "relu")

# Network sizes by preset: "acme" as Acme's D4PG examples use, "paper" as the
# ActorQ paper's D4PG (a large policy, where int8 actors pay off most).
PRESETS: dict[str, dict[str, list[int]]] = {
    "acme": {"policy_sizes": [256, 256, 256], "critic_sizes": [512, 512, 256]},
    "paper": {"policy_sizes": [2048, 2048, 2048], "critic_sizes": [512, 512, 256]},
}


@dataclass
class D4PGConfig:
    """Every D4PG knob with its default (Acme's D4PG defaults unless noted)."""

    preset: str = opt(
        "acme",
        "network sizes: 'acme' (policy 256x256x256, critic 512x512x256) or 'paper' "
        "(policy 2048x2048x2048, critic 512x512x256); policy_sizes/critic_sizes override",
    )
    policy_sizes: list[int] = opt([], "policy MLP hidden widths (empty: the preset's)")
    critic_sizes: list[int] = opt([], "critic MLP hidden widths (empty: the preset's)")
    layer_norm: bool = opt(
        True, "first block of both networks is Linear -> LayerNorm -> tanh (Acme's LayerNormMLP)"
    )
    activation: str = opt("elu", f"hidden activation after the first block: {list(ACTIVATIONS)}")
    num_atoms: int = opt(51, "atoms of the critic's categorical return distribution")
    vmin: float = opt(-150.0, "smallest atom (return value) of the critic's support")
    vmax: float = opt(150.0, "largest atom of the critic's support")
    policy_lr: float = opt(1e-4, "Adam learning rate of the policy")
    critic_lr: float = opt(1e-4, "Adam learning rate of the critic")
    adam_eps: float = opt(1e-8, "Adam epsilon of both optimizers")
    batch_size: int = opt(256, "transitions per update (sampled from replay)")
    target_update_every: int = opt(
        100, "every K updates, target <- tau * online + (1 - tau) * target (both networks)"
    )
    tau: float = opt(1.0, "target blend factor at each target update; 1.0 = hard copy")
    max_grad_norm: float = opt(
        40.0, "clip each network's global gradient norm to this (0: no clipping)"
    )
    dqda_clip: float = opt(
        1.0, "clip the critic's action gradient dQ/da elementwise to +-this (0: no clipping)"
    )

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(
                f"d4pg.preset {self.preset!r} is not one of {sorted(PRESETS)}; or set "
                "d4pg.policy_sizes and d4pg.critic_sizes yourself"
            )
        for name in ("policy_sizes", "critic_sizes"):
            sizes = getattr(self, name)
            if any(h < 1 for h in sizes):
                raise ConfigError(f"d4pg.{name} must be positive widths, got {sizes}")
        if not self.policy_hidden or not self.critic_hidden:
            raise ConfigError("d4pg networks need at least one hidden layer each")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"d4pg.activation {self.activation!r} is not one of {list(ACTIVATIONS)}"
            )
        if self.num_atoms < 2:
            raise ConfigError(f"d4pg.num_atoms must be at least 2, got {self.num_atoms}")
        if not (np.isfinite(self.vmin) and np.isfinite(self.vmax) and self.vmin < self.vmax):
            raise ConfigError(
                f"d4pg.vmin {self.vmin} and vmax {self.vmax} must be finite with vmin < vmax"
            )
        for name in ("policy_lr", "critic_lr", "adam_eps"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"d4pg.{name} must be positive, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise ConfigError(f"d4pg.batch_size must be at least 1, got {self.batch_size}")
        if self.target_update_every < 1:
            raise ConfigError(
                f"d4pg.target_update_every must be at least 1, got {self.target_update_every}"
            )
        if not 0.0 < self.tau <= 1.0:
            raise ConfigError(f"d4pg.tau must be in (0, 1] (1 = hard copy), got {self.tau}")
        for name in ("max_grad_norm", "dqda_clip"):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"d4pg.{name} must be >= 0 (0 turns clipping off), got {getattr(self, name)}"
                )

    @property
    def policy_hidden(self) -> list[int]:
        """The policy's hidden widths: policy_sizes, else the preset's."""
        return list(self.policy_sizes or PRESETS[self.preset]["policy_sizes"])

    @property
    def critic_hidden(self) -> list[int]:
        """The critic's hidden widths: critic_sizes, else the preset's."""
        return list(self.critic_sizes or PRESETS[self.preset]["critic_sizes"])


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


# --------------------------------------------------------------------- batch


@dataclass
class ContinuousBatch:
    """Torch views of a sampled batch with float32 actions [B, A]; weights optional."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    next_obs: torch.Tensor
    weights: torch.Tensor | None = None

    @classmethod
    def from_transitions(cls, t: Transitions, weights: np.ndarray | None = None) -> ContinuousBatch:
        """Wrap a columnar numpy batch (copies only what is read-only or of another dtype)."""
        return cls(
            obs=_tensor(t.obs),
            action=_tensor(t.action),
            reward=_tensor(t.reward),
            discount=_tensor(t.discount),
            next_obs=_tensor(t.next_obs),
            weights=None if weights is None else _tensor(weights),
        )

    def check(self, obs_dim: int, action_dim: int) -> None:
        """ValueError naming the field when the batch cannot belong to these networks."""
        n = self.obs.shape[0] if self.obs.ndim else 0
        expected = {
            "obs": (n, obs_dim),
            "action": (n, action_dim),
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
                    f"batch {name} has shape {list(got)}, expected {list(shape)} (obs_dim "
                    f"{obs_dim}, action_dim {action_dim}, {n} transitions); do actors and "
                    "learner use the same env?"
                )


def _tensor(x: np.ndarray) -> torch.Tensor:
    arr = np.asarray(x)
    if arr.dtype != np.float32 or not arr.flags.writeable or not arr.flags.c_contiguous:
        # torch.from_numpy wants a writable array (np.frombuffer gives read-only ones);
        # an int64 action column (a discrete env's) becomes float32 and fails check().
        arr = np.array(arr, dtype=np.float32, order="C")
    return torch.from_numpy(arr)


# --------------------------------------------------------------------- agent


class D4PG:
    """Policy, distributional critic, their targets and optimizers, and the update count."""

    def __init__(
        self, obs_dim: int, low: np.ndarray, high: np.ndarray, cfg: D4PGConfig, seed: int = 0
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
        with torch.random.fork_rng():  # seed the initialisation without touching global RNG
            torch.manual_seed(seed)
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
        self.target_policy = copy.deepcopy(self.policy).requires_grad_(False)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.atoms = torch.linspace(cfg.vmin, cfg.vmax, cfg.num_atoms)
        self.policy_optimizer = torch.optim.Adam(
            self.policy.parameters(), lr=cfg.policy_lr, eps=cfg.adam_eps, fused=True
        )
        self.critic_optimizer = torch.optim.Adam(
            self.critic.parameters(), lr=cfg.critic_lr, eps=cfg.adam_eps, fused=True
        )
        self.steps = 0  # completed updates ("learner steps")
        # D4PG samples uniformly (as in Acme), so it sends no priorities back.
        self.last_td_abs: np.ndarray | None = None

    def target_distribution(self, batch: ContinuousBatch) -> torch.Tensor:
        """Projected n-step target probabilities [B, num_atoms], with no gradient."""
        with torch.no_grad():
            next_action = self.target_policy(batch.next_obs)
            next_probs = torch.softmax(self.target_critic(batch.next_obs, next_action), dim=-1)
            return categorical_projection(next_probs, batch.reward, batch.discount, self.atoms)

    def update(
        self, batch: ContinuousBatch | Transitions, weights: np.ndarray | None = None
    ) -> dict[str, float]:
        """One critic step and one policy step; returns losses, mean Q and mean |TD error|.

        ``weights`` (or ``batch.weights``) weigh each transition's critic loss
        (prioritized replay); None weighs every transition 1.
        """
        if isinstance(batch, Transitions):
            batch = ContinuousBatch.from_transitions(batch, weights)
        elif weights is not None:
            batch.weights = _tensor(weights)
        batch.check(self.obs_dim, self.action_dim)
        cfg = self.cfg

        # 1. Critic: cross-entropy between the projected target and Z(obs, action).
        target = self.target_distribution(batch)
        logits = self.critic(batch.obs, batch.action)
        per_item = -(target * torch.log_softmax(logits, dim=-1)).sum(dim=-1)
        if batch.weights is not None:
            per_item = per_item * batch.weights
        critic_loss = per_item.mean()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        if cfg.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
        self.critic_optimizer.step()

        # 2. Policy: deterministic policy gradient through the critic's mean.
        # dQ/da is taken with respect to the action alone (no critic weight
        # gradients are computed), clipped, then pushed through the policy.
        action = self.policy(batch.obs)
        probe = action.detach().requires_grad_(True)
        q = (torch.softmax(self.critic(batch.obs, probe), dim=-1) * self.atoms).sum(dim=-1)
        (dqda,) = torch.autograd.grad(q.sum(), probe)
        if cfg.dqda_clip > 0:
            dqda = dqda.clamp(-cfg.dqda_clip, cfg.dqda_clip)
        policy_loss = -(action * dqda).sum(dim=-1).mean()
        self.policy_optimizer.zero_grad(set_to_none=True)
        policy_loss.backward()
        if cfg.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
        self.policy_optimizer.step()
        self.steps += 1

        # 3. Every K updates move both targets towards their online nets (tau 1: copy).
        if self.steps % cfg.target_update_every == 0:
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

    def update_targets(self) -> None:
        """target <- tau * online + (1 - tau) * target for both networks."""
        with torch.no_grad():
            for online, target in (
                (self.policy, self.target_policy),
                (self.critic, self.target_critic),
            ):
                for p, tp in zip(online.parameters(), target.parameters(), strict=True):
                    if self.cfg.tau >= 1.0:
                        tp.copy_(p)
                    else:
                        tp.lerp_(p, self.cfg.tau)

    # -- what leaves the learner ---------------------------------------------

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The policy's deterministic actions [B, A] for observations [B, obs_dim] (float32)."""
        with torch.no_grad():
            out: np.ndarray = self.policy(torch.as_tensor(obs, dtype=torch.float32)).numpy()
        return out

    def policy_weights(self) -> dict[str, np.ndarray]:
        """FP32 copies of the policy's tensors, named by the wire contract."""
        return {
            name: t.detach().numpy().astype(np.float32, copy=True)
            for name, t in self.policy.state_dict().items()
        }

    def network_spec(self) -> common_pb2.NetworkSpec:
        """How the quantizer should read policy_weights()."""
        return common_pb2.NetworkSpec(
            kind=NETWORK_KIND,
            obs_dim=self.obs_dim,
            hidden_sizes=self.cfg.policy_hidden,
            output_dim=self.action_dim,
            activation=self.cfg.activation,
            action_low=self.action_low.tolist(),
            action_high=self.action_high.tolist(),
            layer_norm=self.cfg.layer_norm,
        )

    def describe(self) -> str:
        """Network sizes for logs."""
        return (
            f"policy {[self.obs_dim, *self.cfg.policy_hidden, self.action_dim]}, critic "
            f"{[self.obs_dim + self.action_dim, *self.cfg.critic_hidden, self.cfg.num_atoms]}"
        )

    # -- checkpoints -----------------------------------------------------------

    def _modules(self) -> dict[str, nn.Module]:
        return {
            "policy": self.policy,
            "critic": self.critic,
            "target_policy": self.target_policy,
            "target_critic": self.target_critic,
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly: four nets, two Adams, step."""
        state: dict[str, Any] = {name: m.state_dict() for name, m in self._modules().items()}
        state["policy_optimizer"] = self.policy_optimizer.state_dict()
        state["critic_optimizer"] = self.critic_optimizer.state_dict()
        state["steps"] = self.steps
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state_dict(); ValueError when its shapes do not fit these networks."""
        diff: list[str] = []
        for name in ("policy", "critic"):
            if name not in state:
                raise ValueError(f"saved state has no {name!r} network (not a D4PG checkpoint?)")
            mine = {k: tuple(v.shape) for k, v in self._modules()[name].state_dict().items()}
            theirs = {k: tuple(v.shape) for k, v in state[name].items()}
            diff += [
                f"{name}.{k}: saved {list(theirs[k]) if k in theirs else 'absent'}, "
                f"now {list(mine[k]) if k in mine else 'absent'}"
                for k in sorted(set(mine) | set(theirs))
                if mine.get(k) != theirs.get(k)
            ]
        if diff:
            raise ValueError(
                "saved networks do not fit these (obs/action dims, sizes or layer_norm "
                f"changed): {'; '.join(diff)}"
            )
        for name, module in self._modules().items():
            module.load_state_dict(state[name])
        # Copies: Optimizer.load_state_dict keeps the given moment tensors.
        self.policy_optimizer.load_state_dict(copy.deepcopy(state["policy_optimizer"]))
        self.critic_optimizer.load_state_dict(copy.deepcopy(state["critic_optimizer"]))
        self.steps = int(state["steps"])
