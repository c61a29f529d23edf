"""Settings the replay derives rather than being told: error_buffer (Acme's builder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actorq.config import ConfigError, load, read_file
from services.replay.config import ReplayConfig
from services.replay.factory import build_table

ROOT = Path(__file__).resolve().parents[1]


def test_error_buffer_is_min_size_times_ratio_times_tolerance_when_unset() -> None:
    cfg = ReplayConfig(min_size_to_sample=1_000, samples_per_insert=32.0)
    assert cfg.error_buffer is None
    assert cfg.effective_error_buffer == 3_200.0


def test_the_tolerance_scales_the_derived_error_buffer() -> None:
    cfg = ReplayConfig(
        min_size_to_sample=1_000, samples_per_insert=2.0, samples_per_insert_tolerance=0.5
    )
    assert cfg.effective_error_buffer == 1_000.0


def test_an_error_buffer_that_is_set_overrides_the_derived_one() -> None:
    cfg = ReplayConfig(min_size_to_sample=1_000, samples_per_insert=2.0, error_buffer=20_000)
    assert cfg.effective_error_buffer == 20_000.0


def test_the_derived_error_buffer_is_zero_with_the_ratio_off() -> None:
    assert ReplayConfig(samples_per_insert=0.0).effective_error_buffer == 0.0
    assert ReplayConfig(samples_per_insert=-1.0).effective_error_buffer == 0.0


def test_a_derived_error_buffer_that_could_deadlock_names_the_derivation_and_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"derived.*= 16.*samples_per_insert_tolerance"):
        ReplayConfig(min_size_to_sample=5, samples_per_insert=32.0)


@pytest.mark.parametrize("tolerance", [0.0, -0.1, float("nan"), float("inf")])
def test_a_tolerance_that_is_not_a_positive_number_is_refused(tolerance: float) -> None:
    with pytest.raises(ConfigError, match="samples_per_insert_tolerance must be > 0"):
        ReplayConfig(samples_per_insert_tolerance=tolerance)


def test_the_tolerance_is_read_from_flags_like_every_setting() -> None:
    cfg = load(
        ReplayConfig,
        env={},
        flags={"samples_per_insert": "4", "samples_per_insert_tolerance": "0.25"},
    )
    assert cfg.effective_error_buffer == 1_000 * 4 * 0.25


def test_the_table_is_built_with_the_derived_error_buffer() -> None:
    cfg = ReplayConfig(capacity=5_000, min_size_to_sample=500, samples_per_insert=8.0)
    assert build_table(cfg).stats().error_buffer == 400.0


@pytest.mark.parametrize("algo", ["dqn", "d4pg"])
def test_the_embedded_configs_derive_acmes_error_buffer(algo: str) -> None:
    cfg = load(ReplayConfig, section="replay", file=ROOT / f"commands/configs/{algo}.yaml", env={})
    assert cfg.error_buffer is None
    assert cfg.effective_error_buffer == 1_000 * 32 * 0.1


def test_the_paper_scenario_keeps_its_deliberately_wide_error_buffer() -> None:
    scenario = read_file(ROOT / "commands/scenarios/cartpole-dqn-paper.yaml")
    cfg = load(
        ReplayConfig,
        section="replay",
        file=ROOT / "commands/configs/dqn.yaml",
        env={},
        overrides=scenario["config"]["replay"],
    )
    assert (cfg.samples_per_insert, cfg.effective_error_buffer) == (2.0, 20_000.0)
