"""The one failure classifier: how every launcher and study turns an exception into a cell's result."""

from __future__ import annotations

import traceback

import torch

from bench.core.schema import Cell, CellResult, Failure
from bench.measure import memory
from bench.models import MissingExtraError
from bench.runtime.device import device_name

TAIL_CHARS = 4000
# errors after which the CUDA context is unusable: the worker must end (a fresh one takes the rest)
STICKY_CUDA_WORDS = ("illegal memory access", "device-side assert", "unspecified launch failure",
                     "cuda error: misaligned address", "an illegal instruction", "uncorrectable ecc")



class WorkerMustEnd(RuntimeError):  # noqa: N818 - names what the worker must do
    """A failure that leaves this process unusable (sticky CUDA error): the rest goes to a fresh worker."""


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


def classify_failure(cell: Cell, exc: BaseException, device: torch.device | str | None, *,
                     phase: str = "set-up") -> CellResult:
    """The one failure classifier: OOM -> ``oom``, a missing optional dependency -> ``skipped``, anything
    else -> ``error`` with the traceback tail. (``timeout`` comes from the launcher, which kills hangs.)"""
    name = device_name(device) if isinstance(device, torch.device) else device
    if isinstance(exc, (MissingExtraError, NotApplicableError)):
        return CellResult(cell, status="skipped", reason=str(exc), device=name)
    failure = Failure(error_type=type(exc).__name__, phase=phase,
                      traceback_tail="".join(traceback.format_exception(exc))[-TAIL_CHARS:])
    if memory.is_oom(exc):
        return CellResult(cell, status="oom", reason=one_line(exc), device=name, failure=failure,
                          memory_requested_bytes=memory.requested_bytes(str(exc)))
    return CellResult(cell, status="error", reason=f"{type(exc).__name__}: {one_line(exc)}", device=name,
                      failure=failure)
