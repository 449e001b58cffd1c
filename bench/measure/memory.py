"""Peak-memory tracker around the timed region: torch.cuda.max_memory_allocated on GPU; None on CPU."""

from __future__ import annotations

import re
from typing import Any

import torch

_TRIED_TO_ALLOCATE = re.compile(r"Tried to allocate\s+([0-9.]+)\s*(B|KiB|MiB|GiB|TiB)", re.IGNORECASE)
_UNIT = {"b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


class PeakMemoryTracker:
    """``with PeakMemoryTracker(device) as mem: ...`` then ``mem.peak_bytes`` (None on CPU: not measured).

    The peak counter is reset on entry (after warm-up), so the figure covers exactly the timed region,
    including the model's weights, optimizer state and inputs that live on the device.
    """

    method = "torch.cuda.max_memory_allocated"

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes: int | None = None

    def __enter__(self) -> PeakMemoryTracker:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda" and exc[0] is None:
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))

    def describe(self) -> str:
        return self.method if self.device.type == "cuda" else "not measured on CPU"


def requested_bytes(message: str) -> int | None:
    """The allocation an OOM message says failed ("Tried to allocate 2.50 GiB"), in bytes."""
    match = _TRIED_TO_ALLOCATE.search(message)
    if not match:
        return None
    return int(float(match.group(1)) * _UNIT[match.group(2).lower()])


def is_oom(exc: BaseException) -> bool:
    """torch's OutOfMemoryError (any torch >= 2.5 spelling), or a RuntimeError saying 'out of memory'."""
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t is not None)
    if oom_types and isinstance(exc, oom_types):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
