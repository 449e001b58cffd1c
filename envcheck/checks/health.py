"""GPU health via NVML: ECC errors, retired pages, remapped rows, throttling, PCIe link, temperature,
power limit, and other processes holding GPU memory."""

from __future__ import annotations

import os
from typing import Any

from detbench.envcheck import nvml
from detbench.envcheck.check import register_check
from detbench.envcheck.result import Outcome, failed, passed, skipped, warned, worst

TEMPERATURE_WARN_C = 85
POWER_LIMIT_WARN_FRACTION = 0.9  # enforced limit below 90% of the default: someone capped the GPU

# Throttle reasons that mean trouble (name -> (bit, status)); idle, application clocks, sync boost and
# display clocks are normal and ignored.
THROTTLE_REASONS = {
    "SwPowerCap": (0x4, "warn"),
    "HwSlowdown": (0x8, "fail"),
    "SwThermalSlowdown": (0x20, "warn"),
    "HwThermalSlowdown": (0x40, "fail"),
    "HwPowerBrakeSlowdown": (0x80, "fail"),
}
GPU_IDLE_BIT = 0x1
RESET_REMEDY = "drain the node and reset the GPU (`nvidia-smi -r -i N` when idle) or reboot"
RMA_REMEDY = "take the GPU out of service and RMA it (NVIDIA field diagnostic: `dcgmi diag -r 3`)"


def _throttle_bits(nv: Any) -> dict[str, tuple[int, str]]:
    bits = {}
    for name, (fallback, status) in THROTTLE_REASONS.items():
        bits[name] = (getattr(nv, f"nvmlClocksThrottleReason{name}", fallback), status)
    return bits


def findings_for(nv: Any, handle: Any, label: str) -> tuple[list[Outcome], dict[str, Any]]:
    """Every health finding for one GPU (only non-passing ones), and its measured values."""
    q = nvml.query
    found: list[Outcome] = []
    m: dict[str, Any] = {"name": q(nv.nvmlDeviceGetName, handle)}

    m["ecc_uncorrected_volatile"] = q(nv.nvmlDeviceGetTotalEccErrors, handle,
                                      nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC)
    m["ecc_uncorrected_aggregate"] = q(nv.nvmlDeviceGetTotalEccErrors, handle,
                                       nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_AGGREGATE_ECC)
    if m["ecc_uncorrected_volatile"]:
        found.append(failed(f"{label}: {m['ecc_uncorrected_volatile']} uncorrected ECC errors since the last reset",
                            RESET_REMEDY + "; if they return, " + RMA_REMEDY))
    elif m["ecc_uncorrected_aggregate"]:
        found.append(warned(f"{label}: {m['ecc_uncorrected_aggregate']} uncorrected ECC errors in the GPU's lifetime",
                            "watch this GPU: `nvidia-smi -q -d ECC,ROW_REMAPPER`; " + RMA_REMEDY + " if it grows"))

    causes = (nv.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
              nv.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)
    pages = [q(nv.nvmlDeviceGetRetiredPages, handle, cause) for cause in causes]
    m["retired_pages"] = sum(len(p) for p in pages if p is not None) if any(p is not None for p in pages) else None
    m["retired_pages_pending"] = q(nv.nvmlDeviceGetRetiredPagesPendingStatus, handle)
    if m["retired_pages_pending"]:
        found.append(failed(f"{label}: page retirement pending", RESET_REMEDY + " so the retirement takes effect"))
    elif m["retired_pages"]:
        found.append(warned(f"{label}: {m['retired_pages']} retired memory pages",
                            "watch it; " + RMA_REMEDY + " near 60"))

    rows = q(nv.nvmlDeviceGetRemappedRows, handle)
    if rows is not None:
        _, m["remapped_rows_uncorrectable"], m["remapped_rows_pending"], m["remapped_rows_failed"] = rows[:4]
        if m["remapped_rows_failed"]:
            found.append(failed(f"{label}: row remapping failed (no spare rows left)", RMA_REMEDY))
        elif m["remapped_rows_pending"]:
            found.append(warned(f"{label}: row remapping pending", RESET_REMEDY + " to apply the remap"))

    reasons = q(nv.nvmlDeviceGetCurrentClocksEventReasons, handle)
    if reasons is None:
        reasons = q(nv.nvmlDeviceGetCurrentClocksThrottleReasons, handle)
    m["throttle_reasons_bitmask"] = reasons
    active = [(n, s) for n, (bit, s) in _throttle_bits(nv).items() if reasons and reasons & bit]
    m["throttle_reasons"] = [n for n, _ in active]
    for name, status in active:
        fix = ("check cooling/airflow and `nvidia-smi -q -d PERFORMANCE,TEMPERATURE`" if "Thermal" in name
               else "check PSU/power cabling and `nvidia-smi -q -d PERFORMANCE` (HW slowdown / power brake)"
               if status == "fail" else "the GPU is at its power cap; compare the power limit to the default")
        found.append((failed if status == "fail" else warned)(f"{label}: clocks throttled by {name}", fix))

    util = q(nv.nvmlDeviceGetUtilizationRates, handle)
    idle = bool(reasons and reasons & GPU_IDLE_BIT) or (util is not None and util.gpu == 0)
    m["idle"] = idle
    links = (("generation", nv.nvmlDeviceGetCurrPcieLinkGeneration, nv.nvmlDeviceGetMaxPcieLinkGeneration),
             ("width", nv.nvmlDeviceGetCurrPcieLinkWidth, nv.nvmlDeviceGetMaxPcieLinkWidth))
    for what, cur_fn, max_fn in links:
        cur, top = q(cur_fn, handle), q(max_fn, handle)
        m[f"pcie_{what}"], m[f"pcie_max_{what}"] = cur, top
        if cur is not None and top is not None and cur < top:
            text = f"{label}: PCIe link {what} {cur} below its max {top}"
            if idle:
                found.append(warned(text + " (GPU idle: links downshift to save power)",
                                    "re-check under load (`nvidia-smi -q -d PCIE` while a job runs); "
                                    "if it stays low, reseat the card / check the slot"))
            else:
                found.append(failed(text + " under load",
                                    "reseat the card or move it to a full-speed slot; check BIOS PCIe settings"))

    m["temperature_c"] = q(nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU)
    if m["temperature_c"] is not None and m["temperature_c"] >= TEMPERATURE_WARN_C:
        found.append(warned(f"{label}: {m['temperature_c']} C", "check cooling; hot GPUs throttle during benchmarks"))

    limit = q(nv.nvmlDeviceGetEnforcedPowerLimit, handle)
    default = q(getattr(nv, "nvmlDeviceGetPowerManagementDefaultLimit", lambda h: None), handle)
    m["power_limit_w"] = limit / 1000 if limit is not None else None
    m["power_default_limit_w"] = default / 1000 if default is not None else None
    if limit is not None and default and limit < POWER_LIMIT_WARN_FRACTION * default:
        found.append(warned(f"{label}: power limit {limit / 1000:.0f} W below the default {default / 1000:.0f} W",
                            f"results will be slower than the datasheet; an admin restores it with "
                            f"`nvidia-smi -pl {default / 1000:.0f}` (record it with the results otherwise)"))

    procs = q(nv.nvmlDeviceGetComputeRunningProcesses, handle) or []
    others = [(p.pid, p.usedGpuMemory) for p in procs if p.pid != os.getpid()]
    m["other_processes"] = [{"pid": pid, "used_bytes": used} for pid, used in others]
    if others:
        listing = ", ".join(f"pid {pid} ({(used or 0) / 2**20:.0f} MiB)" for pid, used in others)
        found.append(warned(f"{label}: other processes hold GPU memory: {listing}",
                            "benchmarks share the GPU with them: stop them or run on an idle GPU"))
    return found, m


