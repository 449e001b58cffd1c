"""Assembling a cell's typed result from what its session measured: latency, throughput, the blocks, memory,
FLOPs and MFU, detections, the configuration it ran with."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

import torch

from bench.core import stats
from bench.core.ratios import compile_seconds
from bench.core.schema import CellResult, Measurement
from bench.measure import memory
from bench.runtime.device import device_name, tf32_flags

if TYPE_CHECKING:  # the session calls this module; the type only
    from bench.runtime.session import CellSession


def cell_result(session: CellSession) -> CellResult:
    """The cell's result from everything measured so far (status ok once a block was timed)."""
    cell, device = session.cell, session.device
    timer = "cuda-events" if device.type == "cuda" else "perf-counter+sync"
    result = CellResult(cell, status="ok", device=device_name(device), timer=timer, config=session.config,
                        first_call_s=session.first_call_s, graph_breaks=session.graph_breaks, setup=session.setup,
                        postprocess=session.postprocess, model_runtime_notes=session.runtime_notes,
                        flops_info=session.flops_info, telemetry=session.telemetry,
                        peak_memory_bytes=session.peak_bytes)
    if session.warm is not None:
        result.warmup_iterations, result.warmup_s = session.warm.iterations, session.warm.seconds
        result.warmup_converged = session.warm.converged
    if not session.times_ms:
        result.status, result.reason = "error", "set up but never timed"
        return result
    timed_s = sum(b.wall_s for b in session.blocks)
    batch = int(cell.batch_size)
    images = batch * len(session.times_ms)
    result.times_ms = list(session.times_ms)
    result.latency = stats.latency_stats(session.times_ms)
    spread = stats.throughput(session.times_ms, batch)
    result.throughput_ips = statistics.median(batch * 1000.0 / b.median_ms for b in session.blocks)
    result.throughput_ips_p10, result.throughput_ips_p90 = spread.p10_ips, spread.p90_ips
    result.compile_details = session.compile_details
    if session.deployed is not None:
        result.deploy = session.deployed.info
        parity = result.deploy.parity
        if parity is not None and parity.verdict == "disagree":
            result.reason = f"outputs disagree with eager FP32: {'; '.join(parity.failures)}"
    if cell.compiled and session.first_call_s is not None:
        result.compile_s = compile_seconds(session.first_call_s, result.latency.median_ms)
    result.measurement = Measurement(
        timer=timer, iterations=len(session.times_ms), timed_s=round(timed_s, 5),
        isolation=session.options.isolation, rounds=len({b.round for b in session.blocks}), blocks=list(session.blocks),
        wall_throughput_ips=images / timed_s if timed_s > 0 else None,
        memory_method=memory.PeakMemoryTracker.method + " minus other variants' resident memory"
        if device.type == "cuda" else "not measured on CPU",
        setup_wall_s=session.setup.total_s, telemetry_round=session.telemetry_round,
        resumed_rounds=session.resumed_rounds,
        warmup_stop_reason=session.warm.stop_reason if session.warm else None)
    if cell.mode == "train" and isinstance(session.last_output, torch.Tensor):
        result.measurement.final_loss = float(session.last_output.detach().float().item())
    if cell.mode == "infer" and session.prepared is not None and session.prepared.spec.count_detections is not None \
            and session.last_output is not None:
        counts = session.prepared.spec.count_detections(session.last_output)
        if counts:
            result.detections_per_image = {"mean": sum(counts) / len(counts), "min": float(min(counts)),
                                           "max": float(max(counts))}
    if session.options.telemetry_hz == 0:
        result.config["telemetry"] = "disabled (--telemetry-hz 0)"
    elif device.type != "cuda":
        result.config["telemetry"] = "not sampled on CPU"
    _fill_flops(session, result)
    return result

def _fill_flops(session: CellSession, result: CellResult) -> None:
    count = session.flop_count
    if count is None:
        return
    result.flops_per_image = count.flops_per_image
    result.flop_convention = count.convention
    if not result.flops_per_image or not result.throughput_ips:
        return
    result.achieved_tflops = result.flops_per_image * result.throughput_ips / 1e12
    if session.device.type != "cuda":
        return
    from envcheck.tables import gpu_spec  # noqa: PLC0415

    spec = gpu_spec(torch.cuda.get_device_name(session.device))
    if spec is None:
        session.flops_info.peak_basis = "GPU not in envcheck.tables.GPU_SPECS"
        return
    basis = session.cell.precision
    if basis == "fp32" and any(tf32_flags().values()):
        basis = "tf32"  # fp32 matmuls/convolutions may run on tensor cores in TF32
    result.peak_tflops = spec.peak_tflops(basis)
    session.flops_info.peak_basis = f"{spec.name} dense {basis} datasheet peak"
    if result.peak_tflops:
        result.mfu = result.achieved_tflops / result.peak_tflops
