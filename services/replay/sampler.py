"""Which keys a batch draws: the ``Sampler`` seam, uniform and prioritized sampling.

A sampler works in key space: it sees every insert and eviction as a key
range and returns keys (plus importance weights) for the store to gather.
Keys live in slots ``key % capacity`` (the store's ring), so a prioritized
sampler keeps one sum-tree leaf per slot.

Prioritized sampling is proportional PER (Schaul et al. 2016): item i is
drawn with probability ``P(i) = p_i^alpha / sum_k p_k^alpha``, with
replacement; a new item gets the largest priority seen so far (1.0 before any
update); its importance weight is ``(N * P(i))^-beta`` divided by the
largest weight in the batch (Acme's normalisation). The Redis store keeps the
leaves in Redis and every replica draws from its own copy of this sum tree
(``priority_mirror``), so both stores draw the same keys from the same seed.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

SAMPLERS = ("uniform", "prioritized")


class PrioritiesNotSupportedError(RuntimeError):
    """This sampler does not use priorities (UpdatePriorities is meaningless)."""


def uniform_refusal() -> PrioritiesNotSupportedError:
    """The error UpdatePriorities gets from a uniformly sampling replay (both stores)."""
    return PrioritiesNotSupportedError(
        "UpdatePriorities needs a prioritized sampler, but this replay samples "
        "uniformly (sampler 'uniform'); run the replay with --sampler prioritized, "
        "or stop sending priority updates"
    )


class Sampler(Protocol):
    """Called by the table under its lock; needs no locking of its own."""

    name: str

    def on_insert(self, first_key: int, count: int) -> None:
        """Keys [first_key, first_key + count) were added."""
        ...

    def on_evict(self, first_key: int, count: int) -> None:
        """Keys [first_key, first_key + count) were removed."""
        ...

    def sample(
        self, batch_size: int, first_key: int, end_key: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(int64 keys, float32 importance weights) drawn from the live keys [first_key, end_key)."""
        ...

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> int:
        """Set priorities of live keys; returns how many were updated."""
        ...


class UniformSampler:
    """Every live transition equally likely, drawn with replacement; weights all ones."""

    name = "uniform"

    def __init__(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)

    def on_insert(self, first_key: int, count: int) -> None:
        pass  # uniform sampling needs only the live key range

    def on_evict(self, first_key: int, count: int) -> None:
        pass

    def sample(
        self, batch_size: int, first_key: int, end_key: int
    ) -> tuple[np.ndarray, np.ndarray]:
        if end_key <= first_key:
            raise ValueError("cannot sample from an empty table")
        keys = self._rng.integers(first_key, end_key, size=batch_size, dtype=np.int64)
        return keys, np.ones(batch_size, dtype=np.float32)

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> int:
        raise uniform_refusal()


def tree_leaves(capacity: int) -> int:
    """Leaves of the sum tree over ``capacity`` slots: the next power of two."""
    return 1 << max(0, int(capacity) - 1).bit_length()


def importance_weights(leaves: np.ndarray, total: float, size: int, beta: float) -> np.ndarray:
    """float32 ``(size * P(i))^-beta / max``, with ``P(i) = leaf_i / total``.

    Shared by both stores so their weights agree to the bit.
    """
    probs = leaves.astype(np.float64) / total
    weights = (size * probs) ** (-beta)
    return (weights / weights.max()).astype(np.float32)


def uniform_offsets(u: np.ndarray, size: int) -> np.ndarray:
    """Offsets ``floor(u * size)`` into the live range (u in [0, 1)), clamped below size."""
    return np.minimum(np.floor(u * size), size - 1).astype(np.int64)


