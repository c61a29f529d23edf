"""The replay's rate limiter keeps Reverb's SampleToInsertRatio semantics."""

from __future__ import annotations

import math
import random

import pytest

from actorq.config import ConfigError
from services.replay.rate_limiter import SampleToInsertRatio, check_settings


def test_below_min_size_inserts_are_free_and_samples_wait() -> None:
    lim = SampleToInsertRatio(samples_per_insert=1.0, min_size_to_sample=3, error_buffer=1.0)
    for _ in range(3):
        assert not lim.can_sample(1)
        assert lim.can_insert(1)
        lim.insert()
    assert lim.can_sample(1)


def test_bounds_are_offset_by_min_size_times_ratio() -> None:
    lim = SampleToInsertRatio(samples_per_insert=2.0, min_size_to_sample=5, error_buffer=3.0)
    assert (lim.min_diff, lim.max_diff) == (7.0, 13.0)


def test_inserts_wait_once_the_ratio_runs_ahead_of_samples() -> None:
    # spi 2, min size 1, buffer 2: diff = 2 * inserts - samples must stay in [0, 4].
    lim = SampleToInsertRatio(samples_per_insert=2.0, min_size_to_sample=1, error_buffer=2.0)
    lim.insert()  # free (min size stage)
    assert lim.can_insert(1)  # 2 * 2 - 0 = 4 <= 4
    lim.insert()
    assert not lim.can_insert(1)  # 3 * 2 - 0 = 6 > 4
    lim.sample(2)
    assert lim.can_insert(1)  # 6 - 2 = 4


def test_samples_wait_once_they_run_ahead_of_inserts() -> None:
    lim = SampleToInsertRatio(samples_per_insert=2.0, min_size_to_sample=1, error_buffer=2.0)
    lim.insert()  # diff 2
    assert lim.can_sample(2)  # 2 - 2 = 0 >= 0
    assert not lim.can_sample(3)
    lim.sample(2)
    assert not lim.can_sample(1)
    lim.insert()
    assert lim.can_sample(1)


def test_deletes_below_min_size_block_sampling_again() -> None:
    lim = SampleToInsertRatio(samples_per_insert=1.0, min_size_to_sample=2, error_buffer=10.0)
    lim.insert(2)
    assert lim.can_sample(1)
    lim.delete(1)
    assert lim.size == 1
    assert not lim.can_sample(1)


def test_ratio_off_never_blocks_inserts_and_gates_samples_on_min_size_only() -> None:
    lim = SampleToInsertRatio(samples_per_insert=0.0, min_size_to_sample=2, error_buffer=0.0)
    lim.insert(1)
    assert not lim.can_sample(1)
    lim.insert(1)
    lim.sample(10**9)
    assert lim.can_sample(10**6)
    assert lim.can_insert(10**6)
    assert lim.max_sample_batch() is None


@pytest.mark.parametrize("spi, buffer", [(16.0, 15.9), (1.0, 0.5), (0.5, 0.9)])
def test_error_buffer_smaller_than_max_of_1_and_ratio_is_refused_with_the_fix(
    spi: float, buffer: float
) -> None:
    with pytest.raises(ConfigError, match=r"error_buffer >= max\(1, samples_per_insert\)"):
        SampleToInsertRatio(samples_per_insert=spi, min_size_to_sample=10, error_buffer=buffer)


def test_error_buffer_equal_to_the_ratio_is_accepted() -> None:
    SampleToInsertRatio(samples_per_insert=16.0, min_size_to_sample=10, error_buffer=16.0)


@pytest.mark.parametrize(
    "spi, min_size, buffer, words",
    [
        (1.0, 0, 10.0, "min_size_to_sample"),
        (math.nan, 1, 10.0, "samples_per_insert"),
        (1.0, 1, -1.0, "error_buffer"),
        (1.0, 1, math.inf, "error_buffer"),
    ],
)
def test_impossible_settings_are_refused(
    spi: float, min_size: int, buffer: float, words: str
) -> None:
    with pytest.raises(ConfigError, match=words):
        check_settings(spi, min_size, buffer)


def test_a_batch_too_big_for_the_buffer_is_refused_naming_the_fix() -> None:
    lim = SampleToInsertRatio(samples_per_insert=16.0, min_size_to_sample=10, error_buffer=100.0)
    assert lim.max_sample_batch() == 184  # 2 * 100 - 16
    lim.check_batch(184)
    with pytest.raises(ValueError, match=r"batch_size <= 184.*error_buffer >= .* = 100.5"):
        lim.check_batch(185)


def test_waiting_for_a_whole_commit_could_deadlock() -> None:
    """Why the table admits a commit on can_insert(1): can_insert(K) can wedge both sides."""
    lim = SampleToInsertRatio(samples_per_insert=16.0, min_size_to_sample=1, error_buffer=16.0)
    lim.insert(1)
    lim.sample(16)  # diff 0, the bottom of the band [0, 32]
    assert not lim.can_insert(64) and not lim.can_sample(1)  # nobody could move
    assert lim.can_insert(1)  # one-insert admission still moves


@pytest.mark.parametrize("seed", range(5))
def test_one_insert_admission_never_wedges_inserts_and_allowed_batches(seed: int) -> None:
    """From every reachable state, a commit (on can_insert(1)) or a batch can go."""
    rng = random.Random(seed)
    spi = rng.choice([0.25, 1.0, 4.0, 16.0])
    buffer = max(1.0, spi) * rng.choice([1.0, 1.5, 4.0])
    lim = SampleToInsertRatio(spi, min_size_to_sample=rng.randint(1, 50), error_buffer=buffer)
    limit = lim.max_sample_batch()
    assert limit is not None
    batch = rng.randint(1, limit)
    for _ in range(2_000):
        insert_ok, sample_ok = lim.can_insert(1), lim.can_sample(batch)
        assert insert_ok or sample_ok, (spi, buffer, batch, lim.inserts, lim.samples)
        if insert_ok and (not sample_ok or rng.random() < 0.5):
            lim.insert(rng.randint(1, 200))  # a multi-transition commit
        else:
            lim.sample(batch)
