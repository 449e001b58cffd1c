"""Fixtures for the reports tests: result files written in the real formats from synthetic CellResults."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reports.generate import make_results, write_benchmark_json, write_journal

SMALL = dict(
    models=["fasterrcnn_resnet50_fpn", "ssdlite320_mobilenet_v3_large"],
    batch_sizes=(1, 8, 64),
    modes=("infer", "train"),
    series_points=12,
    iterations=30,
)


@pytest.fixture
def run_file(tmp_path: Path) -> Callable[..., Path]:
    """``run_file("name.json", **make_results kwargs)`` writes a pytest-benchmark file (``.jsonl``: a journal)."""

    def write(name: str = "run.json", **kwargs: object) -> Path:
        results = make_results(**{**SMALL, **kwargs})
        path = tmp_path / name
        return write_journal(path, results) if name.endswith(".jsonl") else write_benchmark_json(path, results)

    return write
