"""Prioritized replay (proportional PER) has the same semantics in both stores.

The sum tree and sampler are tested on their own, then every table-level
behaviour runs against the memory table and against a table in a real
redis-server, which must also draw the very same keys from the same seed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from redis_server import RedisServer

from services.replay.config import ReplayConfig
from services.replay.errors import WaitTimeoutError
from services.replay.factory import build_table
from services.replay.sampler import PrioritizedSampler, SumTree, importance_weights
from services.replay.table import Table

MakeTable = Callable[..., Table]


def chunk(n: int, start: float = 0.0) -> dict[str, np.ndarray]:
    """n CartPole-like transitions; obs[:, 0] counts up from start."""
    obs = np.zeros((n, 4), np.float32)
    obs[:, 0] = start + np.arange(n, dtype=np.float32)
    return {
        "obs": obs,
        "action": np.arange(n, dtype=np.int64) % 2,
        "reward": np.ones(n, np.float32),
        "discount": np.full(n, 0.99, np.float32),
        "next_obs": obs + 1,
    }


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with RedisServer.start(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


def _factory(store: str) -> Iterator[MakeTable]:
    made: list[Table] = []

    def make(**overrides: object) -> Table:
        settings: dict[str, object] = {
            "capacity": 64,
            "min_size_to_sample": 1,
            "sampler": "prioritized",
            "seed": 0,
            "store": store,
            "table": uuid.uuid4().hex[:12],  # a fresh table in the shared Redis
            **overrides,
        }
        table = build_table(ReplayConfig(**settings))  # type: ignore[arg-type]
        made.append(table)
        return table

    yield make
    for table in made:
        table.close()


@pytest.fixture(params=["memory", "redis"])
def make_table(request: pytest.FixtureRequest, redis_url: str) -> Iterator[MakeTable]:
    """Builds prioritized tables (capacity 64 unless overridden) in the store of the param."""
    yield from _factory("memory" if request.param == "memory" else redis_url)


# -- the sum tree and the sampler on their own ------------------------------------------------


def test_sum_tree_keeps_every_node_the_sum_of_its_children() -> None:
    tree = SumTree(capacity=5)  # 8 leaves
    tree.set(np.array([0, 3, 4]), np.array([1.0, 2.0, 4.0]))
    tree.set(np.array([3]), np.array([0.5]))
    assert tree.total == 5.5
    internal = np.arange(1, tree.num_leaves)
    np.testing.assert_array_equal(
        tree.nodes[internal], tree.nodes[2 * internal] + tree.nodes[2 * internal + 1]
    )


def test_sum_tree_finds_the_leaf_whose_interval_holds_the_target() -> None:
    tree = SumTree(capacity=4)
    tree.set(np.arange(4), np.array([1.0, 0.0, 2.0, 1.0]))  # intervals [0,1) [1,1) [1,3) [3,4)
    found = tree.find(np.array([0.0, 0.99, 1.0, 2.99, 3.0, 3.999]))
    np.testing.assert_array_equal(found, [0, 0, 2, 2, 3, 3])


def test_sum_tree_never_returns_a_zero_leaf_even_at_the_total() -> None:
    tree = SumTree(capacity=4)
    tree.set(np.arange(4), np.array([1.0, 2.0, 0.0, 0.0]))
    assert tree.find(np.array([3.0, 1e9])).tolist() == [1, 1]


def test_setting_a_run_of_slots_gives_the_same_tree_as_setting_them_one_by_one() -> None:
    by_run, by_set = SumTree(capacity=13), SumTree(capacity=13)
    rng = np.random.default_rng(0)
    by_run.load(rng.random(13))
    by_set.load(by_run.leaves(np.arange(13)))
    by_run.set_run(10, 6, 2.5)  # slots 10, 11, 12, 0, 1, 2
    by_set.set(np.array([10, 11, 12, 0, 1, 2]), np.full(6, 2.5))
    np.testing.assert_array_equal(by_run.nodes, by_set.nodes)


def test_importance_weights_are_normalised_by_the_largest_in_the_batch() -> None:
    leaves = np.array([1.0, 2.0, 4.0])
    weights = importance_weights(leaves, total=8.0, size=4, beta=0.5)
    expected = (4 * leaves / 8.0) ** -0.5
    np.testing.assert_allclose(weights, expected / expected.max(), rtol=1e-6)
    assert weights.dtype == np.float32 and weights.max() == 1.0


def test_new_items_get_the_largest_priority_seen_so_far() -> None:
    sampler = PrioritizedSampler(capacity=8, priority_exponent=1.0)
    sampler.on_insert(0, 2)
    sampler.update_priorities(np.array([0, 1]), np.array([5.0, 0.5], np.float32))
    sampler.on_insert(2, 1)
    assert sampler.tree.leaves(np.array([0, 1, 2])).tolist() == [5.0, 0.5, 5.0]


# -- table-level semantics, memory and Redis ----------------------------------------------------


def _chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = counts.sum() * probs
    return float(((counts - expected) ** 2 / expected).sum())


def test_sampled_frequencies_follow_priorities_to_the_exponent(make_table: MakeTable) -> None:
    table = make_table(capacity=8, priority_exponent=0.5)
    table.insert([chunk(8)])
    priorities = np.arange(1, 9, dtype=np.float32)
    assert table.update_priorities(np.arange(8, dtype=np.int64), priorities) == 8
    keys = np.concatenate([table.sample(256).keys for _ in range(100)])
    counts = np.bincount(keys, minlength=8)
    probs = priorities**0.5 / (priorities**0.5).sum()
    # 7 degrees of freedom: 24.3 is exceeded by chance once in 1000 runs.
    assert _chi_square(counts, probs) < 24.3, (counts, probs * counts.sum())


def test_importance_weights_undo_the_sampling_bias(make_table: MakeTable) -> None:
    table = make_table(capacity=4, priority_exponent=1.0, importance_exponent=1.0)
    table.insert([chunk(4)])
    table.update_priorities(np.arange(4, dtype=np.int64), np.array([1, 1, 2, 4], np.float32))
    batch = table.sample(64)
    # beta = 1: weight = 1 / (N P(i)), scaled so the rarest item sampled weighs 1.
    probs = np.array([1, 1, 2, 4])[batch.keys] / 8
    expected = 1 / (4 * probs)
    np.testing.assert_allclose(batch.weights, expected / expected.max(), rtol=1e-6)


def test_rows_come_back_with_their_keys(make_table: MakeTable) -> None:
    table = make_table(capacity=16)
    for i in range(3):
        table.insert([chunk(8, start=8 * i)])  # keys 8..23 live, the first 8 evicted
    batch = table.sample(200)
    assert batch.keys.min() >= 8 and batch.keys.max() < 24
    np.testing.assert_array_equal(batch.columns["obs"][:, 0], batch.keys)
    np.testing.assert_array_equal(batch.columns["next_obs"], batch.columns["obs"] + 1)


def test_a_zero_priority_item_is_never_sampled(make_table: MakeTable) -> None:
    table = make_table(capacity=8)
    table.insert([chunk(8)])
    table.update_priorities(np.array([3, 5], np.int64), np.zeros(2, np.float32))
    keys = np.concatenate([table.sample(256).keys for _ in range(8)])
    assert not np.isin(keys, [3, 5]).any()


def test_all_priorities_zero_falls_back_to_uniform(make_table: MakeTable) -> None:
    table = make_table(capacity=4)
    table.insert([chunk(4)])
    table.update_priorities(np.arange(4, dtype=np.int64), np.zeros(4, np.float32))
    batch = table.sample(400)
    assert set(batch.keys.tolist()) == {0, 1, 2, 3} and (batch.weights == 1).all()


def test_updates_for_evicted_or_unknown_keys_are_skipped(make_table: MakeTable) -> None:
    table = make_table(capacity=8)
    table.insert([chunk(8)])
    table.insert([chunk(4)])  # keys 0..3 evicted
    keys = np.array([1, 5, 11, 12, 99], np.int64)
    assert table.update_priorities(keys, np.ones(5, np.float32)) == 2


def test_a_key_given_twice_takes_its_last_priority(make_table: MakeTable) -> None:
    table = make_table(capacity=2, priority_exponent=1.0)
    table.insert([chunk(2)])
    keys = np.array([0, 1, 0], np.int64)
    assert table.update_priorities(keys, np.array([0, 1, 5], np.float32)) == 2
    counts = np.bincount(table.sample(600).keys, minlength=2)
    assert counts[0] > 3 * counts[1]  # 5 : 1, not 0 : 1


def test_a_new_item_outranks_a_low_priority_one(make_table: MakeTable) -> None:
    table = make_table(capacity=8, priority_exponent=1.0)
    table.insert([chunk(1)])
    table.update_priorities(np.array([0], np.int64), np.array([0.01], np.float32))
    table.insert([chunk(1)])  # gets max priority 1.0 (the initial maximum)
    counts = np.bincount(table.sample(500).keys, minlength=2)
    assert counts[1] > 20 * counts[0]


def test_both_stores_draw_the_same_keys_and_weights_from_one_seed(redis_url: str) -> None:
    draws = []
    for store in ("memory", redis_url):
        for make in _factory(store):
            table = make(capacity=100, seed=7)
            for i in range(5):
                table.insert([chunk(30, start=30 * i)])  # wraps the ring, evicts 50
            keys = np.arange(50, 150, dtype=np.int64)
            prios = np.random.default_rng(1).random(100).astype(np.float32) * 3
            table.update_priorities(keys[::3], prios[::3])
            batches = [table.sample(64) for _ in range(3)]
            draws.append((np.concatenate([b.keys for b in batches]), [b.weights for b in batches]))
    (mem_keys, mem_w), (redis_keys, redis_w) = draws
    np.testing.assert_array_equal(mem_keys, redis_keys)
    for a, b in zip(mem_w, redis_w, strict=True):
        np.testing.assert_array_equal(a, b)


def test_redis_uniform_batches_hold_live_keys_and_their_rows_whether_or_not_inserts_moved(
    redis_url: str,
) -> None:
    # Redis draws uniform keys in the replica for the live range it last saw (rows read
    # by an HMGET after the script); a batch after inserts moved the range is drawn in
    # the script instead. Both must give live keys with their own rows.
    for make in _factory(redis_url):
        table = make(capacity=100, seed=3, sampler="uniform")
        for i in range(5):
            table.insert([chunk(30, start=30 * i)])  # wraps the ring from the 4th on
            end = 30 * (i + 1)
            for batch in (table.sample(32), table.sample(32)):  # moved, then not
                assert batch.keys.min() >= max(0, end - 100) and batch.keys.max() < end
                # obs[:, 0] counts the keys up: every row is the one its key names.
                np.testing.assert_array_equal(
                    batch.columns["obs"][:, 0], batch.keys.astype(np.float32)
                )
                np.testing.assert_array_equal(batch.columns["next_obs"], batch.columns["obs"] + 1)


def test_uniform_sampling_refuses_priority_updates_in_both_stores(make_table: MakeTable) -> None:
    table = make_table(sampler="uniform")
    table.insert([chunk(2)])
    with pytest.raises(RuntimeError, match="--sampler prioritized"):
        table.update_priorities(np.array([0], np.int64), np.ones(1, np.float32))


@pytest.mark.parametrize("sampler", ["uniform", "prioritized"])
def test_several_batches_in_one_call_are_the_batches_of_as_many_calls(
    make_table: MakeTable, sampler: str
) -> None:
    # sample_many (what a prefetching Sample stream uses: one Redis round trip for
    # several batches) draws what that many sample calls in a row would.
    draws = []
    for many in (False, True):
        table = make_table(capacity=100, seed=11, sampler=sampler)
        for i in range(4):
            table.insert([chunk(30, start=30 * i)])
        if sampler == "prioritized":
            keys = np.arange(20, 120, 7, dtype=np.int64)
            table.update_priorities(keys, np.linspace(0.1, 4, keys.size).astype(np.float32))
        batches = table.sample_many(40, 3) if many else [table.sample(40) for _ in range(3)]
        assert [len(b.keys) for b in batches] == [40, 40, 40]
        for b in batches:
            np.testing.assert_array_equal(b.columns["obs"][:, 0], b.keys.astype(np.float32))
        draws.append(batches)
        stats = table.stats()
        assert (stats.sampled, stats.sample_batches) == (120, 3)
    for one, many in zip(*draws, strict=True):
        np.testing.assert_array_equal(one.keys, many.keys)
        np.testing.assert_array_equal(one.weights, many.weights)
        for name in one.columns:
            np.testing.assert_array_equal(one.columns[name], many.columns[name])


def test_several_batches_in_one_call_stop_where_the_rate_limiter_does(
    make_table: MakeTable,
) -> None:
    # 1 sample per insert, min size 10, error buffer 20: after 100 inserts, samples
    # may reach 110, so of five batches of 30 three are served, then none.
    table = make_table(
        capacity=200, samples_per_insert=1.0, min_size_to_sample=10, error_buffer=20.0
    )
    table.insert([chunk(100)])
    assert len(table.sample_many(30, 5)) == 3
    stats = table.stats()
    assert (stats.sampled, stats.sample_batches) == (90, 3)
    with pytest.raises(WaitTimeoutError):
        table.sample_many(30, 5, timeout=0.3)
    assert table.stats().sampled == 90
    with pytest.raises(ValueError, match="count must be at least 1"):
        table.sample_many(30, 0)
