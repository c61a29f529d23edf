"""`actorq bench ...`: benchmarks that measure the claim on this machine.

- ``actorq bench --scenario NAME``: end-to-end fp32 vs int8 training runs (scenario.py)
- ``actorq bench actor``: actor inference/step micro-benchmark (actor.py)
- ``actorq bench replay``: replay insert/sample throughput (replay.py)
"""
