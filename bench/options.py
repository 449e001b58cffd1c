"""Run-wide options of a benchmark run: one validated, JSON-able dataclass handed to every cell."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bench.timing import MeasurePolicy, WarmupPolicy

ISOLATIONS = ("process", "inline")
OPTIMIZERS = ("sgd", "adamw")
COMPILE_TORCH_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

# Warm-up and timed-region policies per device kind; CPU ones are short so CI stays fast.
GPU_WARMUP = WarmupPolicy(window=5, tolerance=0.02, min_iterations=10, max_iterations=300, max_s=15.0)
GPU_MEASURE = MeasurePolicy(min_iterations=20, min_s=2.0, max_iterations=2000, max_s=20.0)
CPU_WARMUP = WarmupPolicy(window=2, tolerance=0.05, min_iterations=2, max_iterations=30, max_s=1.5)
CPU_MEASURE = MeasurePolicy(min_iterations=5, min_s=0.3, max_iterations=200, max_s=3.0)


@dataclass
class RunOptions:
    """Everything a cell needs besides the Cell itself; recorded in every result's ``config``."""

    profile: str = "smoke"
    seed: int = 0
    weights: dict[str, str] = field(default_factory=dict)  # model name -> local state-dict path
    isolation: str = "inline"
    cell_timeout_s: float = 900.0
    telemetry_hz: float = 50.0
    compile_mode: str = "default"
    optimizer: str = "sgd"
    learning_rate: float = 1e-4  # small: random-init detectors on synthetic targets, many iterations
    momentum: float = 0.9
    cudnn_benchmark: bool = True
    count_flops: bool = True
    warmup: WarmupPolicy | None = None  # None = the device kind's default
    measure: MeasurePolicy | None = None
    model_modules: tuple[str, ...] = ()  # extra modules to import that register models (plugins, tests)

    def __post_init__(self) -> None:
        if self.isolation not in ISOLATIONS:
            raise ValueError(f"unknown isolation {self.isolation!r}; valid: {', '.join(ISOLATIONS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.compile_mode not in COMPILE_TORCH_MODES:
            raise ValueError(f"unknown compile mode {self.compile_mode!r}; valid: {', '.join(COMPILE_TORCH_MODES)}")
        if not self.cell_timeout_s > 0:
            raise ValueError(f"cell timeout must be > 0 seconds, got {self.cell_timeout_s!r}")
        if not self.telemetry_hz >= 0:
            raise ValueError(f"telemetry rate must be >= 0 Hz (0 disables), got {self.telemetry_hz!r}")
        if isinstance(self.warmup, dict):
            self.warmup = WarmupPolicy(**self.warmup)
        if isinstance(self.measure, dict):
            self.measure = MeasurePolicy(**self.measure)
        self.model_modules = tuple(self.model_modules)

    def policies(self, device_type: str) -> tuple[WarmupPolicy, MeasurePolicy]:
        """The warm-up and measure policies in effect on this device kind."""
        on_gpu = device_type == "cuda"
        return (self.warmup or (GPU_WARMUP if on_gpu else CPU_WARMUP),
                self.measure or (GPU_MEASURE if on_gpu else CPU_MEASURE))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunOptions":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def import_model_modules(modules: tuple[str, ...]) -> None:
    """Import plugin modules whose @register_model calls add models (a no-op when already imported)."""
    import importlib  # noqa: PLC0415

    for name in modules:
        importlib.import_module(name)
