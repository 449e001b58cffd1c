"""Run-wide options: :class:`RunOptions` (what travels to every worker and is recorded once per run) and the
warm-up and timing policies, with their defaults per device kind. The command-line table that fills them is
detbench.bench.core.config."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ISOLATIONS = ("model", "cell", "inline")  # a worker per model group, a process per cell, this process
ISOLATION_ALIASES = {"process": "cell"}  # the name version 1 used for one process per cell
MAX_TELEMETRY_HZ = 1000.0
MAX_REPEATS = 100  # each repeat re-runs the whole matrix; more is a typo, not a plan
OPTIMIZERS = ("sgd", "adamw")
CELL_TIMEOUT_S = 600.0  # a worker that sends no event (a set-up step, a block) this long is killed
MAX_SEED = 2**64 - 1  # torch.manual_seed's range: a larger seed fails every cell at set-up


class OptionError(ValueError):
    """A bad option value; the message is one line naming the valid choices."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- policies: how long to warm up and how to time ----------------------------------------------------------


@dataclass(frozen=True)
class WarmupPolicy:
    """Run until the median of the last ``window`` iterations moves less than ``tolerance`` (relative)
    from the median of the window before it; at least ``min_iterations``, stop at either cap."""

    window: int = 5
    tolerance: float = 0.02
    min_iterations: int = 10
    max_iterations: int = 300
    max_s: float = 60.0

    def __post_init__(self) -> None:
        if self.window < 1 or self.min_iterations < 0 or self.max_iterations < 1 or self.max_s <= 0:
            raise OptionError(f"bad warm-up policy {self}")
        if not 0 < self.tolerance < 1:
            raise OptionError(f"warm-up tolerance must be within (0, 1), got {self.tolerance}")


@dataclass(frozen=True)
class MeasurePolicy:
    """The timed region: at least ``min_iterations`` and ``min_s`` seconds, at most the caps."""

    min_iterations: int = 20
    min_s: float = 2.0
    max_iterations: int = 2000
    max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.min_iterations < 1 or self.max_iterations < self.min_iterations or self.min_s < 0:
            raise OptionError(f"bad measure policy {self}")
        if self.max_s < self.min_s:
            raise OptionError(f"measure max_s {self.max_s} is below min_s {self.min_s}")


