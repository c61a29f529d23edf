"""What every learning algorithm here needs around its update step, written once.

- ``resolve_device``: where the networks live (``auto``: CUDA when torch sees a GPU);
- ``tensor``: the one place numpy arrays become torch tensors (on the device);
- ``Batch``: a sampled batch as tensors, shape-checked against the networks
  (discrete actions int64 [N], continuous actions float32 [N, A]);
- ``seeded``, ``frozen_copy``, ``adam``, ``gradient_step``: networks and optimisation;
- ``update_target``: target <- tau * online + (1 - tau) * target (tau 1: copy);
- ``policy_weights``: FP32 numpy copies of a network, as the quantizer gets them;
- ``training_state`` / ``restore_training_state``: checkpoints of networks,
  optimizers and the update count, refused naming every tensor that does not fit.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from actorq.config import ConfigError
from actorq.transitions import Transitions

M = TypeVar("M", bound=nn.Module)

_TORCH_DTYPES: dict[type[np.generic], torch.dtype] = {
    np.float32: torch.float32,
    np.int64: torch.int64,
}


CPU = torch.device("cpu")


def resolve_device(name: str) -> torch.device:
    """The torch device a ``learner.device`` setting names: ``auto`` is CUDA when torch
    sees a GPU, else the CPU; ``cuda`` without a GPU is a ConfigError saying so."""
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else CPU
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r}: this torch ({torch.__version__}) sees no CUDA GPU; "
                "use device auto or cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {name!r}: torch sees {torch.cuda.device_count()} GPU(s), numbered from 0"
            )
    return device


def tensor(
    x: np.ndarray | torch.Tensor, dtype: type[np.generic] = np.float32, device: torch.device = CPU
) -> torch.Tensor:
    """x as a torch tensor of dtype on device, sharing memory with x where it can.

    On the CPU copies only what is read-only (``np.frombuffer`` arrays from the
    wire), not C-contiguous, or of another dtype; on a GPU the one copy is the
    transfer.
    """
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=_TORCH_DTYPES[dtype])
    arr = np.asarray(x, dtype=dtype)
    if device.type != "cpu":
        return torch.as_tensor(arr, device=device)
    if not arr.flags.writeable or not arr.flags.c_contiguous:
        # torch.from_numpy wants a writable array.
        arr = np.array(arr, dtype=dtype, order="C")
    return torch.from_numpy(arr)


def numpy(t: torch.Tensor) -> np.ndarray:
    """A float32 numpy copy of a tensor, wherever it lives (the CPU side of a result)."""
    return t.detach().to(CPU).numpy().astype(np.float32, copy=True)


@dataclass
class Batch:
    """Torch views of a sampled batch: float32 columns, actions int64 [N] (discrete)
    or float32 [N, A] (continuous); per-transition importance weights optional."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    next_obs: torch.Tensor
    weights: torch.Tensor | None = None

    @classmethod
    def from_transitions(
        cls,
        t: Transitions,
        weights: np.ndarray | torch.Tensor | None = None,
        action_dtype: type[np.generic] | None = None,
        device: torch.device = CPU,
    ) -> Batch:
        """Wrap a columnar numpy batch, on device; actions become action_dtype (by
        default int64 for an integer column, float32 otherwise)."""
        if action_dtype is None:
            integer = np.issubdtype(np.asarray(t.action).dtype, np.integer)
            action_dtype = np.int64 if integer else np.float32
        return cls(
            obs=tensor(t.obs, device=device),
            action=tensor(t.action, action_dtype, device),
            reward=tensor(t.reward, device=device),
            discount=tensor(t.discount, device=device),
            next_obs=tensor(t.next_obs, device=device),
            weights=None if weights is None else tensor(weights, device=device),
        )

    @classmethod
    def of(
        cls,
        batch: Batch | Transitions,
        weights: np.ndarray | torch.Tensor | None,
        action_dtype: type[np.generic],
        device: torch.device = CPU,
    ) -> Batch:
        """A Batch for an update on device: batch itself, with ``weights`` when given."""
        if isinstance(batch, Transitions):
            return cls.from_transitions(batch, weights, action_dtype, device)
        if weights is not None:
            return dataclasses.replace(batch, weights=tensor(weights, device=device))
        return batch

    def check(self, obs_dim: int, action_shape: tuple[int, ...] = ()) -> None:
        """ValueError naming the field when the batch cannot belong to these networks;
        action_shape is one action's shape ((): a discrete action index)."""
        n = self.obs.shape[0] if self.obs.ndim else 0
        expected = {
            "obs": (n, obs_dim),
            "action": (n, *action_shape),
            "reward": (n,),
            "discount": (n,),
            "next_obs": (n, obs_dim),
        }
        if self.weights is not None:
            expected["weights"] = (n,)
        dims = f"obs_dim {obs_dim}, " + "".join(f"action_dim {d}, " for d in action_shape)
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(
                    f"batch {name} has shape {list(got)}, expected {list(shape)} "
                    f"({dims}{n} transitions); do actors and learner use the same env?"
                )


