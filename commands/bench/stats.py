"""Statistics a reviewer accepts for fp32-vs-int8 runs over seeds.

- ``ratio_of_medians``: median(a) / median(b) with a percentile bootstrap 95%
  interval, resampling the seeds of each precision independently (the runs of
  one precision are exchangeable; a seed does not pair an fp32 run with an
  int8 run, whose trajectories differ from the first update on).
- ``time_to_target``: what a run contributes to a time ratio when it did not
  reach the target (censored): a conservative stand-in, never one that helps
  the claim "int8 is faster" (see its docstring).
- ``equivalent``: whether two sets of final returns agree within a relative
  margin, by the bootstrap interval of their difference scaled by the first's
  median (two one-sided tests at 5% each amount to a 90% interval inside the
  margin).

Everything here is numpy and deterministic for a given seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval."""

    point: float
    low: float
    high: float
    level: float
    n_a: int
    n_b: int

    def excludes(self, value: float) -> bool:
        """Whether the whole interval lies above or below value."""
        return self.low > value or self.high < value

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _median_resamples(values: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    draws = rng.integers(0, len(values), size=(n, len(values)))
    return np.median(values[draws], axis=1)


def ratio_of_medians(
    a: Sequence[float],
    b: Sequence[float],
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> Interval | None:
    """median(a) / median(b) and its bootstrap interval; None if either side is empty.

    Values may be ``math.inf`` (a censored run, see ``time_to_target``): the
    ratio is then inf or 0 where the resample's median is.
    """
    xa = np.asarray([float(v) for v in a], dtype=np.float64)
    xb = np.asarray([float(v) for v in b], dtype=np.float64)
    if xa.size == 0 or xb.size == 0:
        return None
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        point = float(np.median(xa) / np.median(xb))
        ratios = _median_resamples(xa, rng, resamples) / _median_resamples(xb, rng, resamples)
    ratios = np.nan_to_num(ratios, nan=1.0, posinf=math.inf)
    tail = (1.0 - level) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail], method="lower")
    return Interval(point, float(low), float(high), level, int(xa.size), int(xb.size))


def time_to_target(reached: bool, time_s: float | None, wall_s: float | None, side: str) -> float:
    """A run's time for the fp32/int8 time ratio, censored runs made conservative.

    A run that reached the target contributes its time. One that did not is
    censored: its time is at least its wall time. For the numerator (``side``
    "fp32") the wall time is used, a lower bound, which can only shrink the
    ratio; for the denominator ("int8") infinity is used, which drives the
    ratio to 0. Neither choice can make int8 look faster than it was.
    """
    if reached and time_s is not None:
        return float(time_s)
    if side == "fp32":
        return float(wall_s) if wall_s is not None else 0.0
    return math.inf


@dataclass(frozen=True)
class Equivalence:
    """Whether b's values match a's within ``margin`` of a's scale, and how sure."""

    # (median(b) - median(a)) / |median(a)|, with its 90% bootstrap interval.
    difference: Interval
    margin: float
    # The point estimate lies within the margin.
    within_point: bool
    # The whole interval lies within the margin (equivalence shown: two one-sided
    # tests at 5% each).
    shown: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "difference": self.difference.as_dict(),
            "margin": self.margin,
            "within_point": self.within_point,
            "shown": self.shown,
        }


def equivalent(
    a: Sequence[float],
    b: Sequence[float],
    margin: float = 0.05,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> Equivalence | None:
    """Relative difference of medians, (median(b) - median(a)) / |median(a)|, against
    [-margin, margin] by its 90% bootstrap interval. Returns may be negative (the
    scale is |median(a)|); None when either side is empty or a's median is 0."""
    xa = np.asarray([float(v) for v in a], dtype=np.float64)
    xb = np.asarray([float(v) for v in b], dtype=np.float64)
    if xa.size == 0 or xb.size == 0 or np.median(xa) == 0:
        return None
    scale = abs(float(np.median(xa)))
    rng = np.random.default_rng(seed)
    diffs = (_median_resamples(xb, rng, resamples) - _median_resamples(xa, rng, resamples)) / scale
    low, high = np.quantile(diffs, [0.05, 0.95], method="lower")
    point = (float(np.median(xb)) - float(np.median(xa))) / scale
    interval = Interval(point, float(low), float(high), 0.90, int(xa.size), int(xb.size))
    return Equivalence(
        difference=interval,
        margin=margin,
        within_point=-margin <= point <= margin,
        shown=-margin <= interval.low and interval.high <= margin,
    )
