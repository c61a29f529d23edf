"""Transitional alias package: the benchmarks moved to ``commands.bench``."""
