"""n-step transitions: returns, discounts and what happens at both kinds of episode end.

Expected values are written out by hand: obs are tagged by step (obs_t = [t]),
rewards are 1, 2, 4, 8, ... so every sum shows which steps it covers.
"""

from __future__ import annotations

import numpy as np
import pytest

from services.actor.nstep import NStepBuilder, Transition

G = 0.9


def obs(t: int) -> np.ndarray:
    return np.array([float(t)], np.float32)


def run(builder: NStepBuilder, rewards: list[float], end: str = "") -> list[Transition]:
    """Feed steps 0..len-1 (action = step index); the last one ends the episode as `end`."""
    out: list[Transition] = []
    for t, r in enumerate(rewards):
        last = t == len(rewards) - 1
        out += builder.add(
            obs(t),
            t,
            r,
            terminated=last and end == "terminated",
            truncated=last and end == "truncated",
            next_obs=obs(t + 1),
        )
    return out


def assert_rows(transitions: list[Transition], expected: list[tuple[float, ...]]) -> None:
    """Rows of (obs tag, action, reward, discount, next_obs tag), compared to 1e-6."""
    rows = [
        (float(tr.obs[0]), tr.action, tr.reward, tr.discount, float(tr.next_obs[0]))
        for tr in transitions
    ]
    assert len(rows) == len(expected), rows
    np.testing.assert_allclose(np.array(rows, float), np.array(expected, float), rtol=1e-6)


def test_three_step_windows_mid_episode() -> None:
    out = run(NStepBuilder(3, G), [1, 2, 4, 8, 16])
    assert_rows(
        out,
        [
            (0, 0, 1 + G * 2 + G**2 * 4, G**3, 3),
            (1, 1, 2 + G * 4 + G**2 * 8, G**3, 4),
            (2, 2, 4 + G * 8 + G**2 * 16, G**3, 5),
        ],
    )


def test_no_transition_before_the_window_is_full() -> None:
    builder = NStepBuilder(3, G)
    assert run(builder, [1, 2]) == []
    assert len(builder) == 2


def test_termination_flushes_partial_windows_with_zero_discount() -> None:
    out = run(NStepBuilder(3, G), [1, 2, 4, 8], end="terminated")
    assert_rows(
        out,
        [
            (0, 0, 1 + G * 2 + G**2 * 4, G**3, 3),
            (1, 1, 2 + G * 4 + G**2 * 8, 0.0, 4),
            (2, 2, 4 + G * 8, 0.0, 4),
            (3, 3, 8, 0.0, 4),
        ],
    )


def test_truncation_flushes_partial_windows_bootstrapping_with_gamma_to_the_k() -> None:
    out = run(NStepBuilder(3, G), [1, 2, 4, 8], end="truncated")
    assert_rows(
        out,
        [
            (0, 0, 1 + G * 2 + G**2 * 4, G**3, 3),
            (1, 1, 2 + G * 4 + G**2 * 8, G**3, 4),
            (2, 2, 4 + G * 8, G**2, 4),
            (3, 3, 8, G, 4),
        ],
    )


def test_episode_shorter_than_n_that_terminates() -> None:
    out = run(NStepBuilder(3, G), [1, 2], end="terminated")
    assert_rows(out, [(0, 0, 1 + G * 2, 0.0, 2), (1, 1, 2, 0.0, 2)])


def test_one_step_transitions_are_plain_td_tuples() -> None:
    out = run(NStepBuilder(1, G), [1, 2, 4])
    assert_rows(out, [(0, 0, 1, G, 1), (1, 1, 2, G, 2), (2, 2, 4, G, 3)])


def test_one_step_at_termination_and_truncation() -> None:
    terminated = run(NStepBuilder(1, G), [1, 2], end="terminated")
    truncated = run(NStepBuilder(1, G), [1, 2], end="truncated")
    assert_rows(terminated, [(0, 0, 1, G, 1), (1, 1, 2, 0.0, 2)])
    assert_rows(truncated, [(0, 0, 1, G, 1), (1, 1, 2, G, 2)])


def test_next_episode_starts_with_empty_windows() -> None:
    builder = NStepBuilder(3, G)
    run(builder, [1, 2], end="terminated")
    assert len(builder) == 0
    out = run(builder, [1, 1, 1, 1])
    assert [tr.action for tr in out] == [0, 1]


def test_explicit_flush_bootstraps_open_windows() -> None:
    builder = NStepBuilder(3, G)
    run(builder, [1, 2])
    out = builder.flush(obs(2), terminated=False)
    assert_rows(out, [(0, 0, 1 + G * 2, G**2, 2), (1, 1, 2, G, 2)])


def test_every_step_starts_exactly_one_transition() -> None:
    builder = NStepBuilder(3, G)
    out = run(builder, [1.0] * 10, end="truncated") + run(builder, [1.0] * 7, end="terminated")
    assert [tr.action for tr in out] == [*range(10), *range(7)]


@pytest.mark.parametrize(("n", "gamma"), [(0, 0.9), (3, 0.0), (3, 1.5)])
def test_bad_settings_are_refused(n: int, gamma: float) -> None:
    with pytest.raises(ValueError, match="n must|gamma must"):
        NStepBuilder(n, gamma)
