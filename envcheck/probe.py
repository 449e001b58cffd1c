"""CUDA probe, run in a child process by :mod:`detbench.envcheck.context`: CUDA init can hang or abort the process.

Prints one JSON object: whether CUDA works, the devices, the compiled arch list, bf16 support.
"""

from __future__ import annotations

import json
from typing import Any


def native_bf16_supported() -> bool:
    """bf16 in hardware on the current CUDA device. Since torch 2.3 ``is_bf16_supported()`` also answers True
    where bf16 is only emulated (T4, V100): a job or benchmark would then run a slow emulation."""
    import torch  # noqa: PLC0415

    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch without the keyword reports native support only
        return bool(torch.cuda.is_bf16_supported())


def collect() -> dict[str, Any]:
    import torch  # noqa: PLC0415

    facts: dict[str, Any] = {
        "torch_cuda": torch.version.cuda,
        "cuda_available": False,
        "device_count": 0,
        "devices": [],
        "arch_list": [],
        "bf16_supported": False,
        "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "error": None,
    }
    try:
        facts["cuda_available"] = torch.cuda.is_available()
        if not facts["cuda_available"]:
            return facts
        facts["device_count"] = torch.cuda.device_count()
        facts["arch_list"] = torch.cuda.get_arch_list()
        for index in range(facts["device_count"]):
            props = torch.cuda.get_device_properties(index)
            device = {
                "index": index,
                "name": props.name,
                "capability": [props.major, props.minor],
                "memory_bytes": int(props.total_memory),
                "uuid": str(getattr(props, "uuid", "") or ""),
                "launch_error": None,
            }
            facts["devices"].append(device)
            try:
                torch.zeros(1, device=f"cuda:{index}").add_(1)  # a real context and kernel launch
                torch.cuda.synchronize(index)
            except RuntimeError as exc:  # "no kernel image is available for execution on the device"
                device["launch_error"] = str(exc).strip().splitlines()[0]
        facts["bf16_supported"] = native_bf16_supported()
    except RuntimeError as exc:  # "CUDA driver version is insufficient", "no kernel image", ...
        facts["error"] = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return facts


if __name__ == "__main__":
    print(json.dumps(collect()))
