"""What the job needs (the requirement options) and how the preflight runs, validated at construction."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

AMP_DTYPES = ("fp16", "bf16")
MAX_TIMEOUT_S = 86400.0  # a day: beyond any preflight, and far inside what threading's join accepts


@dataclass(frozen=True)
class Options:
    require_gpu: bool = False
    gpus: int | None = None  # at least this many visible GPUs
    require_nccl: bool = False
    min_compute_capability: str | None = None  # "8.0"
    amp: str | None = None  # the AMP dtype the job trains/infers in
    skip: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    timeout_s: float = 120.0  # per check
    quick: bool = False  # skip the speed and NCCL checks (NCCL still runs under --require-nccl)
    results_dir: str = "."

    def __post_init__(self) -> None:
        if self.gpus is not None and self.gpus < 1:
            raise ValueError(f"--gpus must be >= 1, got {self.gpus}")
        if self.amp is not None and self.amp not in AMP_DTYPES:
            raise ValueError(f"--amp must be one of {', '.join(AMP_DTYPES)}, got {self.amp!r}")
        if self.min_compute_capability is not None:
            parse_capability(self.min_compute_capability)
        if not check_timeout(self.timeout_s):
            raise ValueError(f"--timeout must be a number of seconds in (0, {MAX_TIMEOUT_S:g}], got {self.timeout_s}")
        if self.skip and self.only:
            overlap = set(self.skip) & set(self.only)
            if overlap:
                raise ValueError(f"checks both skipped and selected: {', '.join(sorted(overlap))}")

    @property
    def wants_gpu(self) -> bool:
        return bool(self.require_gpu or self.gpus or self.require_nccl or self.min_compute_capability or self.amp)

    def requirements(self) -> dict[str, Any]:
        """The requirement options as given (recorded in the JSON)."""
        data = asdict(self)
        return {k: data[k] for k in ("require_gpu", "gpus", "require_nccl", "min_compute_capability", "amp")}


def check_timeout(seconds: float) -> bool:
    """A per-check limit a thread join can wait for: finite, > 0 and at most a day (nan and inf are not)."""
    return math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT_S


def parse_capability(text: str) -> tuple[int, int]:
    """'8.0' -> (8, 0); '9' -> (9, 0); anything else is a one-line ValueError."""
    major, _, minor = str(text).strip().partition(".")
    if not major.isdigit() or (minor and not minor.isdigit()):
        raise ValueError(f"compute capability must look like 8.0 or 9.0, got {text!r}")
    return int(major), int(minor or 0)
