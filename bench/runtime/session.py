"""A cell set up once, then timed in blocks: :class:`CellSession`.

:meth:`CellSession.set_up` builds (detbench.bench.runtime.build), sizes, calibrates post-processing, counts FLOPs,
compiles (dynamo reset and counters cleared first), makes the first call, warms up until stable and reads
graph breaks; :meth:`CellSession.time_block` times one block of iterations with the trackers (host canary,
memory, telemetry) around it; :meth:`CellSession.result` assembles what was measured so far
(detbench.bench.runtime.assemble). The engine, the ranks, the A/B sides and the studies all use it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any, cast

import torch

from detbench.bench.core.options import RunOptions, import_model_modules
from detbench.bench.core.schema import (
    CUDA_GRAPH_MODES,
    BlockRecord,
    Cell,
    CellResult,
    CompileDetails,
    FlopsInfo,
    SetupTimes,
)
from detbench.bench.measure import memory, timing
from detbench.bench.measure.flops import FlopCount, count_flops
from detbench.bench.measure.host import host_canary_ms
from detbench.bench.measure.telemetry import TelemetryTracker
from detbench.bench.models import get_model
from detbench.bench.models.batchnorm import recalibrate_batchnorm
from detbench.bench.models.postprocess import (
    CalibrationCache,
    CalibrationKey,
    PostprocessLoad,
    apply_score_thresh,
    calibrate_postprocess,
    restate_postprocess,
)
from detbench.bench.runtime import assemble, faults
from detbench.bench.runtime.build import (
    CALIBRATION_IMAGES,
    FLOP_COUNT_BATCH,
    GroupShared,
    ModelWrapper,
    Prepared,
    SharedModel,
    autocast_context,
    clone_tensors,
    device_bytes,
    make_step,
    prepare,
    resolved_config,
    to_memory_format,
)
from detbench.bench.runtime.deploy import Deployed, deploy
from detbench.bench.runtime.dynamo import (
    configure_dynamo,
    cudagraph_skip_count,
    cudagraph_skip_messages,
    dynamo_frames_compiled,
    graph_break_count,
)

# --- the session ------------------------------------------------------------------------------------------


class CellSession:
    """One cell set up once, then timed in blocks; :meth:`result` at any time gives what was measured.

    Args:
        cell: the cell to run.
        options: the run's options (policies, seed, compile mode, telemetry rate ...).
        device: where to run (``cuda:N`` or the CPU).
        wrap_model: applied to the built model before compile (e.g. DistributedDataParallel).
        shared: what the sessions of one group share (:class:`GroupShared`: one calibrated inference model,
            one FLOP count per mode); None sets everything up for this cell alone.
        reset_dynamo: ``torch._dynamo.reset()`` before compiling; a group passes False once an earlier
            compiled variant is alive in the process (a reset would discard its compiled code).
        warm_up: warm up until stable at the end of :meth:`set_up`; DDP ranks pass False and warm up together
            (:meth:`time_steps`), since ranks that stop after different step counts deadlock in all-reduce.
    """

    def __init__(self, cell: Cell, options: RunOptions, device: torch.device, *,
                 wrap_model: ModelWrapper | None = None, shared: GroupShared | None = None,
                 reset_dynamo: bool = True, warm_up: bool = True) -> None:
        self.cell = cell
        self.options = options
        self.device = device
        self.wrap_model = wrap_model
        self.shared = shared if shared is not None else GroupShared()
        self.reset_dynamo = reset_dynamo
        self.warm_up = warm_up
        self.prepared: Prepared | None = None
        self.step: Callable[[], Any] | None = None
        self.setup = SetupTimes()
        self.first_call_s: float | None = None
        self.warm: timing.WarmupResult | None = None
        self.graph_breaks: int | None = None
        self.compile_details: CompileDetails | None = None
        self.postprocess: dict[str, Any] | None = None
        self.threshold: PostprocessLoad | None = None  # set on a shared model before each use (_set_threshold)
        self.flop_count: FlopCount | None = None
        self.flops_info = FlopsInfo()
        self.runtime_notes: dict[str, Any] = {}
        self.blocks: list[BlockRecord] = []
        self.times_ms: list[float] = []
        self.resumed_rounds = 0  # rounds adopted from a cut worker's partial result (:meth:`adopt`)
        self.peak_bytes: int | None = None
        self.telemetry: dict[str, Any] | None = None
        self.telemetry_round: int | None = None
        self.last_output: Any = None
        self.origin_s: float | None = None  # perf_counter of the group's first block (start offsets)
        self.resident_bytes = 0  # what this session keeps allocated on the device between blocks
        # GPUs sampled in a telemetry block: this one (None), or a rank 0's whole node, or none ([])
        self.telemetry_gpus: list[int] | None = None
        self.config = resolved_config(cell, options, device)
        self.deployed: Deployed | None = None  # a deployment runtime's loaded artifact (cells of runtime != eager)

    # -- set-up --------------------------------------------------------------------------------------------
    def set_up(self) -> None:
        """Build -> size -> calibrate -> FLOPs -> compile -> first call -> warm-up -> graph breaks. Raises;
        turn the exception into a result with :func:`classify_failure`."""
        cell, device, options = self.cell, self.device, self.options
        import_model_modules(options.model_modules)
        began = time.perf_counter()
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = options.cudnn_benchmark
            torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        # detectors with their own calibration (DETR family, YOLO) keep their threshold elsewhere: a model each
        shares_model = cell.mode == "infer" and self.wrap_model is None and get_model(cell.model).calibrate is None
        reused = self.shared.infer_models.get(cell.memory_format) if shares_model else None
        copied = shares_model and reused is None and bool(self.shared.infer_models)
        if copied:  # the group's model in this cell's layout: a copy, allocated (and counted) by this cell
            reused = self._copy_in_layout(cell.memory_format)
        prepared = prepare(cell, options, device, reused)
        if self.wrap_model is not None:
            prepared.runnable = self.wrap_model(prepared.model)
        self.prepared = prepared
        self.config["image_size"] = list(prepared.image_size)
        self.config["model_notes"] = prepared.spec.notes
        self.config["model_built_by"] = reused.owner if reused is not None else cell.id
        if cell.memory_format != "contiguous":
            self.config["memory_format_applied"] = ("model weights; 4-D inputs" if prepared.spec.task != "detection"
                                                    else "model weights (the detector batches its own input)")
        self.setup.build_s = time.perf_counter() - began
        faults.maybe_trigger(cell.id)  # test-only, see bench/runtime/faults.py

        if shares_model and reused is None:
            self.shared.infer_models[cell.memory_format] = SharedModel(prepared.model, prepared.image_size, cell.id,
                                                                       device_bytes(prepared.model, device))
        if prepared.spec.is_detector and cell.mode == "infer":
            mark = time.perf_counter()
            load = self._postprocess_load(reused)
            self.postprocess = load.to_dict() if load is not None else None
            # these forwards come first, so cuDNN autotuning happens here rather than in the first call
            self.setup.postprocess_calibration_s = time.perf_counter() - mark
        self._count_flops()
        if cell.deployed:
            self._deploy()

        sync = self.sync
        if cell.compiled:
            configure_dynamo(reset=self.reset_dynamo)
            # compiling a Module gives a Module (OptimizedModule); torch.compile's signature says Callable
            prepared.runnable = cast(torch.nn.Module, torch.compile(prepared.runnable, mode=cell.compile))
        # after calibration, so the adapter's notes carry the threshold it settled on
        self.runtime_notes = dict(getattr(prepared.model, "runtime_notes", None) or {})
        self.step = faults.slow_step(cell.id, make_step(cell, prepared, device), self.sync)  # test-only hook
        self._set_threshold()
        collecting: contextlib.AbstractContextManager[list[str]] = (
            cudagraph_skip_messages() if cell.compiled else contextlib.nullcontext([]))
        with collecting as skips:
            self.first_call_s, _ = timing.time_first_call(self.step, sync)
            frames = dynamo_frames_compiled() if cell.compiled else 0
            if self.warm_up:
                self.warm = timing.warm_up(self.step, sync, options.warmup_policy(device.type))
        if cell.compiled:
            self.graph_breaks = graph_break_count()
            self.compile_details = CompileDetails(
                mode=cell.compile, recompilations=dynamo_frames_compiled() - frames,
                cudagraph_skips=cudagraph_skip_count() if cell.compile in CUDA_GRAPH_MODES else None,
                cudagraph_skip_reasons="; ".join(dict.fromkeys(skips)) or None)
        if device.type == "cuda":
            # a shared model's weights were allocated by the session that built it; every session counts them
            # as its own, so each cell's peak memory includes the weights it runs
            self.resident_bytes = max(torch.cuda.memory_allocated(device) - before, 0) + (
                reused.device_bytes if reused is not None and not copied else 0)
        self.setup.total_s = time.perf_counter() - began

    def _deploy(self) -> None:
        """Export the (calibrated) model on the cell's runtime, load it back, check parity: the artifact then runs
        every iteration (detbench.bench.runtime.deploy; NotSupportedError when the runtime cannot take the model)."""
        p = self.prepared
        assert p is not None
        self._set_threshold()  # the exported artifact keeps the threshold this cell's batch size was calibrated to
        self.deployed = deploy(p.model, p.inputs, self.cell.runtime, self.device, precision=self.cell.precision,
                               cold_timeout_s=self.options.cell_timeout_s)
        p.runnable = _DeployedModule(self.deployed.runner)
        self.config["deployed"] = self.deployed.info.exported

    def _copy_in_layout(self, memory_format: str) -> SharedModel:
        """The group's shared inference model copied into ``memory_format``: the same weights, BatchNorm
        statistics and per-batch calibrations (the same dict), so the layouts' ratios compare the same work."""
        source = self.shared.infer_model
        assert source is not None
        model = copy.deepcopy(source.model)
        to_memory_format(model, memory_format, self.cell.model)
        shared = SharedModel(model, source.image_size, f"{self.cell.id} (copy of {source.owner}'s model)",
                             device_bytes(model, self.device), source.batchnorm_layers, source.calibrations)
        self.shared.infer_models[memory_format] = shared
        return shared

    def _postprocess_load(self, reused: SharedModel | None) -> PostprocessLoad | None:
        """Calibrate the post-processing threshold for this cell's batch size, or take the group's calibration
        of that batch size and restate the load on this cell's precision (see :class:`GroupShared`)."""
        p, cell, device = self.prepared, self.cell, self.device
        assert p is not None
        shared = reused or self.shared.infer_models.get(cell.memory_format)
        if shared is None or shared.model is not p.model:  # a model of its own: calibrated on its batch, as it runs
            with autocast_context(cell, device):
                return calibrate_postprocess(p.model, p.spec, p.inputs)
        cache, key = CalibrationCache.from_env(), self._calibration_key()
        if reused is None:  # the builder: BatchNorm statistics once, from a fixed batch (see CALIBRATION_IMAGES)
            layers = cache.load_batchnorm(key, p.model) if cache else None
            if layers is None:
                generator = torch.Generator(device=device).manual_seed(self.options.seed)
                images = p.spec.make_inputs(CALIBRATION_IMAGES, p.image_size, device, generator)
                layers = recalibrate_batchnorm(p.model, images)
                del images
                if cache:
                    cache.store_batchnorm(key, p.model)
            shared.batchnorm_layers = layers
        batch = int(cell.batch_size)
        known = shared.calibrations.get(batch)
        if known is None and cache:  # calibrated by an earlier worker of the run (a repeat, a resumed run)
            known = cache.load(dataclasses.replace(key, batch_size=batch))
            if known is not None:
                known = shared.calibrations[batch] = dataclasses.replace(
                    known, batchnorm_layers_recalibrated=shared.batchnorm_layers)
                self.config["postprocess_calibration"] = f"cached ({cache.folder})"
                if cell.precision == "fp32" and known.calibrated_by == cell.id:  # this cell's own calibration, as
                    self.threshold = known  # calibrating again would measure it (same weights, images, threshold)
                    return known
        if known is None:  # FP32 whatever the cell: the threshold must not depend on which variant came first
            load = calibrate_postprocess(p.model, p.spec, p.inputs, recalibrate_bn=False)
            if load is None:
                return None
            known = shared.calibrations[batch] = dataclasses.replace(
                load, batchnorm_layers_recalibrated=shared.batchnorm_layers, calibrated_by=cell.id)
            if cache:
                cache.store(dataclasses.replace(key, batch_size=batch), known)
            self.threshold = known
            if cell.precision == "fp32":
                return known
        self.threshold = known
        self._set_threshold()
        with autocast_context(cell, device):
            return restate_postprocess(p.model, p.spec, p.inputs, known, known.calibrated_by or cell.id)

    def _calibration_key(self) -> CalibrationKey:
        """The key of this group's calibrations in the run's cache (see
        detbench.bench.models.postprocess.CalibrationCache)."""
        assert self.prepared is not None
        device = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else self.device.type
        height, width = self.prepared.image_size
        return CalibrationKey(self.cell.model, (int(height), int(width)), self.options.seed,
                              self.options.weights.get(self.cell.model), device, CALIBRATION_IMAGES)

    def _set_threshold(self) -> None:
        """Put this cell's score threshold on a shared model: the group's batch sizes each have their own, and
        the variants take turns on one model (a compiled variant's guard sees the value it was compiled with)."""
        if self.threshold is not None and self.prepared is not None:
            apply_score_thresh(self.prepared.model, self.threshold)

    def _count_flops(self) -> None:
        assert self.prepared is not None
        if not self.options.count_flops:
            self.flops_info.disabled = True
            return
        mode = self.cell.mode
        mark = time.perf_counter()
        if mode in self.shared.flops:
            self.flop_count, owner = self.shared.flops[mode]
            self.flops_info.reused_from = owner
        else:  # per image, on a small batch: the count runs every op through Python, its cost grows with the batch
            p = self.prepared
            batch = FLOP_COUNT_BATCH[mode]
            generator = torch.Generator(device=self.device).manual_seed(self.options.seed)
            inputs = p.spec.make_inputs(batch, p.image_size, self.device, generator)
            targets = p.spec.make_targets(batch, p.image_size, self.device, generator) if mode == "train" else None
            self.flop_count = count_flops(p.model, inputs, mode, targets=targets, loss_fn=p.spec.training_loss)
            self.shared.flops[mode] = (self.flop_count, self.cell.id)
        self.setup.flop_count_s = time.perf_counter() - mark
        self.flops_info.backward_counted = self.flop_count.backward_counted
        self.flops_info.not_counted = self.flop_count.not_counted
        self.flops_info.top_ops = dict(self.flop_count.top_ops)

    def sync(self) -> None:
        """Wait for the device (a no-op on the CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @property
    def estimate_ms(self) -> float:
        """A steady iteration's milliseconds, from the warm-up's last iterations."""
        return (self.warm.median_ms if self.warm else None) or 1.0

    def iterations_for(self, block_s: float, min_iterations: int) -> int:
        """Iterations that fill about ``block_s`` seconds (at least ``min_iterations``)."""
        return max(min_iterations, round(block_s * 1000.0 / self.estimate_ms))

    def adopt(self, partial: CellResult) -> None:
        """Continue a cut worker's partial result of this cell: its blocks and iterations become this session's
        first, so :meth:`time_block` adds only the rounds it lacks (see :attr:`rounds_done`). The set-up figures
        are this session's own (the same set-up, made again)."""
        if partial.cell.id != self.cell.id:
            raise ValueError(f"cannot continue {partial.cell.id} as {self.cell.id}")
        m = partial.measurement
        if m is None or not m.blocks or len(partial.times_ms) != sum(b.iterations for b in m.blocks):
            return  # nothing timed (or iterations that do not add up): measured whole
        self.blocks = [dataclasses.replace(b) for b in m.blocks]
        self.times_ms = list(partial.times_ms)
        self.peak_bytes = partial.peak_memory_bytes
        self.telemetry, self.telemetry_round = partial.telemetry, m.telemetry_round
        self.resumed_rounds = len(self.rounds_done)

    @property
    def rounds_done(self) -> set[int]:
        """The rounds this cell has a block of."""
        return {b.round for b in self.blocks}

    # -- timing --------------------------------------------------------------------------------------------
    def time_steps(self, iterations: int) -> list[float]:
        """Per-iteration milliseconds of ``iterations`` steps, not recorded as a block (a collective warm-up)."""
        if self.step is None:
            raise RuntimeError(f"{self.cell.id}: time_steps before set_up")
        self._set_threshold()
        exact = timing.MeasurePolicy(iterations, 0.0, iterations, 1e9)
        if self.device.type == "cuda":
            return timing.measure_cuda_events(self.step, exact, self.estimate_ms, self.device).times_ms
        return timing.measure_perf_counter(self.step, self.sync, exact).times_ms

    def time_block(self, iterations: int, *, round_index: int = 0, telemetry: bool = False,
                   exact: bool = False) -> list[float]:
        """Per-iteration milliseconds of one block (CUDA events on a GPU, perf_counter + sync on the CPU).

        On the CPU a block that runs past twice its plan ends early (after 2 iterations) unless ``exact``:
        DDP ranks must all take the same number of steps, or the one with a step more waits in all-reduce forever.

        The host canary runs just before; peak memory is reset for the block and counts this session's own
        allocations only (other sessions of the group stay resident); ``telemetry`` samples NVML around it."""
        if self.step is None:
            raise RuntimeError(f"{self.cell.id}: time_block before set_up")
        faults.maybe_trigger(self.cell.id, f"round{round_index}")  # test-only, see bench/runtime/faults.py
        self._set_threshold()
        canary = host_canary_ms()
        device = self.device
        tracker = None
        gpus = self.telemetry_gpus if self.telemetry_gpus is not None else [device.index or 0]
        if telemetry and gpus and device.type == "cuda" and self.options.telemetry_hz > 0:
            tracker = TelemetryTracker(gpus, self.options.telemetry_hz)
        others = 0
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            others = max(torch.cuda.memory_allocated(device) - self.resident_bytes, 0)
        frames = dynamo_frames_compiled() if self.compile_details is not None else 0
        began = time.perf_counter()
        if self.origin_s is None:
            self.origin_s = began
        with memory.PeakMemoryTracker(device) as mem, tracker or contextlib.nullcontext():
            planned_s = iterations * self.estimate_ms / 1000.0
            if device.type == "cuda":  # events need the count up front; no host sync inside the block
                policy = timing.MeasurePolicy(iterations, 0.0, iterations, max(1.0, 20 * planned_s))
                run = timing.measure_cuda_events(self.step, policy, self.estimate_ms, device)
            else:  # a CPU shared with other work can slow down mid-run: the block may end at twice its plan
                policy = (timing.MeasurePolicy(iterations, 0.0, iterations, 1e9) if exact else
                          timing.MeasurePolicy(min(iterations, 2), planned_s, iterations, 2 * planned_s))
                run = timing.measure_perf_counter(self.step, self.sync, policy)
        wall = time.perf_counter() - began
        if mem.peak_bytes is not None:
            own_peak = max(mem.peak_bytes - others, 0)
            self.peak_bytes = max(self.peak_bytes or 0, own_peak)
        if tracker is not None:
            self.telemetry = tracker.summary(int(self.cell.batch_size) * len(run.times_ms) * len(gpus))
            self.telemetry_round = round_index
        if self.compile_details is not None:  # a guard that failed inside the block compiled again: count it
            self.compile_details.recompilations += dynamo_frames_compiled() - frames
        # CUDA-graph outputs live in a pool the next replay overwrites: keep a copy (outside the timed region)
        self.last_output = clone_tensors(run.last_output) if self.cell.compile in CUDA_GRAPH_MODES else run.last_output
        self.times_ms.extend(run.times_ms)
        self.blocks.append(BlockRecord(round=round_index, median_ms=statistics.median(run.times_ms),
                                       iterations=len(run.times_ms), host_canary_ms=round(canary, 4),
                                       start_offset_s=round(began - self.origin_s, 4), wall_s=round(wall, 5)))
        return run.times_ms

    # -- result --------------------------------------------------------------------------------------------
    def result(self) -> CellResult:
        """The cell's result from everything measured so far (status ok once a block was timed)."""
        return assemble.cell_result(self.cell, self.device, self.measured())

    def measured(self) -> assemble.Measured:
        """What this session has measured so far, as the record the result is assembled from."""
        spec = self.prepared.spec if self.prepared is not None else None
        return assemble.Measured(
            options=self.options, config=self.config, setup=self.setup, flops_info=self.flops_info,
            first_call_s=self.first_call_s, graph_breaks=self.graph_breaks, postprocess=self.postprocess,
            runtime_notes=self.runtime_notes, telemetry=self.telemetry, telemetry_round=self.telemetry_round,
            peak_bytes=self.peak_bytes, warm=self.warm, times_ms=self.times_ms, blocks=self.blocks,
            resumed_rounds=self.resumed_rounds, compile_details=self.compile_details,
            deploy=self.deployed.info if self.deployed is not None else None, flop_count=self.flop_count,
            last_output=self.last_output, count_detections=spec.count_detections if spec is not None else None)

    def close(self) -> None:
        """Drop the model, inputs and compiled code references so the memory can be given back."""
        self.prepared = None
        self.step = None
        self.last_output = None
        if self.deployed is not None:
            self.deployed.folder.cleanup()
            self.deployed = None


class _DeployedModule(torch.nn.Module):
    """A deployed runner where the step expects a module (Prepared.runnable)."""

    def __init__(self, runner: Callable[[Any], Any]) -> None:
        super().__init__()
        self.runner = runner

    def forward(self, inputs: Any) -> Any:
        return self.runner(inputs)
