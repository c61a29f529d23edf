"""Transitions as the learner and the actors see them: numpy columns, no transport.

A chunk of n-step transitions is columnar: ``obs`` [N, obs_dim], ``action``
[N] (int64, discrete) or [N, action_dim] (float32, continuous), ``reward``,
``discount`` [N] (float32; ``discount = gamma**k``, 0 after a terminal) and
``next_obs`` [N, obs_dim]. The replay's protobuf ``TransitionChunk`` holds the
same five tensors under the same names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actorq import tensor
from actorq.v1 import replay_pb2

TRANSITION_FIELDS = ("obs", "action", "reward", "discount", "next_obs")


@dataclass
class Transitions:
    """A columnar batch of n-step transitions (leading dimension = count)."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    discount: np.ndarray
    next_obs: np.ndarray

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def rows(self, start: int, stop: int) -> Transitions:
        """Rows [start, stop) of every column (views, no copy)."""
        return Transitions(**{name: getattr(self, name)[start:stop] for name in TRANSITION_FIELDS})

    def to_proto(self, actor_id: str = "", policy_version: int = 0) -> replay_pb2.TransitionChunk:
        msg = replay_pb2.TransitionChunk(actor_id=actor_id, policy_version=policy_version)
        for name in TRANSITION_FIELDS:
            getattr(msg, name).CopyFrom(tensor.to_proto(getattr(self, name), name))
        return msg

    @classmethod
    def from_proto(cls, chunk: replay_pb2.TransitionChunk) -> Transitions:
        """Decode (no validation of cross-field shapes: the replay does that)."""
        return cls(**{name: tensor.from_proto(getattr(chunk, name)) for name in TRANSITION_FIELDS})


@dataclass
class SampledBatch:
    """Transitions drawn from replay with their keys (for priority updates) and
    importance weights (1 everywhere for a uniform sampler)."""

    transitions: Transitions
    keys: np.ndarray
    weights: np.ndarray

    def split(self, count: int) -> list[SampledBatch]:
        """count batches of equal size, one after the other (views); ValueError when the
        rows, keys and weights cannot be cut so."""
        rows, rest = divmod(len(self.keys), count)
        if rest or len(self.weights) != len(self.keys) or len(self.transitions) != len(self.keys):
            raise ValueError(
                f"a batch of {len(self.transitions)} rows, {len(self.keys)} keys and "
                f"{len(self.weights)} weights cannot hold {count} batches of equal size"
            )
        return [
            SampledBatch(
                self.transitions.rows(i, i + rows),
                self.keys[i : i + rows],
                self.weights[i : i + rows],
            )
            for i in range(0, len(self.keys), rows)
        ]
