"""Reverb's SampleToInsertRatio rate limiter, in plain Python.

Two stages (``reverb/rate_limiters.py``, ``reverb/cc/rate_limiter.cc``):

1. While the table holds fewer than ``min_size_to_sample`` items, every
   insert is allowed and every sample is blocked.
2. From then on the limiter keeps ``diff = inserts * samples_per_insert -
   samples`` inside ``[min_diff, max_diff]``, where

       min_diff = samples_per_insert * min_size_to_sample - error_buffer
       max_diff = samples_per_insert * min_size_to_sample + error_buffer

   ``can_insert(n)`` holds while ``(inserts + n) * spi - samples <= max_diff``
   and ``can_sample(n)`` while ``inserts * spi - samples - n >= min_diff``.
   The offset makes the ratio count only what happens after stage 1.

Items here are transitions. ``samples_per_insert <= 0`` turns the ratio off
(Reverb's MinSize limiter): only the minimum size gates sampling.

The limiter is not thread-safe on its own: like Reverb's, which takes the
table's mutex as an argument, it is only touched under the table's lock.
"""

from __future__ import annotations

import copy
import math

from actorq.config import ConfigError


def check_settings(samples_per_insert: float, min_size_to_sample: int, error_buffer: float) -> None:
    """ConfigError for settings Reverb refuses at construction (they can deadlock).

    Reverb requires the band ``[min_diff, max_diff]`` to be at least
    ``2 * max(1, samples_per_insert)`` wide, i.e. ``error_buffer >=
    max(1, samples_per_insert)``: a narrower band can hold a diff at which
    neither one insert nor one sample is allowed, and both sides wait forever.
    """
    if not math.isfinite(samples_per_insert):
        raise ConfigError(f"samples_per_insert must be a finite number, got {samples_per_insert}")
    if min_size_to_sample < 1:
        raise ConfigError(
            f"min_size_to_sample must be a positive integer, got {min_size_to_sample}"
        )
    if not (math.isfinite(error_buffer) and error_buffer >= 0):
        raise ConfigError(f"error_buffer must be a finite number >= 0, got {error_buffer}")
    if samples_per_insert <= 0:
        return  # ratio off: error_buffer is not used
    needed = max(1.0, samples_per_insert)
    if error_buffer < needed:
        raise ConfigError(
            f"error_buffer {error_buffer:g} is too small for samples_per_insert "
            f"{samples_per_insert:g}: inserts and samples could both block for good; "
            f"set error_buffer >= max(1, samples_per_insert) = {needed:g} "
            f"(a few times more avoids needless blocking)"
        )


class SampleToInsertRatio:
    """Counts inserts, samples and deletes; answers whether more may happen now."""

    def __init__(
        self, samples_per_insert: float, min_size_to_sample: int, error_buffer: float
    ) -> None:
        check_settings(samples_per_insert, min_size_to_sample, error_buffer)
        self.samples_per_insert = float(samples_per_insert)
        self.min_size_to_sample = int(min_size_to_sample)
        self.error_buffer = float(error_buffer)
        self.ratio_enabled = samples_per_insert > 0
        if self.ratio_enabled:
            offset = self.samples_per_insert * self.min_size_to_sample
            self.min_diff = offset - self.error_buffer
            self.max_diff = offset + self.error_buffer
        else:
            self.min_diff = -math.inf
            self.max_diff = math.inf
        self.inserts = 0
        self.samples = 0
        self.deletes = 0

    @property
    def size(self) -> int:
        """Items currently in the table, as the limiter counts them."""
        return self.inserts - self.deletes

    def with_counts(self, inserts: int, samples: int, deletes: int) -> SampleToInsertRatio:
        """A limiter with these settings and the given counters (a shared table's,
        read from Redis); this one is left as it is."""
        other = copy.copy(self)
        other.inserts, other.samples, other.deletes = inserts, samples, deletes
        return other

    def describe(self) -> str:
        """The counters for a message: ``size S, min_size_to_sample M, inserts I, samples N``."""
        return (
            f"size {self.size}, min_size_to_sample {self.min_size_to_sample}, "
            f"inserts {self.inserts}, samples {self.samples}"
        )

    def _diff(self, inserts: int, samples: int) -> float:
        return inserts * self.samples_per_insert - samples if self.ratio_enabled else 0.0

    def can_insert(self, num_inserts: int = 1) -> bool:
        """Whether num_inserts more items may be inserted now."""
        if num_inserts < 1:
            raise ValueError(f"num_inserts must be >= 1, got {num_inserts}")
        # Until the min size is reached inserts are free to progress.
        if self.inserts + num_inserts - self.deletes <= self.min_size_to_sample:
            return True
        return self._diff(self.inserts + num_inserts, self.samples) <= self.max_diff

    def can_sample(self, num_samples: int = 1) -> bool:
        """Whether num_samples more items may be sampled now."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if self.inserts - self.deletes < self.min_size_to_sample:
            return False
        return self._diff(self.inserts, self.samples) - num_samples >= self.min_diff

    def max_sample_batch(self) -> int | None:
        """Largest batch ``can_sample(batch)`` can wait for without risking a deadlock.

        Inserts are admitted on ``can_insert(1)`` (see ``table.ReplayTable``),
        so they stop once ``diff > max_diff - spi``; a batch of B waits while
        ``diff < min_diff + B``. Both waiting at once needs
        ``max_diff - spi < diff < min_diff + B``, which cannot happen when
        ``B <= max_diff - min_diff - spi = 2 * error_buffer - spi``.
        None: no limit (the ratio is off).
        """
        if not self.ratio_enabled:
            return None
        return max(1, math.floor(self.max_diff - self.min_diff - self.samples_per_insert))

    def check_batch(self, batch_size: int) -> None:
        """ValueError (naming the fix) for a batch size that could deadlock."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        limit = self.max_sample_batch()
        if limit is not None and batch_size > limit:
            needed = (self.samples_per_insert + batch_size) / 2
            raise ValueError(
                f"batch_size {batch_size} could deadlock with samples_per_insert "
                f"{self.samples_per_insert:g} and error_buffer {self.error_buffer:g}: "
                f"use batch_size <= {limit}, or run the replay with error_buffer >= "
                f"(samples_per_insert + batch_size) / 2 = {needed:g}"
            )

    def insert(self, num: int = 1) -> None:
        """Record num inserted items."""
        self.inserts += num

    def sample(self, num: int = 1) -> None:
        """Record num sampled items."""
        self.samples += num

    def delete(self, num: int = 1) -> None:
        """Record num items removed from the table (evicted)."""
        self.deletes += num
