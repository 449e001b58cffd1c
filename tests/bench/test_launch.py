"""Process isolation with real faults in a real child: segfault, hard exit, hang, OOM; the next cell runs."""

from __future__ import annotations

import time

import pytest

from bench.launch import launch
from bench.options import RunOptions
from bench.schema import Cell
from bench.timing import MeasurePolicy, WarmupPolicy

OPTIONS = dict(model_modules=("tests.bench.tiny_models",), isolation="process", cell_timeout_s=60.0,
               warmup=WarmupPolicy(window=2, tolerance=0.5, min_iterations=2, max_iterations=10, max_s=0.5),
               measure=MeasurePolicy(min_iterations=5, min_s=0.01, max_iterations=20, max_s=0.5),
               count_flops=False)
INFER = Cell("tiny_convnet", "infer", batch_size=2, image_size=(32, 32))
TRAIN = Cell("tiny_convnet", "train", batch_size=2, image_size=(32, 32))


def test_a_process_cell_returns_its_result():
    result = launch(INFER, RunOptions(**OPTIONS))
    assert result.status == "ok", (result.reason, result.config.get("output_tail"))
    assert result.latency.n == len(result.times_ms) >= 5
    assert result.config["isolation"] == "process" and result.config["cell_wall_s"] > 0


@pytest.mark.parametrize(
    "fault, status, words",
    [
        ("segfault", "error", ["SIGSEGV", "signal 11"]),
        ("exit", "error", ["exited with code 3"]),
        ("oom", "oom", ["Tried to allocate 2.50 GiB"]),
    ],
)
def test_a_crashing_cell_is_recorded_and_the_next_cell_runs(monkeypatch, fault, status, words):
    monkeypatch.setenv("DETBENCH_TEST_FAULT", f"tiny_convnet-train:{fault}")
    crashed = launch(TRAIN, RunOptions(**OPTIONS))
    assert crashed.status == status
    for word in words:
        assert word in crashed.reason
    nxt = launch(INFER, RunOptions(**OPTIONS))  # same fault setting, other cell: unaffected
    assert nxt.status == "ok", nxt.reason


def test_a_hanging_cell_is_killed_at_the_timeout(monkeypatch):
    monkeypatch.setenv("DETBENCH_TEST_FAULT", "tiny_convnet-train:hang")
    began = time.monotonic()
    result = launch(TRAIN, RunOptions(**{**OPTIONS, "cell_timeout_s": 8.0}))
    assert result.status == "timeout" and "8 s" in result.reason
    assert time.monotonic() - began < 30
