"""The suite's statistics: bootstrap intervals over seeds, censored runs, equivalence."""

from __future__ import annotations

import math

import pytest

from commands.bench.stats import equivalent, ratio_of_medians, time_to_target


def test_the_ratio_is_of_the_medians_and_its_interval_holds_it() -> None:
    r = ratio_of_medians([100.0, 120.0, 90.0], [40.0, 50.0, 45.0])
    assert r is not None
    assert r.point == pytest.approx(100.0 / 45.0)
    assert r.low <= r.point <= r.high
    assert r.n_a == r.n_b == 3


def test_separated_seeds_give_an_interval_above_one_and_overlapping_ones_do_not() -> None:
    clear = ratio_of_medians([100.0, 120.0, 90.0], [40.0, 50.0, 45.0])
    mixed = ratio_of_medians([100.0, 120.0, 90.0], [40.0, 50.0, 130.0])
    assert clear is not None and clear.excludes(1.0) and clear.low > 1.0
    assert mixed is not None and not mixed.excludes(1.0)


def test_the_interval_is_reproducible_for_a_seed() -> None:
    a, b = [3.0, 5.0, 4.0, 9.0], [2.0, 1.0, 3.0]
    assert ratio_of_medians(a, b, seed=7) == ratio_of_medians(a, b, seed=7)


def test_no_runs_no_ratio() -> None:
    assert ratio_of_medians([], [1.0]) is None


def test_a_censored_run_can_only_count_against_int8() -> None:
    assert time_to_target(True, 50.0, 80.0, "int8") == 50.0
    # fp32 missed its target: its wall time, a lower bound (shrinks the ratio).
    assert time_to_target(False, None, 420.0, "fp32") == 420.0
    # int8 missed: never (drives the ratio to 0).
    assert time_to_target(False, None, 420.0, "int8") == math.inf
    r = ratio_of_medians([100.0, 100.0, 100.0], [math.inf, math.inf, 10.0])
    assert r is not None and r.point == 0.0 and r.low == 0.0


def test_equal_returns_are_shown_equivalent_and_distant_ones_are_not() -> None:
    same = equivalent([195.0, 198.0, 200.0], [196.0, 200.0, 199.0])
    far = equivalent([195.0, 198.0, 200.0], [150.0, 160.0, 140.0])
    assert same is not None and same.shown and same.within_point
    assert far is not None and not far.shown and not far.within_point


def test_equivalence_scales_negative_returns_by_their_magnitude() -> None:
    eq = equivalent([-120.0, -110.0, -130.0], [-118.0, -122.0, -119.0])
    assert eq is not None
    assert eq.difference.point == pytest.approx((-119.0 - -120.0) / 120.0)
    assert eq.within_point
