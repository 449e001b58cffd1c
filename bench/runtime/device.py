"""The device a cell runs on: which one, its name, TF32 flags, and giving memory back after a failure."""

from __future__ import annotations

import gc
import os
import platform

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


def release_memory(device: torch.device) -> None:
    """Give back cached blocks after a failure so the next variant starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
