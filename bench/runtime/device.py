"""The device a cell runs on: which one, its name, TF32 flags, the process's heap before the first model, and giving
memory back after a failure."""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import platform
import re
from collections.abc import Iterator
from pathlib import Path

import torch


def cell_device() -> torch.device:
    """cuda:0 (the launcher narrows CUDA_VISIBLE_DEVICES when needed) or the CPU."""
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"cpu ({cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def tf32_flags() -> dict[str, bool]:
    """Whether fp32 matmuls / cuDNN convolutions may run in TF32 (decides which peak an fp32 cell uses)."""
    return {"matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32)}


@functools.cache  # once per process
def freeze_startup_objects() -> None:
    """Move what the process holds before its first model (modules, torch's and pytest's registries: ~370k objects
    here) out of the garbage collector's generations, once per process (``gc.freeze``, after a collection). A full
    collection then traverses only what came later: one at a group's end took 0.13-0.15 s with torch, torchvision
    and pytest imported, 0.3 ms after this (2-core CPU VM, torch 2.14.1), and one that Python starts by itself
    inside a timed block no longer adds a tenth of a second to it. The frozen objects live as long as the process,
    as modules do anyway."""
    gc.collect()
    gc.freeze()


def release_memory(device: torch.device) -> None:
    """Give back cached blocks after a failure so the next variant starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def available_memory_bytes() -> int | None:
    """What the host can still give without swapping (MemAvailable in /proc/meminfo), or None where unknown."""
    try:
        match = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def _address_space_bytes() -> int | None:
    try:
        match = re.search(r"^VmSize:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


@contextlib.contextmanager
def host_memory_cap(device: torch.device) -> Iterator[int | None]:
    """On the CPU: this process's address space capped at its size now plus the host's available memory, so an
    allocation that would exhaust the host fails ("can't allocate memory", a cell's ``oom``) instead of the
    kernel's OOM killer ending the whole process; the limit in force before is restored after. Yields the cap
    (None: not capped - a GPU, whose driver maps far more address space than memory, or no /proc)."""
    import resource  # noqa: PLC0415 (POSIX only)

    available, size = available_memory_bytes(), _address_space_bytes()
    if device.type != "cpu" or available is None or size is None:
        yield None
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + available
    for limit in (soft, hard):
        if limit != resource.RLIM_INFINITY:
            cap = min(cap, limit)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield cap
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