@register_check("health", "GPU health (NVML)")
def check_health(ctx) -> Outcome:
    nv = nvml.load()
    if nv is None:
        return skipped(f"no NVML: {nvml.unavailable_reason()}")
    uuids = nvml.torch_device_uuids() if ctx.gpu_unavailable_reason() is None else []
    mapped = nvml.map_cuda_to_nvml(uuids) if uuids else []
    if mapped:
        devices = [(f"cuda:{d.cuda_index} (nvml {d.nvml_index})", d.handle) for d in mapped]
    else:  # torch sees no GPU: still inspect what the driver sees
        devices = [(f"nvml {i}", nvml.handle_by_index(i)) for i in range(nvml.device_count() or 0)]
    if not devices:
        return skipped("NVML sees no GPU")
    findings: list[Outcome] = []
    measured: dict[str, Any] = {}
    for label, handle in devices:
        if handle is None:
            findings.append(failed(f"{label}: NVML cannot open the GPU",
                                   "check `nvidia-smi`; the GPU may have fallen off the bus"))
            continue
        found, m = findings_for(nv, handle, label)
        findings += found
        measured[label] = m
        if all(m.get(k) is None for k in ("name", "temperature_c", "power_limit_w", "pcie_max_generation")):
            findings.append(failed(f"{label}: every NVML query failed (GPU lost?)",
                                   "check `nvidia-smi`; reboot if the GPU is lost"))
    status = worst(findings)
    if status in ("skip", "pass"):
        summary = "; ".join(f"{label}: {m.get('temperature_c')} C, ECC ok, no throttling"
                            for label, m in measured.items())
        return passed(summary, devices=measured)
    bad = [f for f in findings if f.status == status]
    remedy = " | ".join(dict.fromkeys(f.remedy for f in bad if f.remedy))
    milder = len(findings) - len(bad)
    detail = "; ".join(f.detail for f in bad) + (f" (+{milder} milder)" if milder else "")
    return (failed if status == "fail" else warned)(
        detail, remedy, devices=measured, findings=[{"status": f.status, "detail": f.detail} for f in findings]
    )
