"""The benchmark matrix as pytest tests: one test per cell, id = Cell.id (see bench/plugin/plugin.py)."""

from __future__ import annotations

from detbench.bench.plugin.bridge import conclude, feed_benchmark


def test_cell(detbench_cell, detbench_run, detbench_strict, benchmark):
    result = detbench_run.run(detbench_cell)
    feed_benchmark(benchmark, result, detbench_run.options.to_dict(), detbench_run.environment)
    conclude(result, detbench_strict)
