"""NCCL: an all-reduce sweep over message sizes across every visible GPU (nccl-tests' algbw/busbw), each size
verified, the large-message bus bandwidth judged against what the GPUs' link (NVLink or PCIe) allows."""

from __future__ import annotations

import json
import os
from typing import Any

from detbench.envcheck import isolate, links
from detbench.envcheck.check import register_check
from detbench.envcheck.nccl_worker import DEFAULT_SIZES, parse_sizes
from detbench.envcheck.result import Outcome, failed, passed, warned

LARGE_MESSAGE_BYTES = 256 * 1024**2  # from here on an all-reduce is bandwidth-bound on NVLink
JUDGE_FRACTION = 0.5  # busbw below this share of the link's per-direction rate warns
# The switches of NVLink multicast (NVLS / symmetric memory). The sweep runs with the user's environment as it is
# (a machine that needs them off is the user's to configure): their values are recorded with the result.
MULTICAST_VARIABLES = ("NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST", "NVSHMEM_DISABLE_NVLS")
# Variables that change which transport NCCL picks: quoted in a low-bandwidth warning.
TRANSPORT_VARIABLES = ("NCCL_P2P_DISABLE", "NCCL_P2P_LEVEL", "NCCL_SHM_DISABLE", "NCCL_ALGO", "NCCL_PROTO",
                       "CUDA_VISIBLE_DEVICES")


def bus_bandwidth_gbs(message_bytes: int, time_s: float, world_size: int) -> tuple[float, float]:
    """(algbw, busbw) in GB/s as nccl-tests computes them for all-reduce: busbw = algbw * 2(n-1)/n."""
    algbw = message_bytes / time_s / 1e9
    return algbw, algbw * 2 * (world_size - 1) / world_size


def nccl_env() -> dict[str, str]:
    """The sweep's environment: the user's, nothing imposed."""
    return isolate.child_env()


def worker_command(world_size: int, timeout_s: float, sizes: str = DEFAULT_SIZES, backend: str = "nccl") -> list[str]:
    return isolate.python_module("detbench.envcheck.nccl_worker", "--world-size", str(world_size), "--sizes", sizes,
                                 "--backend", backend, "--timeout", str(timeout_s))


def size_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The worker's per-size rows with algbw/busbw (GB/s) and the time in microseconds added."""
    rows = []
    for row in report["sizes"]:
        out = {"bytes": row["bytes"], "correct": not row["wrong_ranks"], "wrong_ranks": row["wrong_ranks"]}
        if row["time_s"]:
            algbw, busbw = bus_bandwidth_gbs(row["bytes"], row["time_s"], report["world_size"])
            out.update(time_us=_figures(row["time_s"] * 1e6), algbw_gbs=_figures(algbw), busbw_gbs=_figures(busbw))
        rows.append(out)
    return rows


def large_message_busbw(rows: list[dict[str, Any]]) -> tuple[float | None, int | None]:
    """(best busbw, its size) over messages >= 256 MiB, or of the largest message when none is that big."""
    timed = [r for r in rows if r.get("busbw_gbs") is not None]
    large = [r for r in timed if r["bytes"] >= LARGE_MESSAGE_BYTES] or timed[-1:]
    if not large:
        return None, None
    best = max(large, key=lambda r: r["busbw_gbs"])
    return best["busbw_gbs"], best["bytes"]


def judge_bandwidth(busbw_gbs: float, budget: links.LinkBudget) -> tuple[bool, str, str | None]:
    """(ok, detail, remedy): busbw below JUDGE_FRACTION of the link's per-direction rate is not ok."""
    if budget.per_direction_gbs is None:
        return True, f"link bandwidth not judged ({budget.link_type}: {budget.detail})", None
    share = busbw_gbs / budget.per_direction_gbs
    detail = f"{share:.0%} of the {budget.detail}"
    if share >= JUDGE_FRACTION:
        return True, detail, None
    setting = ", ".join(f"{n}={os.environ[n]}" for n in TRANSPORT_VARIABLES if n in os.environ) or "none set"
    p2p_off = sorted({p["p2p_read"] for p in budget.pairs if p.get("p2p_read") not in (None, "ok")})
    if budget.link_type == "nvlink":
        remedy = ("the GPUs have NVLink but the all-reduce runs far below it: NCCL is probably not using it. "
                  f"Check NCCL_P2P_DISABLE / NCCL_P2P_LEVEL (here: {setting}); in a container run with --ipc=host "
                  "(or a large --shm-size) and every GPU of the job visible; on NVSwitch systems the fabric "
                  "manager must be running (`nvidia-smi -q | grep -i fabric`); NCCL_DEBUG=INFO shows the transport "
                  "(P2P/NVL vs SHM/NET)")
    else:
        remedy = ("the all-reduce runs far below what PCIe allows. Check NCCL_P2P_DISABLE / NCCL_SHM_DISABLE "
                  f"(here: {setting}); PCIe ACS and the IOMMU force peer traffic through the root complex "
                  "(disable ACS, boot with iommu=pt); GPUs that cross sockets (SYS in `nvidia-smi topo -m`) "
                  "are slower - pick GPUs under one switch; in a container use --ipc=host; "
                  "NCCL_DEBUG=INFO shows the transport")
    if p2p_off:
        remedy = f"peer-to-peer is off between some GPUs ({', '.join(p2p_off)}); " + remedy
    return False, detail, remedy


