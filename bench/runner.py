"""Run one cell in this process and return its CellResult: build, warm up, time, measure.

The runner composes the trackers (timing, memory, telemetry, FLOPs, post-processing load); the
statistics come from :mod:`bench.stats`. Failures become results: OOM -> ``oom``, a missing optional
dependency -> ``skipped``, anything else -> ``error`` with the exception's one-line text.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import torch

from bench import faults, memory, stats, timing
from bench.flops import FlopCount, count_flops
from bench.models import MissingExtraError, ModelSpec, get_model
from bench.models.registry import configure_size
from bench.options import RunOptions, import_model_modules
from bench.postprocess import calibrate_postprocess
from bench.schema import Cell, CellResult
from bench.telemetry import TelemetryTracker

AUTOCAST_DTYPES = {"amp-fp16": torch.float16, "amp-bf16": torch.bfloat16}


@dataclass
class Prepared:
    """A cell's model and data, ready to iterate."""

    spec: ModelSpec
    model: torch.nn.Module  # the eager module (weights live here)
    runnable: Callable[..., Any]  # the module itself or its torch.compile wrapper
    inputs: Any
    targets: Any
    image_size: tuple[int, int]
    optimizer: torch.optim.Optimizer | None
    scaler: Any  # torch.amp.GradScaler for amp-fp16 training, else None


def cell_device() -> torch.device:
    """cuda:0 (the launcher narrows CUDA_VISIBLE_DEVICES per cell when needed) or the CPU."""
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def tf32_flags() -> dict[str, bool]:
    """Whether fp32 matmuls / cuDNN convolutions may run in TF32 (decides which peak an fp32 cell uses)."""
    return {
        "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
    }


def prepare(cell: Cell, options: RunOptions, device: torch.device) -> Prepared:
    """Build the seeded model at the cell's size, move it, set its mode, make inputs once on the device."""
    spec = get_model(cell.model)
    torch.manual_seed(options.seed)
    model = spec.build(options.weights.get(cell.model))
    size = configure_size(model, spec, cell.image_size)
    model.to(device)
    model.train(cell.mode == "train")
    generator = torch.Generator(device=device).manual_seed(options.seed)
    inputs = spec.make_inputs(cell.batch_size, size, device, generator)
    targets = spec.make_targets(cell.batch_size, size, device, generator) if cell.mode == "train" else None
    optimizer = scaler = None
    if cell.mode == "train":
        params = [p for p in model.parameters() if p.requires_grad]
        if options.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=options.learning_rate, momentum=options.momentum)
        else:
            optimizer = torch.optim.AdamW(params, lr=options.learning_rate)
        if cell.precision == "amp-fp16":
            scaler = torch.amp.GradScaler(device.type)
    return Prepared(spec, model, model, inputs, targets, size, optimizer, scaler)


