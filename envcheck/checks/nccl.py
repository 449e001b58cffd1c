"""NCCL: a real all-reduce across every visible GPU, one process per GPU, verified and timed (nccl-tests busbw)."""

from __future__ import annotations

import json
import os
import socket

from envcheck import isolate
from envcheck.registry import register_check
from envcheck.result import Outcome, failed, passed

MESSAGE_BYTES = 256 * 1024**2  # large enough to be bandwidth-bound on NVLink


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bus_bandwidth_gbs(message_bytes: int, time_s: float, world_size: int) -> tuple[float, float]:
    """(algbw, busbw) in GB/s as nccl-tests computes them for all-reduce."""
    algbw = message_bytes / time_s / 1e9
    return algbw, algbw * 2 * (world_size - 1) / world_size


def nccl_env() -> dict[str, str]:
    # NVLink SHARP (NVLS) multicast must stay off on the lent multi-GPU machines; keep a user's explicit choice.
    return isolate.child_env({"NCCL_NVLS_ENABLE": os.environ.get("NCCL_NVLS_ENABLE", "0")})


def worker_commands(world_size: int, port: int, message_bytes: int, timeout_s: float) -> list[list[str]]:
    return [
        isolate.python_module("envcheck.nccl_worker", "--rank", str(rank), "--world-size", str(world_size),
                              "--port", str(port), "--bytes", str(message_bytes), "--timeout", str(timeout_s))
        for rank in range(world_size)
    ]


def run_allreduce(world_size: int, timeout_s: float, message_bytes: int = MESSAGE_BYTES,
                  commands: list[list[str]] | None = None) -> Outcome:
    """Start the ranks, wait up to `timeout_s`; a hang, a crash or a wrong sum is a failed check."""
    commands = commands or worker_commands(world_size, free_port(), message_bytes, timeout_s)
    children = isolate.run_children(commands, timeout_s, nccl_env())
    measured = {"world_size": world_size, "message_bytes": message_bytes, "nccl_nvls_enable": nccl_env()["NCCL_NVLS_ENABLE"]}
    hung = [rank for rank, c in enumerate(children) if c.timed_out]
    if hung:
        return failed(f"all-reduce across {world_size} GPU(s) did not finish within {timeout_s:g} s (ranks {hung} hung)",
                      "run with NCCL_DEBUG=INFO to see where it stops; common causes: NCCL_P2P_DISABLE needed on "
                      "broken P2P/IOMMU setups, NVLS on (set NCCL_NVLS_ENABLE=0), a too-small /dev/shm", **measured)
    crashed = [(rank, c) for rank, c in enumerate(children) if c.returncode != 0]
    if crashed:
        rank, child = crashed[0]
        return failed(f"rank {rank} failed: {child.last_error_line()}",
                      "run with NCCL_DEBUG=INFO; check the driver check and that every GPU is visible", **measured)
    try:
        reports = [json.loads(c.stdout.strip().splitlines()[-1]) for c in children]
    except (IndexError, json.JSONDecodeError):
        return failed("a rank printed no result", "run `python -m envcheck.nccl_worker` by hand with NCCL_DEBUG=INFO",
                      **measured)
    wrong = [r["rank"] for r in reports if not r["correct"]]
    time_s = max(r["time_s"] for r in reports)
    algbw, busbw = bus_bandwidth_gbs(message_bytes, time_s, world_size)
    measured.update(nccl=reports[0]["nccl"], time_s=time_s, algbw_gbs=round(algbw, 1), busbw_gbs=round(busbw, 1),
                    busbw_factor=2 * (world_size - 1) / world_size)
    if wrong:
        return failed(f"all-reduce returned a wrong sum on ranks {wrong} (expected {reports[0]['expected']:g})",
                      "a corrupting interconnect or GPU: run nccl-tests and `nvidia-smi -q -d ECC`; try NCCL_P2P_DISABLE=1",
                      **measured)
    if world_size == 1:  # a 1-rank group moves no data between GPUs: bandwidth says nothing
        return passed(f"NCCL {measured['nccl']}: 1-rank all-reduce of {message_bytes // 2**20} MiB correct "
                      "(one GPU: no inter-GPU traffic, busbw factor 0)", **measured)
    return passed(f"NCCL {measured['nccl']}: {world_size}-rank all-reduce of {message_bytes // 2**20} MiB correct; "
                  f"algbw {algbw:.1f} GB/s, busbw {busbw:.1f} GB/s", **measured)


@register_check("nccl", "NCCL all-reduce", needs_gpu=True, slow=True)
def check_nccl(ctx) -> Outcome:
    import torch  # noqa: PLC0415

    if not torch.distributed.is_available() or not torch.distributed.is_nccl_available():
        return failed("this torch build has no NCCL backend", "install a Linux CUDA wheel of torch (it bundles NCCL)")
    # leave the runner a margin so our own deadline, not the runner's, reports a hang
    return run_allreduce(ctx.device_count, max(1.0, ctx.options.timeout_s * 0.9))
