"""Thin, degrade-safe layer over NVML (`nvidia-ml-py`, imported as `pynvml`).

Every query returns a value or ``None``; an unsupported or failing query never raises mid-run.
CUDA ordinals are mapped to NVML devices through UUIDs, honouring ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Callable

_lock = threading.Lock()
_state: dict[str, Any] = {"module": None, "reason": None, "tried": False}


def _import_pynvml() -> Any:
    import pynvml  # noqa: PLC0415 - optional at run time

    return pynvml


def load(importer: Callable[[], Any] | None = None) -> Any | None:
    """Initialise NVML once; return the `pynvml` module, or None (see :func:`unavailable_reason`)."""
    with _lock:
        if _state["tried"] and importer is None:
            return _state["module"]
        _state["tried"] = True
        _state["module"] = None
        try:
            module = (importer or _import_pynvml)()
        except ImportError as exc:
            _state["reason"] = f"nvidia-ml-py is not installed ({exc}); pip install nvidia-ml-py"
            return None
        try:
            module.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...
            _state["reason"] = f"NVML could not start: {describe_error(exc)} (no NVIDIA driver, or not exposed to this container)"
            return None
        _state["module"] = module
        _state["reason"] = None
        return module


def reset() -> None:
    """Forget the loaded module (tests swap in fakes)."""
    with _lock:
        _state.update(module=None, reason=None, tried=False)


def unavailable_reason() -> str | None:
    """Why NVML is not usable, or None when it is."""
    load()
    return _state["reason"]


def describe_error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.decode() if isinstance(text, bytes) else text


def query(fn: Callable[..., Any], *args: Any) -> Any | None:
    """Call an NVML function; return None when it is unsupported or fails."""
    try:
        value = fn(*args)
    except Exception:  # NVMLError_NotSupported, _GpuIsLost, _NoPermission: "not available" is a value
        return None
    return value.decode() if isinstance(value, bytes) else value


NVML_ERROR_GPU_IS_LOST = 15


def is_gpu_lost(exc: BaseException) -> bool:
    """True when an NVML error says the GPU fell off the bus (NVMLError_GpuIsLost)."""
    return getattr(exc, "value", None) == NVML_ERROR_GPU_IS_LOST or type(exc).__name__ == "NVMLError_GpuIsLost"


def driver_version() -> str | None:
    nv = load()
    return query(nv.nvmlSystemGetDriverVersion) if nv else None


def cuda_driver_version() -> tuple[int, int] | None:
    """CUDA version the driver supports, e.g. (13, 0)."""
    nv = load()
    if not nv:
        return None
    raw = query(nv.nvmlSystemGetCudaDriverVersion_v2) or query(nv.nvmlSystemGetCudaDriverVersion)
    if not raw:
        return None
    return raw // 1000, (raw % 1000) // 10


def device_count() -> int | None:
    nv = load()
    return query(nv.nvmlDeviceGetCount) if nv else None


def handle_by_index(index: int) -> Any | None:
    nv = load()
    return query(nv.nvmlDeviceGetHandleByIndex, index) if nv else None


def normalise_uuid(uuid: str) -> str:
    """'GPU-8f3a...' and '8f3a...' compare equal."""
    text = str(uuid).strip().lower()
    for prefix in ("gpu-", "mig-"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text


@dataclass(frozen=True)
class NvmlDevice:
    """An NVML device as seen from one CUDA ordinal of this process."""

    cuda_index: int
    nvml_index: int
    uuid: str
    handle: Any


def nvml_devices_by_uuid() -> dict[str, tuple[int, Any]]:
    """Normalised UUID -> (NVML index, handle) for every GPU NVML sees (all of them, not only visible)."""
    nv = load()
    if not nv:
        return {}
    out: dict[str, tuple[int, Any]] = {}
    for index in range(device_count() or 0):
        handle = handle_by_index(index)
        uuid = query(nv.nvmlDeviceGetUUID, handle) if handle is not None else None
        if uuid:
            out[normalise_uuid(uuid)] = (index, handle)
    return out


def visible_devices_env() -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list of entries (ordinals or UUIDs), or None when unset."""
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    return [item.strip() for item in raw.split(",") if item.strip()]


def map_cuda_to_nvml(cuda_uuids: list[str]) -> list[NvmlDevice]:
    """Map CUDA ordinals (given by their torch-reported UUIDs) to NVML devices.

    UUIDs are authoritative. Where a UUID is missing, fall back to CUDA_VISIBLE_DEVICES entries
    (ordinals or UUID prefixes); never assume the two indexings agree.
    """
    by_uuid = nvml_devices_by_uuid()
    visible = visible_devices_env()
    mapped: list[NvmlDevice] = []
    for cuda_index, cuda_uuid in enumerate(cuda_uuids):
        key = normalise_uuid(cuda_uuid) if cuda_uuid else ""
        match = by_uuid.get(key) if key else None
        if match is None and visible is not None and cuda_index < len(visible):
            entry = visible[cuda_index]
            if entry.isdigit():
                handle = handle_by_index(int(entry))
                if handle is not None:
                    match = (int(entry), handle)
            else:
                wanted = normalise_uuid(entry)
                match = next((v for u, v in by_uuid.items() if u.startswith(wanted)), None)
        if match is None and visible is None and cuda_uuid == "":
            handle = handle_by_index(cuda_index)
            match = (cuda_index, handle) if handle is not None else None
        if match is not None:
            nvml_index, handle = match
            uuid = key or normalise_uuid(query(load().nvmlDeviceGetUUID, handle) or "")
            mapped.append(NvmlDevice(cuda_index, nvml_index, uuid, handle))
    return mapped


def torch_device_uuids() -> list[str]:
    """UUIDs of the CUDA devices this process sees, in torch's order ('' where torch cannot say)."""
    import torch  # noqa: PLC0415

    if not torch.cuda.is_available():
        return []
    uuids = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        uuids.append(str(getattr(props, "uuid", "") or ""))
    return uuids
