"""Shared set-up of the multi-process tests: fast policies on the tiny test model, and a no-leftovers check."""

from __future__ import annotations

import pytest

from bench.distributed.launch import is_alive
from bench.options import RoundsPolicy, RunOptions
from bench.schema import Cell
from bench.timing import WarmupPolicy

FAST = dict(model_modules=("tests.bench.tiny_models",), count_flops=False, telemetry_hz=0, cell_timeout_s=60.0,
            warmup=WarmupPolicy(window=2, tolerance=0.5, min_iterations=2, max_iterations=10, max_s=0.5),
            rounds=RoundsPolicy(rounds=2, block_s=0.05, min_block_iterations=3))


def fast_options(**changes: object) -> RunOptions:
    return RunOptions(**{**FAST, **changes})


def tiny(mode: str, gpus: int = 2, batch_size: int = 2, precision: str = "fp32") -> Cell:
    return Cell("tiny_convnet", mode, "eager", precision, batch_size, gpus, (32, 32))


def assert_no_rank_left(result) -> None:
    pids = [p for p in result.config["launcher"]["rank_pids"].values() if p]
    assert pids, "the ranks reported no pids"
    assert not [p for p in pids if is_alive(p)], f"rank processes left behind: {pids}"


@pytest.fixture
def fault(monkeypatch):
    """``fault("tiny_convnet-train", "exit", rank=1)``: a real fault in one rank of the group."""

    def set_fault(cell_substring: str, kind: str, rank: int) -> None:
        monkeypatch.setenv("DETBENCH_TEST_FAULT", f"{cell_substring}:{kind}")
        monkeypatch.setenv("DETBENCH_TEST_FAULT_RANK", str(rank))

    return set_fault