# -- networks and optimisation --------------------------------------------------


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch for the networks built inside, leaving the global RNG as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def frozen_copy(network: M) -> M:
    """A target network: a copy of network that takes no gradients."""
    return copy.deepcopy(network).requires_grad_(False)


class DeferredAdam:
    """Adam over a network's parameters, built at its first use.

    Building any torch optimizer imports ``torch._dynamo`` (about 1.1 CPU-seconds,
    torch 2.13), the largest single cost of a learner's start. Nothing needs the
    optimizer before the first update (which waits for replay to fill) or the first
    checkpoint, so the learner serves its health first and pays it then. The four
    methods the learner uses are the optimizer's own.
    """

    def __init__(self, network: nn.Module, lr: float, eps: float) -> None:
        self._network, self._lr, self._eps = network, lr, eps
        self._adam: torch.optim.Adam | None = None

    @property
    def optimizer(self) -> torch.optim.Adam:
        """The torch optimizer (built now if it was not yet)."""
        if self._adam is None:
            # fused: one kernel for all parameters, ~20% more updates/s for small nets on CPU.
            self._adam = torch.optim.Adam(
                self._network.parameters(), lr=self._lr, eps=self._eps, fused=True
            )
        return self._adam

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)


def adam(network: nn.Module, lr: float, eps: float) -> DeferredAdam:
    """Adam over a network's parameters (built at its first use: ``DeferredAdam``)."""
    return DeferredAdam(network, lr, eps)


def gradient_step(
    optimizer: DeferredAdam, network: nn.Module, loss: torch.Tensor, max_grad_norm: float
) -> None:
    """One optimizer step on loss, the global gradient norm clipped (0: no clipping)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm > 0:
        nn.utils.clip_grad_norm_(network.parameters(), max_grad_norm)
    optimizer.step()


def update_target(online: nn.Module, target: nn.Module, tau: float) -> None:
    """target <- tau * online + (1 - tau) * target (tau >= 1: an exact copy)."""
    with torch.no_grad():
        for p, tp in zip(online.parameters(), target.parameters(), strict=True):
            if tau >= 1.0:
                tp.copy_(p)
            else:
                tp.lerp_(p, tau)


def policy_weights(network: nn.Module) -> dict[str, np.ndarray]:
    """FP32 CPU copies of a network's tensors, named as its state_dict (the wire
    contract), wherever the network lives."""
    return {name: numpy(t) for name, t in network.state_dict().items()}


# -- checkpoints -------------------------------------------------------------------


def training_state(
    networks: Mapping[str, nn.Module],
    optimizers: Mapping[str, DeferredAdam],
    steps: int,
) -> dict[str, Any]:
    """Everything needed to continue training exactly: networks, optimizers, step."""
    state: dict[str, Any] = {name: net.state_dict() for name, net in networks.items()}
    state.update({name: opt.state_dict() for name, opt in optimizers.items()})
    state["steps"] = steps
    return state


def _shape_diff(network: nn.Module, saved: Mapping[str, torch.Tensor], prefix: str) -> list[str]:
    mine = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in saved.items()}
    return [
        f"{prefix}{k}: saved {list(theirs[k]) if k in theirs else 'absent'}, "
        f"now {list(mine[k]) if k in mine else 'absent'}"
        for k in sorted(set(mine) | set(theirs))
        if mine.get(k) != theirs.get(k)
    ]


def restore_training_state(
    state: Mapping[str, Any],
    networks: Mapping[str, nn.Module],
    optimizers: Mapping[str, DeferredAdam],
    checked: Mapping[str, nn.Module],
    sizes: str,
    algo: str,
) -> int:
    """Load training_state() into networks and optimizers; returns the step count.

    Before anything is loaded, the ``checked`` networks' saved shapes must be
    theirs: ValueError otherwise, naming every tensor that differs and ``sizes``
    (the settings that change them); a state without them is not an ``algo`` one.
    """
    diff: list[str] = []
    for name, network in checked.items():
        if name not in state:
            raise ValueError(f"saved state has no {name!r} network (not a {algo} checkpoint?)")
        diff += _shape_diff(network, state[name], f"{name}." if len(checked) > 1 else "")
    if diff:
        what = "networks do not fit these" if len(checked) > 1 else "network does not fit this one"
        raise ValueError(f"saved {what} ({sizes} changed): {'; '.join(diff)}")
    for name, network in networks.items():
        network.load_state_dict(state[name])
    for name, optimizer in optimizers.items():
        # A copy: Optimizer.load_state_dict keeps the given moment tensors, which would
        # otherwise stay shared with whoever else holds this state.
        optimizer.load_state_dict(copy.deepcopy(state[name]))
    return int(state["steps"])
