#!/usr/bin/env python3
"""Print pip constraints pinning what the base image already ships (torch, torchvision, their CUDA wheels).

Installing detbench with `pip install -c` this output keeps the base image's torch build: pip can only
satisfy `torch` with the exact version (local label included, e.g. 2.5.1+cu121) that is already there.
Run it again after the install and diff against the saved copy to prove nothing was upgraded.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import sys

# The base image's own stack: pinned exactly. numpy is here because torch's wheels were built against it.
PINNED = ("torch", "torchvision", "torchaudio", "triton", "numpy")
# CUDA user-space wheels (nvidia-cudnn-cu12, nvidia-nccl-cu12, ...) when torch came from PyPI.
CUDA_WHEEL = re.compile(r"^nvidia-[a-z0-9-]+-cu\d+$")


def base_pins() -> list[str]:
    """`name==version` for each base package that is installed, sorted by name."""
    pins = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name in PINNED or CUDA_WHEEL.match(name):
            pins[name] = f"{name}=={dist.version}"
    missing = [name for name in ("torch", "torchvision") if name not in pins]
    if missing:
        sys.exit(f"base image lacks {', '.join(missing)}: use an official pytorch/pytorch image as base")
    return [pins[name] for name in sorted(pins)]


if __name__ == "__main__":
    print("\n".join(base_pins()))
