"""The environment fingerprint stored with every result: what ran where (GPU, driver, torch, CUDA, ...).

Cheap to collect (no GPU work); every field degrades to None rather than raising.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import platform
import socket
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from detbench.envcheck import nvml
from detbench.envcheck.redact import redact_value

IMAGE_ENV_VARS = ("DETBENCH_IMAGE", "CONTAINER_IMAGE", "IMAGE_NAME")


def _torchvision_version() -> str:
    """``torchvision.__version__`` without importing torchvision where this process has not (~1.4 CPU-s, which a
    `pytest bench/` of other models, a usage error or a listing never needs): read from its ``version.py``, which
    carries the build's local tag (``0.29.1+cu130``) where the distribution's metadata may not (``0.29.1``).
    Whether it imports and pairs with torch is envcheck's check (checks/torch_pairing.py)."""
    module = sys.modules.get("torchvision")
    if module is not None:
        return str(getattr(module, "__version__", "unavailable: no __version__"))
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return "unavailable: not installed"
    for folder in spec.submodule_search_locations:
        try:
            tree = ast.parse(Path(folder, "version.py").read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in tree.body:
            if (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets)
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
                return node.value.value
    try:
        return importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return "unavailable: no version found"


def _torch_facts() -> dict[str, Any]:
    import torch  # noqa: PLC0415

    facts: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cudnn": None,
        "nccl": None,
        "gpus": [],
    }
    facts["torchvision"] = _torchvision_version()
    if torch.backends.cudnn.is_available():
        facts["cudnn"] = torch.backends.cudnn.version()
    if torch.cuda.is_available():
        try:
            version = torch.cuda.nccl.version()
            facts["nccl"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
        except Exception:  # noqa: BLE001 - builds without NCCL
            facts["nccl"] = None
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            facts["gpus"].append(
                {
                    "index": index,
                    "name": props.name,
                    "compute_capability": f"{props.major}.{props.minor}",
                    "memory_bytes": int(props.total_memory),
                    "multiprocessors": props.multi_processor_count,
                    "uuid": str(getattr(props, "uuid", "") or "") or None,
                }
            )
    return facts


def in_container() -> bool:
    """True inside Docker/Podman/containerd (best effort)."""
    if os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv"):
        return True
    try:
        with open("/proc/1/cgroup", encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return False
    return any(word in text for word in ("docker", "containerd", "kubepods", "libpod"))


def image() -> str | None:
    """The container image this runs in, as the environment names it, with any credential in it redacted (the
    fingerprint is copied into every published file: a registry URL may carry ``user:password@`` or a token)."""
    named = next((os.environ[v] for v in IMAGE_ENV_VARS if os.environ.get(v)), None)
    return None if named is None else redact_value(named)


@lru_cache(maxsize=1)
def collect() -> dict[str, Any]:
    """The fingerprint as a plain dict (cached: it does not change within a process)."""
    facts = _torch_facts()
    gpu_names = sorted({gpu["name"] for gpu in facts["gpus"]})
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpu": ", ".join(gpu_names) if gpu_names else None,
        "gpu_count": len(facts["gpus"]),
        "gpus": facts["gpus"],
        "driver": nvml.driver_version(),
        "driver_cuda": ".".join(map(str, nvml.cuda_driver_version() or ())) or None,
        "torch": facts["torch"],
        "torchvision": facts["torchvision"],
        "cuda": facts["cuda_runtime"],
        "cudnn": facts["cudnn"],
        "nccl": facts["nccl"],
        "container": in_container(),
        "image": image(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
