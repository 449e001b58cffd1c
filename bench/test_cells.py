"""The benchmark matrix as pytest tests: one test per cell, id = Cell.id (see bench/conftest.py)."""

from __future__ import annotations

from bench.pytest_bridge import conclude, feed_benchmark


def test_cell(detbench_cell, detbench_run, detbench_strict, benchmark):
    result = detbench_run.run(detbench_cell)
    feed_benchmark(benchmark, result)
    conclude(result, detbench_strict)
