"""The replay core without a network: config, store, sampler and table."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from actorq.clients import split_batches
from actorq.config import ConfigError, load
from services.replay.checks import validate_chunk
from services.replay.config import ReplayConfig
from services.replay.errors import (
    BatchTooLargeError,
    InvalidChunkError,
    TableClosedError,
    TooManyTransitionsError,
    WaitAbandonedError,
    WaitTimeoutError,
)
from services.replay.factory import build_table
from services.replay.rate_limiter import SampleToInsertRatio
from services.replay.sampler import PrioritiesNotSupportedError, UniformSampler
from services.replay.server import batches_per_message, encode_batches
from services.replay.store import MemoryStore, Signature, SignatureError
from services.replay.table import ReplayTable

Columns = dict[str, np.ndarray]


def chunk(n: int, start: float = 0.0, obs_dim: int = 4) -> Columns:
    """n CartPole-like transitions; obs[:, 0] counts up from start to tell rows apart."""
    obs = np.zeros((n, obs_dim), np.float32)
    obs[:, 0] = start + np.arange(n, dtype=np.float32)
    return {
        "obs": obs,
        "action": np.arange(n, dtype=np.int64) % 2,
        "reward": np.ones(n, np.float32),
        "discount": np.full(n, 0.99, np.float32),
        "next_obs": obs + 1,
    }


def table(
    *,
    capacity: int = 1_000,
    min_size: int = 1,
    spi: float = 0.0,
    error_buffer: float = 100.0,
    max_insert: int | None = None,
    max_batch_bytes: int | None = None,
    clock: Callable[[], float] = time.time,
) -> ReplayTable:
    return ReplayTable(
        MemoryStore(capacity),
        UniformSampler(seed=0),
        SampleToInsertRatio(spi, min_size, error_buffer),
        max_insert_transitions=max_insert or capacity,
        max_batch_bytes=max_batch_bytes,
        wait_slice_s=0.02,
        clock=clock,
    )


def in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run fn on a thread; its result or exception lands in the returned list."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())
        except Exception as err:
            out.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


# -- config --------------------------------------------------------------------


def test_default_config_is_valid() -> None:
    cfg = ReplayConfig()
    assert (cfg.port, cfg.capacity, cfg.min_size_to_sample, cfg.store) == (
        50051,
        100_000,
        1_000,
        "memory",
    )


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"store": "redis"}, "store 'redis' unknown"),
        ({"store": "redis://127.0.0.1:6379/zero"}, "must be a database number"),
        ({"store": "redis:///0"}, "has no host"),
        ({"sampler": "rank"}, "sampler 'rank' unknown"),
        ({"priority_exponent": -1.0}, "priority_exponent"),
        ({"importance_exponent": 1.5}, r"importance_exponent must be in \[0, 1\]"),
        ({"table": "my table"}, "table 'my table'"),
        ({"samples_per_insert": 16.0, "error_buffer": 8.0}, "error_buffer >= max"),
        ({"capacity": 100, "min_size_to_sample": 101}, "min_size_to_sample 101 exceeds capacity"),
        ({"max_insert_transitions": 0}, "max_insert_transitions"),
        ({"capacity": 0}, "capacity"),
        ({"port": 70000}, "port"),
    ],
)
def test_config_refuses_settings_that_cannot_work(overrides: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        ReplayConfig(**overrides)


def test_config_reads_flags_and_environment() -> None:
    cfg = load(
        ReplayConfig,
        env={"ACTORQ_SAMPLES_PER_INSERT": "8"},
        flags={"error_buffer": "64", "capacity": "5000"},
    )
    assert (cfg.samples_per_insert, cfg.error_buffer, cfg.capacity) == (8.0, 64.0, 5000)


# -- store -----------------------------------------------------------------------


def test_store_evicts_oldest_first_and_wraps_around() -> None:
    store = MemoryStore(capacity=5)
    assert store.add([chunk(3, start=0)]) == (0, 0)
    assert store.add([chunk(4, start=3)]) == (3, 2)
    assert (store.size, store.end_key) == (5, 7)
    got = store.gather(np.arange(2, 7, dtype=np.int64))
    np.testing.assert_array_equal(got["obs"][:, 0], [2, 3, 4, 5, 6])
    np.testing.assert_array_equal(got["next_obs"][:, 0], [3, 4, 5, 6, 7])


def test_store_keys_increase_across_commits() -> None:
    store = MemoryStore(capacity=4)
    firsts = [store.add([chunk(3)])[0] for _ in range(4)]
    assert firsts == [0, 3, 6, 9]


def test_store_signature_is_fixed_by_the_first_insert() -> None:
    store = MemoryStore(capacity=10)
    store.add([chunk(2, obs_dim=4)])
    assert store.signature == Signature.of(chunk(1, obs_dim=4))
    with pytest.raises(SignatureError, match=r"obs is float32 with per-transition shape \[8\]"):
        store.add([chunk(2, obs_dim=8)])
    assert (store.size, store.end_key) == (2, 2)


def test_store_refuses_a_commit_bigger_than_capacity() -> None:
    with pytest.raises(ValueError, match="exceed the capacity 3"):
        MemoryStore(capacity=3).add([chunk(2), chunk(2)])


# -- sampler ---------------------------------------------------------------------


def test_uniform_sampler_is_seeded_and_stays_in_the_live_range() -> None:
    a, wa = UniformSampler(seed=7).sample(1_000, 10, 20)
    b, _ = UniformSampler(seed=7).sample(1_000, 10, 20)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.int64 and a.min() >= 10 and a.max() < 20
    assert set(a.tolist()) == set(range(10, 20))
    assert wa.dtype == np.float32 and (wa == 1).all()


def test_uniform_sampler_refuses_priority_updates() -> None:
    with pytest.raises(PrioritiesNotSupportedError, match="prioritized"):
        UniformSampler().update_priorities(np.zeros(1, np.int64), np.ones(1, np.float32))


# -- chunk validation --------------------------------------------------------------


def _with(field: str, value: np.ndarray | None) -> Columns:
    c = chunk(4)
    c[field] = value  # type: ignore[assignment]
    return c


@pytest.mark.parametrize(
    "columns, words",
    [
        (_with("reward", None), "reward missing"),
        (_with("obs", np.zeros((4, 4), np.float64)), "obs is float64, expected float32"),
        (_with("action", np.zeros(3, np.int64)), r"action has shape \[3\] but obs has 4 rows"),
        (_with("next_obs", np.zeros((4, 5), np.float32)), "next_obs has shape"),
        (_with("reward", np.zeros((4, 1), np.float32)), r"reward has shape \[4, 1\]"),
        (_with("action", np.zeros(4, np.int32)), "action is int32"),
        (_with("next_obs", np.full((4, 4), np.nan, np.float32)), "next_obs contains NaN"),
        (_with("reward", np.array([0, 0, np.inf, 0], np.float32)), r"reward .* \(row 2\)"),
        (_with("discount", np.array([1, 1, 1.5, 1], np.float32)), r"discount must be in \[0, 1\]"),
        (chunk(0), "at least one transition"),
    ],
)
def test_invalid_chunks_are_refused_naming_the_field(columns: Columns, words: str) -> None:
    with pytest.raises(InvalidChunkError, match=words):
        validate_chunk(columns, index=3)


def test_continuous_actions_are_float32_rows() -> None:
    assert validate_chunk(_with("action", np.zeros((4, 2), np.float32))).size == 4


# -- table: inserts ---------------------------------------------------------------


def test_insert_commits_every_chunk_and_returns_the_size() -> None:
    t = table()
    assert t.insert([chunk(3), chunk(5)], actor_id="actor-0") == 8
    assert t.stats().inserted == 8 and t.stats().insert_calls == 1


def test_a_stream_with_a_bad_chunk_in_the_middle_stores_nothing() -> None:
    t = table()
    bad = _with("obs", np.full((4, 4), np.nan, np.float32))
    with pytest.raises(InvalidChunkError, match="chunk 1: obs contains NaN"):
        t.insert([chunk(4), bad, chunk(4)])
    stats = t.stats()
    assert (stats.size, stats.inserted, stats.insert_calls, stats.rejected_calls) == (0, 0, 0, 1)


def test_chunks_of_a_first_insert_must_agree_with_each_other() -> None:
    t = table()
    with pytest.raises(SignatureError, match="chunk 1: obs"):
        t.insert([chunk(2, obs_dim=4), chunk(2, obs_dim=3)])
    assert t.size == 0
    t.insert([chunk(2, obs_dim=3)])  # the signature was not fixed by the refused insert


def test_insert_with_a_different_signature_than_the_table_stores_nothing() -> None:
    t = table()
    t.insert([chunk(2)])
    with pytest.raises(SignatureError, match="fixed by the first insert"):
        t.insert([_with("action", np.zeros((4, 2), np.float32))])
    assert t.size == 2


def test_max_insert_transitions_is_capped_at_capacity() -> None:
    assert build_table(ReplayConfig(capacity=50, min_size_to_sample=1)).max_insert_transitions == 50


def test_insert_over_max_insert_transitions_is_refused() -> None:
    t = table(max_insert=10)
    with pytest.raises(TooManyTransitionsError, match="max_insert_transitions 10"):
        t.insert([chunk(6), chunk(6)])
    assert t.size == 0


def test_full_table_evicts_fifo_and_samples_only_live_transitions() -> None:
    t = table(capacity=10)
    for i in range(5):
        t.insert([chunk(4, start=4 * i)])
    stats = t.stats()
    assert (stats.size, stats.evicted) == (10, 10)
    batch = t.sample(500)
    assert batch.keys.min() >= 10 and batch.keys.max() < 20
    np.testing.assert_array_equal(batch.columns["obs"][:, 0], batch.keys)


def test_stats_track_each_actor_and_when_it_was_last_heard_from() -> None:
    now = [1000.0]
    t = table(clock=lambda: now[0])
    t.insert([chunk(3)], actor_id="a")
    now[0] = 1005.0
    t.insert([chunk(2)], actor_id="b")
    t.insert([chunk(4)], actor_id="a")
    stats = t.stats()
    assert stats.inserted_by_actor == {"a": 7, "b": 2}
    assert stats.actor_last_seen_unix == {"a": 1005.0, "b": 1005.0}


# -- table: sampling and waiting ------------------------------------------------------


def test_sample_waits_for_min_size_and_unblocks_after_inserts() -> None:
    t = table(min_size=10)
    t.insert([chunk(5)])
    thread, out = in_thread(lambda: t.sample(4, timeout=5.0))
    time.sleep(0.1)
    assert thread.is_alive()
    t.insert([chunk(5)])
    thread.join(2.0)
    assert not thread.is_alive()
    assert len(out[0].keys) == 4  # type: ignore[attr-defined]
    assert t.stats().sample_blocked_s > 0.05


def test_sample_gives_up_at_its_deadline() -> None:
    t = table(min_size=10)
    with pytest.raises(WaitTimeoutError, match="min_size_to_sample 10"):
        t.sample(1, timeout=0.05)
    assert t.stats().sampled == 0


def test_sample_counts_and_observed_ratio() -> None:
    t = table()
    t.insert([chunk(8)])
    t.sample(4)
    t.sample(12)
    stats = t.stats()
    assert (stats.sampled, stats.sample_batches, stats.observed_samples_per_insert) == (16, 2, 2.0)


def test_a_batch_that_could_deadlock_the_limiter_is_refused_before_waiting() -> None:
    t = table(spi=4.0, error_buffer=10.0)
    with pytest.raises(ValueError, match="batch_size 17 could deadlock"):
        t.sample(17)
    assert t.stats().rejected_calls == 1


def test_a_batch_larger_than_a_message_is_refused() -> None:
    # 100 CartPole rows: a 48-byte transition plus its 8-byte key and 4-byte weight.
    t = table(max_batch_bytes=60 * 100)
    t.insert([chunk(4)])
    with pytest.raises(BatchTooLargeError, match="use batch_size <= 100"):
        t.sample(101)
    assert t.stats().sampled == 0


def test_batches_share_a_message_only_as_far_as_they_fit_and_come_apart_unchanged() -> None:
    t = table(max_batch_bytes=60 * 100)  # 100 CartPole rows per message
    assert batches_per_message(t, 20, 8) == 8  # before the first insert: what was asked
    t.insert([chunk(40)])
    assert [batches_per_message(t, n, 8) for n in (10, 20, 30, 100)] == [8, 5, 3, 1]
    assert batches_per_message(t, 10, 0) == 1  # 0: one batch per message
    drawn = t.sample_many(10, 3)
    for i, batch in enumerate(drawn):  # each batch's own weights, as a prioritized draw has
        batch.weights[:] = np.linspace(0.1, 1.0, 10, dtype=np.float32) ** (i + 1)
    msg = encode_batches(drawn)
    assert msg.batch_count == 3 and len(msg.keys.data) == 3 * 10 * 8
    for got, want in zip(split_batches(msg), drawn, strict=True):
        np.testing.assert_array_equal(got.keys, want.keys)
        np.testing.assert_array_equal(got.weights, want.weights)
        for name, column in want.columns.items():
            np.testing.assert_array_equal(getattr(got.transitions, name), column)
    msg.batch_count = 4  # 30 rows cannot be 4 equal batches
    with pytest.raises(ValueError, match="cannot hold 4 batches"):
        split_batches(msg)


def test_a_commit_is_admitted_on_one_insert_and_later_inserts_wait_for_samples() -> None:
    """Bounded overshoot: the commit passes max_diff, then inserts wait for the learner."""
    t = table(spi=1.0, min_size=1, error_buffer=8.0)  # diff must stay in [-7, 9]
    t.insert([chunk(20)])  # admitted (min-size stage), diff 20: 11 past max_diff
    with pytest.raises(WaitTimeoutError):
        t.insert([chunk(1)], timeout=0.05)
    t.sample(12)  # diff 8: one more insert (to 9) fits
    assert t.insert([chunk(1)], timeout=1.0) == 21


def test_a_waiting_insert_gives_up_when_its_caller_leaves() -> None:
    t = table(spi=1.0, min_size=1, error_buffer=8.0)
    t.insert([chunk(20)])
    gone = threading.Event()
    thread, out = in_thread(lambda: t.insert([chunk(1)], should_continue=lambda: not gone.is_set()))
    time.sleep(0.05)
    gone.set()
    t.wake()
    thread.join(1.0)
    assert isinstance(out[0], WaitAbandonedError)
    assert t.size == 20


def test_close_releases_every_waiter() -> None:
    t = table(min_size=10)
    thread, out = in_thread(lambda: t.sample(1))
    time.sleep(0.05)
    t.close()
    thread.join(1.0)
    assert isinstance(out[0], TableClosedError)


def test_concurrent_commits_and_batches_keep_the_ratio_without_deadlock() -> None:
    spi, batch = 4.0, 32
    t = table(capacity=100_000, spi=spi, min_size=100, error_buffer=64.0)
    stop = time.monotonic() + 0.5

    def running() -> bool:
        return time.monotonic() < stop

    # A wedged limiter would surface as WaitTimeoutError; leaving at the end is normal.
    def actor() -> None:
        with contextlib.suppress(WaitAbandonedError):
            while running():
                t.insert([chunk(64)], timeout=1.0, should_continue=running)

    def learner() -> None:
        with contextlib.suppress(WaitAbandonedError):
            while running():
                t.sample(batch, timeout=1.0, should_continue=running)

    threads = [in_thread(actor), in_thread(actor), in_thread(learner)]
    for thread, _ in threads:
        thread.join(3.0)
    errors = [out[0] for _, out in threads if out and isinstance(out[0], Exception)]
    assert errors == []
    stats = t.stats()
    assert stats.sample_batches > 10
    # Samples beyond the min-size stage track spi within the buffer plus one commit.
    excess = stats.inserted - 100
    assert abs(stats.sampled - spi * excess) <= 64.0 + spi * 64 + batch


def test_update_priorities_with_uniform_sampling_is_refused() -> None:
    t = table()
    t.insert([chunk(2)])
    with pytest.raises(PrioritiesNotSupportedError, match="samples uniformly"):
        t.update_priorities(np.array([0, 1], np.int64), np.ones(2, np.float32))


def test_update_priorities_checks_its_arrays() -> None:
    with pytest.raises(ValueError, match="one per key"):
        table().update_priorities(np.array([0, 1], np.int64), np.ones(3, np.float32))


def test_build_table_follows_the_config() -> None:
    cfg = ReplayConfig(capacity=500, min_size_to_sample=7, samples_per_insert=2.0, error_buffer=9)
    stats = build_table(cfg).stats()
    assert (stats.capacity, stats.min_size_to_sample, stats.samples_per_insert) == (500, 7, 2.0)
    assert (stats.error_buffer, stats.store) == (9.0, "memory")