class SumTree:
    """A binary sum tree in one float64 array, heap layout (root 1, leaf of slot s at L + s).

    Every internal node is ``left + right`` recomputed from its children (never
    updated by deltas, so no rounding drift), so the nodes are a function of
    the leaves alone: any two trees with the same leaves draw the same slots.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.num_leaves = tree_leaves(capacity)
        self.nodes = np.zeros(2 * self.num_leaves, dtype=np.float64)

    @property
    def total(self) -> float:
        """Sum of all leaves."""
        return float(self.nodes[1])

    def leaves(self, slots: np.ndarray) -> np.ndarray:
        """Leaf values of slots."""
        return self.nodes[self.num_leaves + slots]

    def load(self, values: np.ndarray) -> None:
        """Set every leaf (values for slots 0..capacity-1) and rebuild all sums.

        Gives the same nodes as setting the leaves one by one: a node is always
        the sum of its children.
        """
        self.nodes[:] = 0.0
        self.nodes[self.num_leaves : self.num_leaves + self.capacity] = values
        width = self.num_leaves // 2
        while width >= 1:
            parents = np.arange(width, 2 * width)
            self.nodes[parents] = self.nodes[2 * parents] + self.nodes[2 * parents + 1]
            width //= 2

    def set(self, slots: np.ndarray, values: np.ndarray) -> None:
        """Set leaves (slots unique) and recompute their ancestors."""
        nodes = self.num_leaves + np.asarray(slots, dtype=np.int64)
        self.nodes[nodes] = values
        nodes = np.unique(nodes // 2)
        while nodes.size and nodes[-1] >= 1:
            nodes = nodes[nodes >= 1]
            self.nodes[nodes] = self.nodes[2 * nodes] + self.nodes[2 * nodes + 1]
            nodes = np.unique(nodes // 2)

    def set_run(self, first_slot: int, count: int, value: float) -> None:
        """Set ``count`` consecutive slots from first_slot (wrapping at capacity) to
        value: what an insert does, with slices instead of ``set``'s index sets."""
        head = min(count, self.capacity - first_slot)
        runs = [(first_slot, head)] + ([(0, count - head)] if head < count else [])
        for start, n in runs:
            lo, hi = self.num_leaves + start, self.num_leaves + start + n  # [lo, hi)
            self.nodes[lo:hi] = value
            while lo > 1:
                lo, hi = lo // 2, (hi - 1) // 2 + 1
                self.nodes[lo:hi] = (
                    self.nodes[2 * lo : 2 * hi : 2] + self.nodes[2 * lo + 1 : 2 * hi : 2]
                )

    def find(self, targets: np.ndarray) -> np.ndarray:
        """Slots whose prefix-sum interval holds each target (0 <= target < total).

        Descends left when the target is below the left sum (and it is positive)
        or the right sum is zero, otherwise subtracts the left sum and goes right;
        so a leaf of zero is never returned while the total is positive.
        """
        target = np.array(targets, dtype=np.float64)
        idx = np.ones(target.shape, dtype=np.int64)
        while idx.size and idx[0] < self.num_leaves:  # all paths have the same depth
            left = self.nodes[2 * idx]
            right = self.nodes[2 * idx + 1]
            go_left = ((target < left) & (left > 0)) | (right <= 0)
            target = np.where(go_left, target, target - left)
            idx = 2 * idx + (~go_left)
        return idx - self.num_leaves


class PrioritizedSampler:
    """Proportional prioritized sampling over a ring of ``capacity`` slots (see module doc)."""

    name = "prioritized"

    def __init__(
        self,
        capacity: int,
        seed: int | None = None,
        priority_exponent: float = 0.6,
        importance_exponent: float = 0.4,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.priority_exponent = float(priority_exponent)
        self.importance_exponent = float(importance_exponent)
        self.tree = SumTree(capacity)
        self.max_leaf = 1.0  # leaf of the largest priority seen (1.0 ** alpha to start)
        self._rng = np.random.default_rng(seed)
        self._first = 0
        self._end = 0

    def on_insert(self, first_key: int, count: int) -> None:
        self.tree.set_run(first_key % self.capacity, count, self.max_leaf)
        self._end = first_key + count

    def on_evict(self, first_key: int, count: int) -> None:
        # The evicted slots are the ones the same commit's on_insert overwrites.
        self._first = first_key + count

    def sample(
        self, batch_size: int, first_key: int, end_key: int
    ) -> tuple[np.ndarray, np.ndarray]:
        if end_key <= first_key:
            raise ValueError("cannot sample from an empty table")
        u = self._rng.random(batch_size)
        return self.draw(u, first_key, end_key)

    def draw(self, u: np.ndarray, first_key: int, end_key: int) -> tuple[np.ndarray, np.ndarray]:
        """Keys and weights for uniform numbers u in [0, 1) (the RNG-free part of sample)."""
        return proportional_draw(
            self.tree, u, first_key, end_key - first_key, self.importance_exponent
        )

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> int:
        """keys unique (the table dedupes); keys no longer (or not yet) live are skipped."""
        live = (keys >= self._first) & (keys < self._end)
        if not live.any():
            return 0
        leaves = priority_leaves(priorities[live], self.priority_exponent)
        self.tree.set(keys[live] % self.capacity, leaves)
        self.max_leaf = max(self.max_leaf, float(leaves.max()))
        return int(live.sum())


def proportional_draw(
    tree: SumTree, u: np.ndarray, first_key: int, size: int, beta: float
) -> tuple[np.ndarray, np.ndarray]:
    """(keys, importance weights) for uniform numbers u in [0, 1), live keys
    [first_key, first_key + size) in slots ``key % tree.capacity``.

    Both stores draw through this function (the Redis one on its replica's
    copy of the tree), so equal trees and numbers give equal batches.
    """
    total = tree.total
    if total <= 0:  # every priority set to zero: nothing to prefer, sample uniformly
        return first_key + uniform_offsets(u, size), np.ones(len(u), dtype=np.float32)
    slots = tree.find(u * total)
    keys = first_key + np.mod(slots - first_key, tree.capacity)
    return keys, importance_weights(tree.leaves(slots), total, size, beta)


def priority_leaves(priorities: np.ndarray, priority_exponent: float) -> np.ndarray:
    """float64 ``priority ** alpha``, computed in Python for both stores (one libm)."""
    return np.power(priorities.astype(np.float64), priority_exponent)
