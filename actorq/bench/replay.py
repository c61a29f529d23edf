"""Transitional alias of ``commands.bench.replay``, for tests/test_replay_bench.py;
delete this package once that test imports ``commands.bench.replay``."""

from commands.bench.replay import Row, _parse, _phases, format_table, medians, memory_ratios

__all__ = ["Row", "_parse", "_phases", "format_table", "medians", "memory_ratios"]
