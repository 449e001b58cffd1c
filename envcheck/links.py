"""What joins a set of GPUs (NVLink, directly or through NVSwitch, or PCIe) and the bandwidth it allows.

Read from NVML (link state, remote device, topology common ancestor, P2P status); the rates come from
:mod:`detbench.envcheck.tables`. Degrade-safe: without NVML the budget is "unknown" with the reason, never an error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import Any

from detbench.envcheck import nvml, tables


@dataclass(frozen=True)
class LinkBudget:
    """The link type of a GPU set and what its slowest GPU's link allows per direction."""

    link_type: str  # "nvlink" | "pcie" | "unknown"
    per_direction_gbs: float | None  # None: not known (see detail)
    detail: str  # e.g. "NVLink 4.0, 18 links per GPU via NVSwitch: 450 GB/s per direction"
    gpus: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def unknown(reason: str) -> LinkBudget:
    return LinkBudget("unknown", None, reason)


def describe_links(cuda_uuids: list[str]) -> LinkBudget:
    """The links between the GPUs with these CUDA UUIDs (CUDA ordinal order), from NVML."""
    if nvml.load() is None:
        return unknown(f"NVML not available: {nvml.unavailable_reason()}")
    devices = nvml.map_cuda_to_nvml(cuda_uuids)
    if len(devices) < len(cuda_uuids) or len(devices) < 2:
        return unknown(f"{len(devices)} of {len(cuda_uuids)} GPUs matched to NVML devices; need 2 or more")
    gpus = [{"cuda_index": d.cuda_index, "bus_id": nvml.pci_bus_id(d.handle), "nvlinks": nvml.active_nvlinks(d.handle),
             "pcie_max": nvml.pcie_max_link(d.handle)} for d in devices]
    pairs = [{"gpus": [a["cuda_index"], b["cuda_index"]], "nvlinks": _direct_links(a, b),
              "via_nvswitch": _on_switch(a) and _on_switch(b),
              "pcie_topology": nvml.topology_level(devices[i].handle, devices[j].handle),
              "p2p_read": nvml.p2p_read_status(devices[i].handle, devices[j].handle)}
             for (i, a), (j, b) in combinations(enumerate(gpus), 2)]
    rows = [_gpu_row(g, gpus) for g in gpus]
    if all(p["nvlinks"] or p["via_nvswitch"] for p in pairs):
        return _nvlink_budget(rows, pairs)
    return _pcie_budget(rows, pairs)


def _direct_links(a: dict[str, Any], b: dict[str, Any]) -> int:
    return sum(1 for link in a["nvlinks"] if link.remote_bus_id and link.remote_bus_id == b["bus_id"])


def _on_switch(gpu: dict[str, Any]) -> bool:
    return any(link.remote_type == "switch" for link in gpu["nvlinks"])


def _gpu_row(gpu: dict[str, Any], peers: list[dict[str, Any]]) -> dict[str, Any]:
    """One GPU: its NVLinks that reach the set (an NVSwitch or a peer's bus id) and its PCIe capability."""
    peer_ids = {p["bus_id"] for p in peers if p is not gpu}
    useful = [link for link in gpu["nvlinks"] if link.remote_type == "switch" or link.remote_bus_id in peer_ids]
    versions = sorted({link.version for link in useful if link.version is not None})
    generation, width = gpu["pcie_max"]
    return {"cuda_index": gpu["cuda_index"], "bus_id": gpu["bus_id"], "nvlinks_active": len(gpu["nvlinks"]),
            "nvlinks_to_set": len(useful), "nvlink_version": versions[0] if versions else None,
            "pcie_max_generation": generation, "pcie_max_width": width}


def _nvlink_budget(rows: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> LinkBudget:
    # A ring all-reduce moves every byte through each GPU's links once per direction: the GPU with the
    # fewest (or slowest) links into the set bounds the bus bandwidth.
    rates = [tables.nvlink_gbs(r["nvlink_version"], r["nvlinks_to_set"]) for r in rows]
    ranked = [rate if rate is not None else -1.0 for rate in rates]  # an unknown rate sorts first
    slowest = min(range(len(rows)), key=ranked.__getitem__)
    row = rows[slowest]
    via = "via NVSwitch" if all(p["via_nvswitch"] for p in pairs) else "direct"
    name = tables.nvlink_name(row["nvlink_version"])
    if rates[slowest] is None:
        return LinkBudget("nvlink", None, f"{name} {via}: rate of this version not in detbench.envcheck.tables",
                          rows, pairs)
    return LinkBudget("nvlink", rates[slowest],
                      f"{name}, {row['nvlinks_to_set']} links into the set on GPU {row['cuda_index']} ({via}): "
                      f"{rates[slowest]:.0f} GB/s per direction", rows, pairs)


def _pcie_budget(rows: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> LinkBudget:
    rates = [tables.pcie_gbs(r["pcie_max_generation"], r["pcie_max_width"]) for r in rows]
    topologies = sorted({p["pcie_topology"] for p in pairs if p["pcie_topology"]})
    where = f"; paths: {', '.join(topologies)}" if topologies else ""
    known = [rate for rate in rates if rate is not None]
    if len(known) < len(rates):
        return LinkBudget("pcie", None, f"PCIe (generation/width not reported by NVML){where}", rows, pairs)
    slowest = min(range(len(rows)), key=known.__getitem__)
    row = rows[slowest]
    return LinkBudget("pcie", rates[slowest],
                      f"PCIe {row['pcie_max_generation']}.0 x{row['pcie_max_width']} (GPU {row['cuda_index']}): "
                      f"{rates[slowest]:.1f} GB/s per direction{where}", rows, pairs)
