"""GPU visibility: does torch see the GPUs the driver sees (CUDA_VISIBLE_DEVICES, containers, MIG)?"""

from __future__ import annotations

import os
from typing import Any

from detbench.envcheck import fingerprint, nvml
from detbench.envcheck.check import register_check
from detbench.envcheck.result import Outcome, failed, passed, skipped, warned

CONTAINER_GPU_REMEDY = (
    "start the container with GPUs: `docker run --gpus all ...` (NVIDIA Container Toolkit installed), "
    "or on Kubernetes request `nvidia.com/gpu`"
)


def mig_enabled(handles: list) -> list[int]:
    """NVML indices of GPUs whose current MIG mode is enabled."""
    nv = nvml.load()
    enabled = []
    for index, handle in enumerate(handles):
        mode = nvml.query(nv.nvmlDeviceGetMigMode, handle) if nv else None
        if mode and mode[0]:
            enabled.append(index)
    return enabled


@register_check("visibility", "GPU visibility")
def check_visibility(ctx) -> Outcome:
    facts = ctx.gpu_facts()
    nvml_count = nvml.device_count()
    handles = [nvml.handle_by_index(i) for i in range(nvml_count or 0)]
    measured: dict[str, Any] = {
        "torch_cuda_available": bool(facts.get("cuda_available")),
        "torch_device_count": int(facts.get("device_count") or 0),
        "nvml_device_count": nvml_count,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "nvidia_visible_devices": os.environ.get("NVIDIA_VISIBLE_DEVICES"),
        "container": fingerprint.in_container(),
        "mig_enabled_nvml_indices": mig_enabled(handles),
        "devices": [{"index": d["index"], "name": d["name"], "uuid": d.get("uuid")} for d in facts.get("devices", [])],
        "mps_available": bool(facts.get("mps_available")),
    }
    torch_count = measured["torch_device_count"]
    wanted = ctx.options.gpus or (1 if ctx.options.wants_gpu else 0)
    cvd = measured["cuda_visible_devices"]

    if facts.get("error", "") and facts["error"].startswith("torch does not import"):
        return failed(facts["error"], "install torch (see the torch_pairing check)", **measured)
    if facts.get("error"):
        remedy = ("the GPU or driver is hung: check `nvidia-smi`, then drain the node / reboot"
                  if facts.get("timed_out") else
                  "read the error: a too-old driver (see the driver check), a GPU in a bad state (`nvidia-smi`), "
                  "or CUDA_VISIBLE_DEVICES naming a GPU that does not exist")
        return failed(f"CUDA initialisation failed: {facts['error']}", remedy, **measured)
    if torch_count == 0 and nvml_count:
        if facts.get("torch_cuda") is None:
            return failed(f"the driver sees {nvml_count} GPU(s) but torch is a CPU-only build",
                          "install a CUDA build of torch, e.g. pip install torch --index-url "
                          "https://download.pytorch.org/whl/cu130", **measured)
        if cvd is not None and cvd.strip() in ("", "-1", "none", "NoDevFiles"):
            return failed(f"the driver sees {nvml_count} GPU(s) but CUDA_VISIBLE_DEVICES={cvd!r} hides them",
                          "unset CUDA_VISIBLE_DEVICES or set it to the GPUs this job should use, e.g. 0,1", **measured)
        return failed(f"the driver sees {nvml_count} GPU(s) but torch.cuda.is_available() is False",
                      "torch's CUDA runtime cannot use this driver: see the driver check, or run the container "
                      "with --gpus all", **measured)
    if torch_count == 0:
        where = "in a container without GPUs" if measured["container"] else "on this machine"
        detail = f"no NVIDIA GPU {where}" + (" (Apple MPS is available)" if measured["mps_available"] else "")
        if wanted:
            remedy = (CONTAINER_GPU_REMEDY if measured["container"]
                      else "run the job on a machine with an NVIDIA GPU and driver")
            return failed(detail + "; the job needs a GPU", remedy, **measured)
        return skipped(detail + "; GPU checks skip", **measured)
    driver_count = nvml_count if nvml_count is not None else "no NVML"
    summary = f"{torch_count} CUDA GPU(s) visible to torch, {driver_count} to the driver"
    if ctx.options.gpus and torch_count < ctx.options.gpus:
        remedy = (f"CUDA_VISIBLE_DEVICES={cvd!r} hides some: list {ctx.options.gpus} GPUs there" if cvd
                  else f"run on a machine / container with >= {ctx.options.gpus} GPUs (`docker run --gpus all`)")
        return failed(f"{summary}; the job needs {ctx.options.gpus}", remedy, **measured)
    if measured["mig_enabled_nvml_indices"]:
        return warned(f"{summary}; MIG mode is on for NVML GPU(s) {measured['mig_enabled_nvml_indices']}",
                      "a MIG slice has a fraction of the GPU and NCCL cannot span MIG instances: benchmark on a "
                      "full GPU or record the slice profile with the results", **measured)
    if cvd is None and nvml_count is not None and torch_count < nvml_count:
        return warned(f"{summary}: torch sees fewer GPUs than the driver",
                      "a GPU failed to initialise for CUDA: check `nvidia-smi -q` for errors", **measured)
    return passed(summary + (f", CUDA_VISIBLE_DEVICES={cvd}" if cvd is not None else ""), **measured)