@dataclass(frozen=True)
class RoundsPolicy:
    """How a group's variants are timed: ``rounds`` rounds, one block of ~``block_s`` seconds (at least
    ``min_block_iterations`` iterations) per variant and round, the visiting order rotated every round."""

    rounds: int = 4
    block_s: float = 0.5
    min_block_iterations: int = 3

    def __post_init__(self) -> None:
        if not _is_int(self.rounds) or self.rounds < 1:
            raise OptionError(f"rounds must be a positive integer, got {self.rounds!r}")
        if not (isinstance(self.block_s, (int, float)) and math.isfinite(self.block_s) and 0 < self.block_s <= 600):
            raise OptionError(f"block seconds must be within (0, 600], got {self.block_s!r}")
        if not _is_int(self.min_block_iterations) or self.min_block_iterations < 1:
            raise OptionError(f"min_block_iterations must be a positive integer, got {self.min_block_iterations!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Per device kind. GPU: 4 rounds x 0.5 s blocks keeps the quick profile near its time budget (docs/bench.md);
# CPU: short blocks and warm-ups so CI stays fast on 2 cores.
GPU_ROUNDS = RoundsPolicy(rounds=4, block_s=0.5, min_block_iterations=3)
CPU_ROUNDS = RoundsPolicy(rounds=3, block_s=0.1, min_block_iterations=2)
GPU_WARMUP = WarmupPolicy(window=5, tolerance=0.02, min_iterations=10, max_iterations=300, max_s=15.0)
CPU_WARMUP = WarmupPolicy(window=2, tolerance=0.05, min_iterations=2, max_iterations=30, max_s=1.5)


@dataclass
class RunOptions:
    """Everything a cell needs besides the Cell itself; recorded once per run."""

    profile: str = "smoke"
    seed: int = 0
    weights: dict[str, str] = field(default_factory=dict)  # model name -> local state-dict path
    isolation: str = "inline"
    cell_timeout_s: float = CELL_TIMEOUT_S
    telemetry_hz: float = 50.0
    optimizer: str = "sgd"
    learning_rate: float = 1e-4  # small: random-init detectors on synthetic targets, many iterations
    momentum: float = 0.9
    cudnn_benchmark: bool = True  # torch.backends.cudnn.benchmark for every cell (--cudnn-benchmark on|off)
    count_flops: bool = True
    warmup: WarmupPolicy | None = None  # None = the device kind's default
    model_modules: tuple[str, ...] = ()  # extra modules to import that register models (plugins, tests)
    rounds: RoundsPolicy | None = None  # a whole policy; None = the device kind's default, with the two below
    rounds_count: int | None = None  # --rounds alone: the device's block length stays
    block_s: float | None = None  # --block-s alone: the device's round count stays
    repeats: int = 1  # separate measurements of every cell at different moments of the run (detbench.bench.runtime.run)

    def __post_init__(self) -> None:
        self.isolation = ISOLATION_ALIASES.get(self.isolation, self.isolation)
        _choice("isolation", self.isolation, ISOLATIONS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        if not (isinstance(self.cell_timeout_s, (int, float)) and math.isfinite(self.cell_timeout_s)
                and self.cell_timeout_s > 0):
            raise OptionError(f"cell timeout must be a finite number of seconds > 0, got {self.cell_timeout_s!r}")
        if not (math.isfinite(self.telemetry_hz) and 0 <= self.telemetry_hz <= MAX_TELEMETRY_HZ):
            raise OptionError(f"telemetry rate must be within 0..{MAX_TELEMETRY_HZ:g} Hz (0 disables), "
                              f"got {self.telemetry_hz!r}")
        if not isinstance(self.cudnn_benchmark, bool):
            raise OptionError(f"cudnn_benchmark must be true or false, got {self.cudnn_benchmark!r}")
        if not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise OptionError(f"seed must be an integer within 0..{MAX_SEED} (2**64-1, torch's seed range), "
                              f"got {self.seed!r}")
        if not _is_int(self.repeats) or not 1 <= self.repeats <= MAX_REPEATS:
            raise OptionError(f"repeats must be an integer within 1..{MAX_REPEATS}, got {self.repeats!r}")
        if isinstance(self.warmup, dict):
            self.warmup = WarmupPolicy(**self.warmup)
        if isinstance(self.rounds, dict):
            self.rounds = RoundsPolicy(**self.rounds)
        if self.rounds_count is not None or self.block_s is not None:  # validated as a policy would be
            RoundsPolicy(rounds=1 if self.rounds_count is None else self.rounds_count,
                         block_s=1.0 if self.block_s is None else self.block_s)
        self.model_modules = tuple(self.model_modules)

    def warmup_policy(self, device_type: str) -> WarmupPolicy:
        """The warm-up policy in effect on this device kind."""
        return self.warmup or (GPU_WARMUP if device_type == "cuda" else CPU_WARMUP)

    def rounds_policy(self, device_type: str) -> RoundsPolicy:
        """The interleaved-rounds policy in effect on this device kind: the device's default, with what the user
        set (--rounds, --block-s) replacing only its own part."""
        if self.rounds is not None:
            return self.rounds
        default = GPU_ROUNDS if device_type == "cuda" else CPU_ROUNDS
        return dataclasses.replace(default, rounds=default.rounds if self.rounds_count is None else self.rounds_count,
                                   block_s=default.block_s if self.block_s is None else self.block_s)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def import_model_modules(modules: tuple[str, ...]) -> None:
    """Import plugin modules whose @register_model calls add models (a no-op when already imported)."""
    import importlib  # noqa: PLC0415

    for name in modules:
        importlib.import_module(name)


def _choice(kind: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise OptionError(f"unknown {kind} {value!r}; valid: {', '.join(valid)}")