def run_sweep(world_size: int, timeout_s: float, *, sizes: str = DEFAULT_SIZES, backend: str = "nccl",
              budget: links.LinkBudget | None = None, command: list[str] | None = None) -> Outcome:
    """Run the sweep in a child (killed with its ranks at ``timeout_s``) and judge it; never raises for a rank."""
    parse_sizes(sizes)
    env = nccl_env()
    # a TMPDIR of the sweep's own, gone with it: torch.multiprocessing leaves a pytorch-errorfile-*.pickle in the
    # user's for every rank that raised
    with isolate.scratch_dir("detbench-nccl-") as scratch:
        (child,) = isolate.run_children([command or worker_command(world_size, timeout_s, sizes, backend)], timeout_s,
                                        {**env, "TMPDIR": str(scratch)})
    measured: dict[str, Any] = {"world_size": world_size, "backend": backend,
                                **{name.lower(): env.get(name, "unset") for name in MULTICAST_VARIABLES}}
    if child.timed_out:
        return failed(f"all-reduce sweep across {world_size} rank(s) did not finish within {timeout_s:g} s "
                      "(a rank hung; every rank was killed)",
                      "run with NCCL_DEBUG=INFO to see where it stops; common causes: broken P2P under an IOMMU "
                      "(try NCCL_P2P_DISABLE=1 to confirm), NVLS on (NCCL_NVLS_ENABLE=0), a too-small /dev/shm",
                      **measured)
    report = _last_json(child.stdout)
    if child.returncode != 0 or report is None or "failed_rank" in report:
        where = f"rank {report['failed_rank']}" if report and "failed_rank" in report else "a rank"
        error = report.get("error") if report else child.last_error_line()
        return failed(f"{where} failed: {error}",
                      "run with NCCL_DEBUG=INFO; check the driver check and that every GPU is visible", **measured)
    rows = size_rows(report)
    measured.update(nccl=report["nccl"], warmup_iterations=report["warmup_iterations"],
                    iterations=report["iterations"], busbw_factor=2 * (world_size - 1) / world_size, sizes=rows)
    wrong = [r for r in rows if not r["correct"]]
    if wrong:
        first = wrong[0]
        return failed(f"all-reduce returned a wrong sum at {_size(first['bytes'])} on ranks {first['wrong_ranks']}",
                      "a corrupting interconnect or GPU: run nccl-tests and `nvidia-smi -q -d ECC`; try "
                      "NCCL_P2P_DISABLE=1", **measured)
    label = f"NCCL {report['nccl']}" if report["nccl"] else backend
    span = f"{_size(rows[0]['bytes'])}-{_size(rows[-1]['bytes'])}"
    if world_size == 1:  # a 1-rank group moves no data between GPUs: bandwidth says nothing
        return passed(f"{label}: 1-rank all-reduce correct at {len(rows)} sizes ({span}); one GPU: no inter-GPU "
                      "traffic, bandwidth not measured", **measured)
    busbw, at = large_message_busbw(rows)
    measured.update(large_message_busbw_gbs=busbw, large_message_bytes=at)
    if busbw is None or at is None:  # the worker timed no size at all (every time_s was 0)
        return failed(f"{label}: {world_size}-rank all-reduce correct at {len(rows)} sizes ({span}) but no size "
                      "was timed", "run the check again; the worker's timer returned zero for every size",
                      **measured)
    head = (f"{label}: {world_size}-rank all-reduce correct at {len(rows)} sizes ({span}); "
            f"busbw {busbw:.1f} GB/s at {_size(at)}")
    if budget is None:
        return passed(head, **measured)
    measured["link"] = budget.to_dict()
    ok, detail, remedy = judge_bandwidth(busbw, budget)
    if ok or remedy is None:  # judge_bandwidth gives every shortfall its remedy
        return passed(f"{head} ({detail})", **measured)
    return warned(f"{head}: only {detail} ({budget.link_type})", remedy, **measured)


def _last_json(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _figures(value: float, digits: int = 4) -> float:
    """``value`` to ``digits`` significant figures (GB/s spans 0.001 on gloo to 500 on NVLink)."""
    return float(f"{value:.{digits}g}")


def _size(size: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


@register_check("nccl", "NCCL all-reduce", needs_gpu=True, slow=True)
def check_nccl(ctx) -> Outcome:
    import torch  # noqa: PLC0415

    if not torch.distributed.is_available() or not torch.distributed.is_nccl_available():
        return failed("this torch build has no NCCL backend", "install a Linux CUDA wheel of torch (it bundles NCCL)")
    count = ctx.device_count
    uuids = [d.get("uuid", "") for d in ctx.gpu_facts().get("devices", [])][:count]
    budget = links.describe_links(uuids) if count > 1 else None
    # leave the runner a margin so our own deadline, not the runner's, reports a hang
    return run_sweep(count, max(1.0, ctx.options.timeout_s * 0.9), budget=budget)
