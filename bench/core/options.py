"""Run-wide options of a benchmark run: one validated, JSON-able dataclass handed to every cell."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from bench.measure.timing import WarmupPolicy

ISOLATIONS = ("model", "cell", "inline")  # a worker per model group, a process per cell, this process
ISOLATION_ALIASES = {"process": "cell"}  # the name version 1 used for one process per cell
MAX_TELEMETRY_HZ = 1000.0
MAX_REPEATS = 100  # each repeat re-runs the whole matrix; more is a typo, not a plan
OPTIMIZERS = ("sgd", "adamw")

# Warm-up policies per device kind; CPU ones are short so CI stays fast.
GPU_WARMUP = WarmupPolicy(window=5, tolerance=0.02, min_iterations=10, max_iterations=300, max_s=15.0)
CPU_WARMUP = WarmupPolicy(window=2, tolerance=0.05, min_iterations=2, max_iterations=30, max_s=1.5)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class RoundsPolicy:
    """How a group's variants are timed: ``rounds`` rounds, one block of ~``block_s`` seconds (at least
    ``min_block_iterations`` iterations) per variant and round, the visiting order rotated every round."""

    rounds: int = 4
    block_s: float = 0.5
    min_block_iterations: int = 3

    def __post_init__(self) -> None:
        if not _is_int(self.rounds) or self.rounds < 1:
            raise ValueError(f"rounds must be a positive integer, got {self.rounds!r}")
        if not (isinstance(self.block_s, (int, float)) and math.isfinite(self.block_s) and 0 < self.block_s <= 600):
            raise ValueError(f"block seconds must be within (0, 600], got {self.block_s!r}")
        if not _is_int(self.min_block_iterations) or self.min_block_iterations < 1:
            raise ValueError(f"min_block_iterations must be a positive integer, got {self.min_block_iterations!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# GPU: 4 rounds x 0.5 s blocks keeps the quick profile inside 10 minutes (docs/bench.md has the estimate);
# CPU: short blocks so CI stays fast on 2 cores.
GPU_ROUNDS = RoundsPolicy(rounds=4, block_s=0.5, min_block_iterations=3)
CPU_ROUNDS = RoundsPolicy(rounds=3, block_s=0.1, min_block_iterations=2)



@dataclass
class RunOptions:
    """Everything a cell needs besides the Cell itself; recorded in every result's ``config``."""

    profile: str = "smoke"
    seed: int = 0
    weights: dict[str, str] = field(default_factory=dict)  # model name -> local state-dict path
    isolation: str = "inline"
    cell_timeout_s: float = 900.0  # a worker that makes no progress (no set-up step, no block) this long is killed
    telemetry_hz: float = 50.0
    optimizer: str = "sgd"
    learning_rate: float = 1e-4  # small: random-init detectors on synthetic targets, many iterations
    momentum: float = 0.9
    cudnn_benchmark: bool = True  # torch.backends.cudnn.benchmark for every cell (--cudnn-benchmark on|off)
    count_flops: bool = True
    warmup: WarmupPolicy | None = None  # None = the device kind's default
    model_modules: tuple[str, ...] = ()  # extra modules to import that register models (plugins, tests)
    rounds: RoundsPolicy | None = None  # None = the device kind's default
    repeats: int = 1  # separate measurements of every cell at different moments of the run (bench.runtime.run)

    def __post_init__(self) -> None:
        self.isolation = ISOLATION_ALIASES.get(self.isolation, self.isolation)
        if self.isolation not in ISOLATIONS:
            raise ValueError(f"unknown isolation {self.isolation!r}; valid: {', '.join(ISOLATIONS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if not (math.isfinite(self.cell_timeout_s) and self.cell_timeout_s > 0):
            raise ValueError(f"cell timeout must be a finite number of seconds > 0, got {self.cell_timeout_s!r}")
        if not (math.isfinite(self.telemetry_hz) and 0 <= self.telemetry_hz <= MAX_TELEMETRY_HZ):
            raise ValueError(f"telemetry rate must be within 0..{MAX_TELEMETRY_HZ:g} Hz (0 disables), "
                             f"got {self.telemetry_hz!r}")
        if not isinstance(self.cudnn_benchmark, bool):
            raise ValueError(f"cudnn_benchmark must be true or false, got {self.cudnn_benchmark!r}")
        if not _is_int(self.repeats) or not 1 <= self.repeats <= MAX_REPEATS:
            raise ValueError(f"repeats must be an integer within 1..{MAX_REPEATS}, got {self.repeats!r}")
        if isinstance(self.warmup, dict):
            self.warmup = WarmupPolicy(**self.warmup)
        if isinstance(self.rounds, dict):
            self.rounds = RoundsPolicy(**self.rounds)
        self.model_modules = tuple(self.model_modules)

    def warmup_policy(self, device_type: str) -> WarmupPolicy:
        """The warm-up policy in effect on this device kind."""
        return self.warmup or (GPU_WARMUP if device_type == "cuda" else CPU_WARMUP)

    def rounds_policy(self, device_type: str) -> RoundsPolicy:
        """The interleaved-rounds policy in effect on this device kind."""
        return self.rounds or (GPU_ROUNDS if device_type == "cuda" else CPU_ROUNDS)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def import_model_modules(modules: tuple[str, ...]) -> None:
    """Import plugin modules whose @register_model calls add models (a no-op when already imported)."""
    import importlib  # noqa: PLC0415

    for name in modules:
        importlib.import_module(name)
