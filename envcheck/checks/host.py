"""Host: /dev/shm size (DataLoader workers in Docker), CPU cores, memory, free disk for results and caches,
and whether the results folder can be written."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from detbench.envcheck.check import register_check
from detbench.envcheck.result import Outcome, failed, passed, warned, worst

GIB = 1024**3
SHM_FAIL_BYTES = 1 * GIB  # Docker's default is 64 MiB: DataLoader workers die with "bus error"
SHM_WARN_BYTES = 4 * GIB
DISK_FAIL_BYTES = 2 * GIB
DISK_WARN_BYTES = 20 * GIB
MEMORY_WARN_BYTES = 16 * GIB
CPU_WARN_CORES = 4


def disk_free_bytes(path: str) -> int | None:
    """Free bytes on the filesystem holding `path` (its nearest existing parent); None when unreadable."""
    probe = Path(path).expanduser().resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def dir_writable(path: str) -> bool:
    """True when a file can be created in ``path``, or ``path`` can be created (tried, then removed again)."""
    target = Path(path).expanduser()
    missing = []
    while not target.exists() and target != target.parent:
        missing.append(target)
        target = target.parent
    if not target.is_dir():
        return False  # a file where a folder is needed
    if missing:  # whether the folders can be made is found by making them: access() misses read-only mounts
        try:
            missing[-1].mkdir()
        except OSError:
            return False
        missing[-1].rmdir()
        return True
    try:
        with tempfile.TemporaryFile(dir=target):
            return True
    except OSError:
        return False


def shm_total_bytes() -> int | None:
    try:
        return shutil.disk_usage("/dev/shm").total
    except OSError:  # no /dev/shm (macOS)
        return None


def available_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def usable_cpu_count() -> int | None:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def cache_dir() -> str:
    path = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return os.path.expanduser(path)


@register_check("host", "host: shm, CPU, memory, disk", severity="warning")
def check_host(ctx) -> Outcome:
    findings: list[Outcome] = []
    shm = shm_total_bytes()
    cpus = usable_cpu_count()
    memory = available_memory_bytes()
    results_dir = os.path.abspath(ctx.options.results_dir)
    disks = {
        "results_dir": (results_dir, disk_free_bytes(results_dir)),
        "cache_dir": (cache_dir(), disk_free_bytes(cache_dir())),
    }
    writable = dir_writable(results_dir)
    measured = {
        "shm_bytes": shm, "cpu_count": cpus, "memory_available_bytes": memory,
        "disk_free_bytes": {k: {"path": p, "free_bytes": f} for k, (p, f) in disks.items()},
        "results_dir_writable": writable,
    }
    if not writable:
        findings.append(failed(f"results_dir {results_dir} is not writable: results would be lost",
                               f"fix the permissions of {results_dir} (or the read-only mount), or pass another "
                               "--results-dir / --benchmark-json folder"))
    if shm is not None and shm < SHM_FAIL_BYTES:
        findings.append(failed(f"/dev/shm is {shm / 2**20:.0f} MiB: DataLoader workers crash (bus error)",
                               "docker run --shm-size=8g ... (or --ipc=host; on Kubernetes mount an emptyDir "
                               "with medium: Memory at /dev/shm)"))
    elif shm is not None and shm < SHM_WARN_BYTES:
        findings.append(warned(f"/dev/shm is {shm / GIB:.1f} GiB: tight for several DataLoader workers",
                               "docker run --shm-size=8g ..."))
    if cpus is not None and cpus < CPU_WARN_CORES:
        findings.append(warned(f"{cpus} usable CPU cores: input pipelines will starve the GPU",
                               "give the container more CPUs (docker run --cpus / Kubernetes cpu request)"))
    if memory is not None and memory < MEMORY_WARN_BYTES:
        findings.append(warned(f"{memory / GIB:.1f} GiB memory available",
                               "free memory or raise the container's memory limit"))
    for what, (path, free) in disks.items():
        if free is None:
            continue
        detail, remedy = f"{what} {path}: {free / GIB:.1f} GiB free", f"free space under {path}, or point it elsewhere"
        if free < DISK_FAIL_BYTES:
            findings.append(failed(detail, remedy))
        elif free < DISK_WARN_BYTES:
            findings.append(warned(detail, remedy))
    status = worst(findings)
    summary = (f"/dev/shm {shm / GIB:.1f} GiB, " if shm is not None else "no /dev/shm, ") + \
              f"{cpus} CPUs, {(memory or 0) / GIB:.0f} GiB memory available, " + \
              ", ".join(f"{w} {(f or 0) / GIB:.0f} GiB free" for w, (_, f) in disks.items()) + \
              (", results_dir writable" if writable else ", results_dir NOT writable")
    if status in ("pass", "skip"):
        return passed(summary, **measured)
    bad = [f for f in findings if f.status == status]
    return (failed if status == "fail" else warned)(
        "; ".join(f.detail for f in bad), " | ".join(dict.fromkeys(f.remedy for f in bad if f.remedy)),
        summary=summary, **measured)
