"""Thin, degrade-safe layer over NVML (`nvidia-ml-py`, imported as `pynvml`).

Every query returns a value or ``None``; an unsupported or failing query never raises mid-run.
CUDA ordinals are mapped to NVML devices through UUIDs, honouring ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
        except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, _DriverNotLoaded, ...
            _state["reason"] = (f"NVML could not start: {describe_error(exc)} "
                                "(no NVIDIA driver, or not exposed to this container)")
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
    except Exception:  # noqa: BLE001 - NVMLError_NotSupported, _GpuIsLost, _NoPermission: "not available" is a value
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
    nv = load()
    if nv is None:  # no NVML: nothing to map to
        return []
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
            uuid = key or normalise_uuid(query(nv.nvmlDeviceGetUUID, handle) or "")
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


# --- links and topology (the NCCL check judges bandwidth against these) ------------------------------------

NVLINK_REMOTE_TYPES = {0: "gpu", 1: "ibmnpu", 2: "switch"}  # nvmlIntNvLinkDeviceType_t
TOPOLOGY_LEVELS = {  # nvmlGpuTopologyLevel_t -> nvidia-smi topo's word for it
    0: "internal (same board)",
    10: "PIX (one PCIe switch)",
    20: "PXB (several PCIe switches)",
    30: "PHB (a PCIe host bridge)",
    40: "NODE (host bridges within a NUMA node)",
    50: "SYS (across the CPU interconnect between NUMA nodes)",
}
P2P_STATUSES = {
    0: "ok",
    1: "chipset not supported",
    2: "GPU not supported",
    3: "IOH topology not supported",
    4: "disabled by regkey",
    5: "not supported",
}


@dataclass(frozen=True)
class NvLink:
    """One active NVLink of a GPU: its NVML version enum and what is at the other end."""

    link: int
    version: int | None
    remote_bus_id: str | None
    remote_type: str | None  # "gpu" | "switch" | "ibmnpu"; None when NVML does not say


def normalise_bus_id(bus_id: Any) -> str:
    """'00000000:18:00.0', '0000:18:00.0' and '18:00.0' compare equal (domain as 4 hex digits, lower case)."""
    text = (bus_id.decode() if isinstance(bus_id, bytes) else str(bus_id)).strip().lower()
    parts = text.split(":")
    if len(parts) == 2:
        parts = ["0", *parts]
    try:
        return f"{int(parts[0], 16):04x}:{parts[1]}:{parts[2]}" if len(parts) == 3 else text
    except ValueError:
        return text


def pci_bus_id(handle: Any) -> str | None:
    nv = load()
    info = query(nv.nvmlDeviceGetPciInfo, handle) if nv else None
    bus_id = getattr(info, "busId", None)
    return normalise_bus_id(bus_id) if bus_id else None


def active_nvlinks(handle: Any) -> list[NvLink]:
    """The GPU's active NVLinks; [] on a PCIe-only GPU or where NVML cannot say."""
    nv = load()
    if not nv:
        return []
    links = []
    for link in range(int(getattr(nv, "NVML_NVLINK_MAX_LINKS", 18))):
        if query(nv.nvmlDeviceGetNvLinkState, handle, link) != 1:  # 1 = NVML_FEATURE_ENABLED (link up)
            continue
        remote = query(nv.nvmlDeviceGetNvLinkRemotePciInfo_v2, handle, link) if hasattr(
            nv, "nvmlDeviceGetNvLinkRemotePciInfo_v2") else query(nv.nvmlDeviceGetNvLinkRemotePciInfo, handle, link)
        remote_type = (query(nv.nvmlDeviceGetNvLinkRemoteDeviceType, handle, link)
                       if hasattr(nv, "nvmlDeviceGetNvLinkRemoteDeviceType") else None)
        bus_id = getattr(remote, "busId", None)
        links.append(NvLink(link, query(nv.nvmlDeviceGetNvLinkVersion, handle, link),
                            normalise_bus_id(bus_id) if bus_id else None,
                            NVLINK_REMOTE_TYPES.get(remote_type) if remote_type is not None else None))
    return links


def topology_level(first: Any, second: Any) -> str | None:
    """How PCIe joins two GPUs, in nvidia-smi topo's words (PIX ... SYS); None when NVML cannot say."""
    nv = load()
    level = query(nv.nvmlDeviceGetTopologyCommonAncestor, first, second) if nv else None
    return TOPOLOGY_LEVELS.get(level, f"level {level}") if level is not None else None


def p2p_read_status(first: Any, second: Any) -> str | None:
    """Whether the driver allows peer-to-peer reads between two GPUs ('ok' or why not); None when unknown."""
    nv = load()
    if not nv or not hasattr(nv, "nvmlDeviceGetP2PStatus"):
        return None
    # 0 = NVML_P2P_CAPS_INDEX_READ (pynvml spells that constant as the tuple `(0,)`, which ctypes refuses)
    status = query(nv.nvmlDeviceGetP2PStatus, first, second, 0)
    return P2P_STATUSES.get(status, f"status {status}") if status is not None else None


def pcie_max_link(handle: Any) -> tuple[int | None, int | None]:
    """(generation, lanes) the GPU and its slot support; the current link downshifts when idle."""
    nv = load()
    if not nv:
        return None, None
    return (query(nv.nvmlDeviceGetMaxPcieLinkGeneration, handle), query(nv.nvmlDeviceGetMaxPcieLinkWidth, handle))