def autocast_context(cell: Cell, device: torch.device) -> Any:
    """``torch.autocast`` for amp cells, a null context for fp32."""
    dtype = AUTOCAST_DTYPES.get(cell.precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_step(cell: Cell, prepared: Prepared, device: torch.device) -> Callable[[], Any]:
    """One iteration: an inference forward, or forward + backward + optimizer step."""

    def autocast() -> Any:
        return autocast_context(cell, device)

    if cell.mode == "infer":

        def infer() -> Any:
            with torch.no_grad(), autocast():
                return prepared.runnable(prepared.inputs)

        return infer

    optimizer, scaler = prepared.optimizer, prepared.scaler

    def train() -> Any:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = prepared.spec.training_loss(prepared.runnable, prepared.inputs, prepared.targets)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss

    return train


def run_cell(cell: Cell, options: RunOptions) -> CellResult:
    """Measure one cell here (no isolation); every failure is returned as a result, never raised."""
    import_model_modules(options.model_modules)
    device = cell_device()
    config = resolved_config(cell, options, device)
    try:
        return _measure(cell, options, device, config)
    except MissingExtraError as exc:
        return CellResult(cell, status="skipped", reason=str(exc), config=config)
    except Exception as exc:  # recorded as the cell's result, with the traceback in config
        if memory.is_oom(exc):
            config["error_type"] = type(exc).__name__
            result = CellResult(cell, status="oom", reason=one_line(exc), config=config,
                                memory_requested_bytes=memory.requested_bytes(str(exc)), device=device_name(device))
        else:
            config["traceback_tail"] = traceback.format_exc()[-4000:]
            result = CellResult(cell, status="error", reason=f"{type(exc).__name__}: {one_line(exc)}",
                                config=config, device=device_name(device))
        release_memory(device)
        return result


def _measure(cell: Cell, options: RunOptions, device: torch.device, config: dict[str, Any]) -> CellResult:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = options.cudnn_benchmark
    warmup_policy, measure_policy = options.policies(device.type)
    setup_s: dict[str, float] = {}
    config["setup_s"] = setup_s  # where a cell's time outside the measurements goes
    began = time.perf_counter()
    prepared = prepare(cell, options, device)
    setup_s["build_and_inputs"] = time.perf_counter() - began
    config["image_size"] = list(prepared.image_size)
    config["model_notes"] = prepared.spec.notes
    faults.maybe_trigger(cell.id)  # test-only, see bench/faults.py

    postprocess = None
    if prepared.spec.is_detector and cell.mode == "infer":
        began = time.perf_counter()
        with autocast_context(cell, device):
            postprocess = _calibrate_postprocess(prepared, config)
        # these forwards come first, so cuDNN autotuning happens here rather than in first_call_s
        setup_s["postprocess_calibration"] = time.perf_counter() - began
    began = time.perf_counter()
    flop_count = _count_flops(cell, prepared, options, config)
    setup_s["flop_count"] = time.perf_counter() - began

    graph_breaks = None
    if cell.compile == "compiled":
        _reset_dynamo_counters()
        prepared.runnable = torch.compile(prepared.model, mode=options.compile_mode)

    # after calibration, so the adapter's notes carry the threshold it settled on
    config["model_runtime_notes"] = dict(getattr(prepared.model, "runtime_notes", None) or {})
    step = make_step(cell, prepared, device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    first_call_s, _ = timing.time_first_call(step, sync)
    warm = timing.warm_up(step, sync, warmup_policy)
    if cell.compile == "compiled":
        graph_breaks = graph_break_count()

    tracker = _telemetry_tracker(options, device, config)
    with memory.PeakMemoryTracker(device) as mem, tracker or contextlib.nullcontext():
        if device.type == "cuda":
            run = timing.measure_cuda_events(step, measure_policy, warm.median_ms or 1.0, device)
        else:
            run = timing.measure_perf_counter(step, sync, measure_policy)
    images = cell.batch_size * len(run.times_ms)

    latency = stats.latency_stats(run.times_ms)
    rate = stats.throughput(run.times_ms, cell.batch_size)
    config["measurement"] = {**run.describe(), "memory": mem.describe(),
                             "wall_throughput_ips": images / run.wall_s if run.wall_s > 0 else None}
    if cell.mode == "train":
        config["final_loss"] = float(run.last_output.detach().float().item())

    result = CellResult(
        cell,
        times_ms=run.times_ms,
        latency=latency,
        throughput_ips=rate.median_ips,
        throughput_ips_p10=rate.p10_ips,
        throughput_ips_p90=rate.p90_ips,
        timer=run.timer,
        first_call_s=first_call_s,
        compile_s=timing.compile_seconds(first_call_s, latency.median_ms) if cell.compile == "compiled" else None,
        warmup_iterations=warm.iterations,
        warmup_s=warm.seconds,
        warmup_converged=warm.converged,
        graph_breaks=graph_breaks,
        peak_memory_bytes=mem.peak_bytes,
        device=device_name(device),
        telemetry=tracker.summary(images) if tracker is not None else None,
        config=config,
    )
    config["warmup_stop_reason"] = warm.stop_reason
    if postprocess is not None:
        result.postprocess = postprocess
    if cell.mode == "infer" and prepared.spec.count_detections is not None:
        counts = prepared.spec.count_detections(run.last_output)
        result.detections_per_image = {"mean": sum(counts) / len(counts), "min": float(min(counts)),
                                       "max": float(max(counts))}
    if flop_count is not None:
        _fill_flops(result, flop_count, cell, device)
    return result


# --- helpers composed above -------------------------------------------------------------------------------


def resolved_config(cell: Cell, options: RunOptions, device: torch.device) -> dict[str, Any]:
    """The fully resolved configuration this cell runs with (recorded in CellResult.config)."""
    warmup_policy, measure_policy = options.policies(device.type)
    config: dict[str, Any] = {
        "cell_id": cell.id,
        "options": options.to_dict(),
        "profile": options.profile,
        "seed": options.seed,
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "warmup_policy": timing.policy_dict(warmup_policy),
        "measure_policy": timing.policy_dict(measure_policy),
        "cudnn_benchmark": options.cudnn_benchmark if device.type == "cuda" else None,
        "tf32": tf32_flags() if device.type == "cuda" else None,
        "autocast_dtype": str(AUTOCAST_DTYPES[cell.precision]) if cell.precision in AUTOCAST_DTYPES else None,
        "compile_mode": options.compile_mode if cell.compile == "compiled" else None,
        "inference_context": "torch.no_grad()" if cell.mode == "infer" else None,
        "weights": options.weights.get(cell.model, "random init"),
        "isolation": options.isolation,
    }
    if cell.mode == "train":
        config["optimizer"] = {"name": options.optimizer, "lr": options.learning_rate,
                               "momentum": options.momentum if options.optimizer == "sgd" else None,
                               "grad_scaler": cell.precision == "amp-fp16"}
    return config


def _calibrate_postprocess(prepared: Prepared, config: dict[str, Any]) -> dict[str, Any] | None:
    load = calibrate_postprocess(prepared.model, prepared.spec, prepared.inputs)
    if load is None:
        config["postprocess_unavailable"] = "not applicable to this model (no torchvision post-processing)"
        return None
    return load.to_dict()


def _count_flops(cell: Cell, prepared: Prepared, options: RunOptions, config: dict[str, Any]) -> FlopCount | None:
    if not options.count_flops:
        config["flops"] = "disabled"
        return None
    return count_flops(prepared.model, prepared.inputs, cell.mode, targets=prepared.targets,
                       loss_fn=prepared.spec.training_loss)


def _fill_flops(result: CellResult, flop_count: FlopCount, cell: Cell, device: torch.device) -> None:
    result.flops_per_image = flop_count.flops_per_image
    result.flop_convention = getattr(flop_count, "convention", None)
    result.config["flops"] = {key: getattr(flop_count, key) for key in
                              ("backward_counted", "not_counted", "top_ops") if hasattr(flop_count, key)}
    if not result.flops_per_image or not result.throughput_ips:
        return
    result.achieved_tflops = result.flops_per_image * result.throughput_ips / 1e12
    if device.type != "cuda":
        return
    from envcheck.tables import gpu_spec  # noqa: PLC0415

    spec = gpu_spec(torch.cuda.get_device_name(device))
    if spec is None:
        result.config["peak_basis"] = "GPU not in envcheck.tables.GPU_SPECS"
        return
    basis = cell.precision
    if cell.precision == "fp32" and any(tf32_flags().values()):
        basis = "tf32"  # fp32 matmuls/convolutions may run on tensor cores in TF32
    result.peak_tflops = spec.peak_tflops(basis)
    result.config["peak_basis"] = f"{spec.name} dense {basis} datasheet peak"
    if result.peak_tflops:
        result.mfu = result.achieved_tflops / result.peak_tflops


def _telemetry_tracker(options: RunOptions, device: torch.device, config: dict[str, Any]) -> TelemetryTracker | None:
    if options.telemetry_hz == 0:
        config["telemetry"] = "disabled (--telemetry-hz 0)"
        return None
    if device.type != "cuda":
        config["telemetry"] = "not sampled on CPU"
        return None
    return TelemetryTracker([device.index or 0], options.telemetry_hz)


def _reset_dynamo_counters() -> None:
    import torch._dynamo  # noqa: PLC0415

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()


def graph_break_count() -> int:
    import torch._dynamo  # noqa: PLC0415

    return int(sum(torch._dynamo.utils.counters["graph_break"].values()))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform  # noqa: PLC0415

    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] if text else type(exc).__name__


def release_memory(device: torch.device) -> None:
    """Give back cached blocks after a failed cell so the next inline cell starts clean."""
    import gc  # noqa: PLC0415

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
