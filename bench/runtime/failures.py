"""The one failure classifier: how every launcher and study turns an exception into a cell's result."""

from __future__ import annotations

import re
import traceback

import torch

from detbench.bench.core.schema import Cell, CellResult, DeployInfo, Failure
from detbench.bench.measure import memory
from detbench.bench.models import MissingExtraError
from detbench.bench.runtime.deploy.base import NotSupportedError
from detbench.bench.runtime.device import device_name

TAIL_CHARS = 4000
# errors after which the CUDA context is unusable: the worker must end (a fresh one takes the rest)
STICKY_CUDA_WORDS = ("illegal memory access", "device-side assert", "unspecified launch failure",
                     "cuda error: misaligned address", "an illegal instruction", "uncorrectable ecc")
# the host out of memory: torch's CPU allocator ("DefaultCPUAllocator: can't allocate memory: you tried to allocate
# 524288000 bytes. Error code 12 (Cannot allocate memory)") and the C library's ENOMEM
CPU_OOM_WORDS = ("can't allocate memory", "cannot allocate memory")
_CPU_REQUESTED = re.compile(r"tried to allocate (\d+) bytes", re.IGNORECASE)


class WorkerMustEnd(RuntimeError):  # noqa: N818 - names what the worker must do
    """A failure that leaves this process unusable (sticky CUDA error): the rest goes to a fresh worker."""


class HostMemoryError(MemoryError):
    """A cell refused before it allocates: its input alone would not fit in the host's available memory."""

    def __init__(self, message: str, requested_bytes: int) -> None:
        super().__init__(message)
        self.requested_bytes = requested_bytes


class NotApplicableError(RuntimeError):
    """A cell whose configuration does not apply to its model (channels_last without convolutions): skipped."""


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] if text else type(exc).__name__


def is_sticky_cuda_error(exc: BaseException) -> bool:
    """An error that leaves the CUDA context unusable (the process must end)."""
    accelerator = getattr(torch, "AcceleratorError", None)
    if accelerator is not None and isinstance(exc, accelerator):
        return True
    text = str(exc).lower()
    return any(word in text for word in STICKY_CUDA_WORDS)


def is_out_of_memory(exc: BaseException) -> bool:
    """A GPU's OOM (detbench.bench.measure.memory.is_oom) or the host's: MemoryError, or torch's CPU allocator
    failing."""
    if memory.is_oom(exc) or isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(word in str(exc).lower() for word in CPU_OOM_WORDS)


def requested_bytes(exc: BaseException) -> int | None:
    """The allocation that failed, in bytes, when the error says (GPU and CPU spellings)."""
    found = getattr(exc, "requested_bytes", None)
    if isinstance(found, int):
        return found
    match = _CPU_REQUESTED.search(str(exc))
    return int(match.group(1)) if match else memory.requested_bytes(str(exc))


def classify_failure(cell: Cell, exc: BaseException, device: torch.device | str | None, *,
                     phase: str = "set-up") -> CellResult:
    """The one failure classifier: OOM (GPU or host) -> ``oom``, a missing optional dependency -> ``skipped``, a
    deployment runtime that cannot take the model -> ``not-supported``, anything else -> ``error`` with the traceback
    tail. (``timeout`` comes from the launcher, which kills hangs.)"""
    name = device_name(device) if isinstance(device, torch.device) else device
    if isinstance(exc, (MissingExtraError, NotApplicableError)):
        return CellResult(cell, status="skipped", reason=str(exc), device=name)
    if isinstance(exc, NotSupportedError):  # a deployment runtime cannot take this model: a result, not a failure
        return CellResult(cell, status="not-supported", reason=str(exc), device=name,
                          deploy=DeployInfo(runtime=cell.runtime, exported="nothing (not supported)"))
    failure = Failure(error_type=type(exc).__name__, phase=phase,
                      traceback_tail="".join(traceback.format_exception(exc))[-TAIL_CHARS:])
    if is_out_of_memory(exc):
        reason = one_line(exc) if str(exc).strip() else "MemoryError: the host is out of memory"
        return CellResult(cell, status="oom", reason=reason, device=name, failure=failure,
                          memory_requested_bytes=requested_bytes(exc))
    return CellResult(cell, status="error", reason=f"{type(exc).__name__}: {one_line(exc)}", device=name,
                      failure=failure)
