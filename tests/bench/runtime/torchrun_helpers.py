"""Shared set-up of the multi-process tests: fast policies on the tiny test model, torchrun's error files, and a
no-leftovers check."""

from __future__ import annotations

import json
from pathlib import Path

from detbench.bench.core.options import RoundsPolicy, RunOptions, WarmupPolicy
from detbench.bench.core.schema import Cell
from detbench.envcheck.isolate import is_alive

FAST = dict(model_modules=("tests.bench.tiny_models",), count_flops=False, telemetry_hz=0, cell_timeout_s=60.0,
            warmup=WarmupPolicy(window=2, tolerance=0.5, min_iterations=2, max_iterations=10, max_s=0.5),
            rounds=RoundsPolicy(rounds=2, block_s=0.05, min_block_iterations=3))


def fast_options(**changes: object) -> RunOptions:
    return RunOptions(**{**FAST, **changes})


def tiny(mode: str, gpus: int = 2, batch_size: int = 2, precision: str = "fp32") -> Cell:
    return Cell("tiny_convnet", mode, "eager", precision, batch_size, gpus, (32, 32))


def write_error_file(log_dir: Path, local_rank: int, message: str) -> None:
    """The error file torchrun's ``@record`` writes for a rank that raised (``<log dir>/.../attempt_0/<rank>``)."""
    error_dir = log_dir / "run" / "attempt_0" / str(local_rank)
    error_dir.mkdir(parents=True)
    (error_dir / "error.json").write_text(json.dumps({"message": {"message": message, "extraInfo": {}}}))


def assert_no_rank_left(result) -> None:
    pids = [p for p in result.config["launcher"]["rank_pids"].values() if p]
    assert pids, "the ranks reported no pids"
    assert not [p for p in pids if is_alive(p)], f"rank processes left behind: {pids}"
