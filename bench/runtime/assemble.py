"""Assembling a cell's typed result from what its session measured: latency, throughput, the blocks, memory,
FLOPs and MFU, detections, the configuration it ran with. The session hands a :class:`Measured` record over;
nothing here knows the session."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from detbench.bench.core import stats
from detbench.bench.core.options import RunOptions
from detbench.bench.core.ratios import compile_seconds
from detbench.bench.core.schema import (
    BlockRecord,
    Cell,
    CellResult,
    CompileDetails,
    DeployInfo,
    FlopsInfo,
    Measurement,
    SetupTimes,
)
from detbench.bench.measure import memory
from detbench.bench.measure.flops import FlopCount
from detbench.bench.measure.timing import WarmupResult
from detbench.bench.runtime.device import device_name, tf32_flags


@dataclass
class Measured:
    """What a cell's session has measured so far (:meth:`detbench.bench.runtime.session.CellSession.measured`)."""

    options: RunOptions
    config: dict[str, Any]
    setup: SetupTimes
    flops_info: FlopsInfo
    first_call_s: float | None = None
    graph_breaks: int | None = None
    postprocess: dict[str, Any] | None = None
    runtime_notes: dict[str, Any] = field(default_factory=dict)
    telemetry: dict[str, Any] | None = None
    telemetry_round: int | None = None
    peak_bytes: int | None = None
    warm: WarmupResult | None = None
    times_ms: list[float] = field(default_factory=list)
    blocks: list[BlockRecord] = field(default_factory=list)
    resumed_rounds: int = 0
    compile_details: CompileDetails | None = None
    deploy: DeployInfo | None = None
    flop_count: FlopCount | None = None
    last_output: Any = None
    count_detections: Callable[[Any], list[int]] | None = None


def cell_result(cell: Cell, device: torch.device, measured: Measured) -> CellResult:
    """The cell's result from everything measured so far (status ok once a block was timed)."""
    timer = "cuda-events" if device.type == "cuda" else "perf-counter+sync"
    result = CellResult(cell, status="ok", device=device_name(device), timer=timer, config=measured.config,
                        first_call_s=measured.first_call_s, graph_breaks=measured.graph_breaks, setup=measured.setup,
                        postprocess=measured.postprocess, model_runtime_notes=measured.runtime_notes,
                        flops_info=measured.flops_info, telemetry=measured.telemetry,
                        peak_memory_bytes=measured.peak_bytes)
    if measured.warm is not None:
        result.warmup_iterations, result.warmup_s = measured.warm.iterations, measured.warm.seconds
        result.warmup_converged = measured.warm.converged
    if not measured.times_ms:
        result.status, result.reason = "error", "set up but never timed"
        return result
    timed_s = sum(b.wall_s for b in measured.blocks)
    batch = int(cell.batch_size)
    images = batch * len(measured.times_ms)
    result.times_ms = list(measured.times_ms)
    result.latency = stats.latency_stats(measured.times_ms)
    spread = stats.throughput(measured.times_ms, batch)
    result.throughput_ips = statistics.median(batch * 1000.0 / b.median_ms for b in measured.blocks)
    result.throughput_ips_p10, result.throughput_ips_p90 = spread.p10_ips, spread.p90_ips
    result.compile_details = measured.compile_details
    if measured.deploy is not None:
        result.deploy = measured.deploy
        parity = result.deploy.parity
        if parity is not None and parity.verdict == "disagree":
            result.reason = f"outputs disagree with eager FP32: {'; '.join(parity.failures)}"
    if cell.compiled and measured.first_call_s is not None:
        result.compile_s = compile_seconds(measured.first_call_s, result.latency.median_ms)
    result.measurement = Measurement(
        timer=timer, iterations=len(measured.times_ms), timed_s=round(timed_s, 5),
        isolation=measured.options.isolation, rounds=len({b.round for b in measured.blocks}),
        blocks=list(measured.blocks),
        wall_throughput_ips=images / timed_s if timed_s > 0 else None,
        memory_method=memory.PeakMemoryTracker.method + " minus other variants' resident memory"
        if device.type == "cuda" else "not measured on CPU",
        setup_wall_s=measured.setup.total_s, telemetry_round=measured.telemetry_round,
        resumed_rounds=measured.resumed_rounds,
        warmup_stop_reason=measured.warm.stop_reason if measured.warm else None)
    if cell.mode == "train" and isinstance(measured.last_output, torch.Tensor):
        result.measurement.final_loss = float(measured.last_output.detach().float().item())
    if cell.mode == "infer" and measured.count_detections is not None and measured.last_output is not None:
        counts = measured.count_detections(measured.last_output)
        if counts:
            result.detections_per_image = {"mean": sum(counts) / len(counts), "min": float(min(counts)),
                                           "max": float(max(counts))}
    if measured.options.telemetry_hz == 0:
        result.config["telemetry"] = "disabled (--telemetry-hz 0)"
    elif device.type != "cuda":
        result.config["telemetry"] = "not sampled on CPU"
    _fill_flops(cell, device, measured, result)
    return result


def _fill_flops(cell: Cell, device: torch.device, measured: Measured, result: CellResult) -> None:
    count = measured.flop_count
    if count is None:
        return
    result.flops_per_image = count.flops_per_image
    result.flop_convention = count.convention
    if not result.flops_per_image or not result.throughput_ips:
        return
    result.achieved_tflops = result.flops_per_image * result.throughput_ips / 1e12
    if device.type != "cuda":
        return
    from detbench.envcheck.tables import gpu_spec  # noqa: PLC0415

    spec = gpu_spec(torch.cuda.get_device_name(device))
    if spec is None:
        measured.flops_info.peak_basis = "GPU not in detbench.envcheck.tables.GPU_SPECS"
        return
    basis = cell.precision
    if basis == "fp32" and any(tf32_flags().values()):
        basis = "tf32"  # fp32 matmuls/convolutions may run on tensor cores in TF32
    result.peak_tflops = spec.peak_tflops(basis)
    measured.flops_info.peak_basis = f"{spec.name} dense {basis} datasheet peak"
    if result.peak_tflops:
        result.mfu = result.achieved_tflops / result.peak_tflops
