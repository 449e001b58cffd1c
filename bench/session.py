"""The one set-up path of a benchmark cell, and the one failure classifier.

:class:`CellSession` builds, sizes, calibrates post-processing, counts FLOPs, compiles (dynamo reset and
counters cleared first), makes the first call, warms up until stable and reads graph breaks; then
:meth:`CellSession.time_block` times blocks of iterations with the trackers (host canary, memory,
telemetry) around them, and :meth:`CellSession.result` turns everything measured so far into a
:class:`~bench.schema.CellResult`. The matrix (bench.engine), the interleaved ratios and the fidelity
check all use it; :func:`classify_failure` is how every one of them turns an exception into a result.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import importlib
import logging
import os
import platform
import statistics
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from bench import faults, memory, stats, timing
from bench.flops import FlopCount, count_flops
from bench.models import MissingExtraError, ModelSpec, get_model
from bench.models.batchnorm import recalibrate_batchnorm
from bench.models.registry import configure_size
from bench.options import RunOptions, import_model_modules
from bench.postprocess import PostprocessLoad, apply_score_thresh, calibrate_postprocess, restate_postprocess
from bench.schema import (
    CUDA_GRAPH_MODES,
    BlockRecord,
    Cell,
    CellResult,
    CompileDetails,
    Failure,
    FlopsInfo,
    Measurement,
    SetupTimes,
)
from bench.telemetry import TelemetryTracker

AUTOCAST_DTYPES = {"amp-fp16": torch.float16, "amp-bf16": torch.bfloat16}
CANARY_LOOPS = 20_000
# Images a group's BatchNorm statistics are set from, whatever the cells' batch sizes: statistics from a single
# image fit that image (SSDlite at batch 1: 1000 candidates on it, 4600 on the next image).
CALIBRATION_IMAGES = 8
# Images a group's FLOP count runs on (FLOPs per image do not depend on the batch): one for inference, two for a
# training step, whose BatchNorm layers in train mode need more than one value per channel (1x1 maps in SSDlite)
FLOP_COUNT_BATCH = {"infer": 1, "train": 2}
TAIL_CHARS = 4000
# errors after which the CUDA context is unusable: the worker must end (a fresh one takes the rest)
# inductor's artifact loggers that say why a graph runs without CUDA graphs ("skipping cudagraphs due to ...")
# (torch >= 2.8 names them "cudagraphs"; torch 2.5-2.7 log the same messages among other perf hints)
CUDAGRAPH_LOGGERS = ("torch._inductor.cudagraph_utils.__cudagraphs", "torch._inductor.scheduler.__cudagraphs",
                     "torch._inductor.cudagraph_utils.__perf_hints")
STICKY_CUDA_WORDS = ("illegal memory access", "device-side assert", "unspecified launch failure",
                     "cuda error: misaligned address", "an illegal instruction", "uncorrectable ecc")

ModelWrapper = Callable[[torch.nn.Module], torch.nn.Module]


@dataclass
class SharedModel:
    """An inference model built, sized and calibrated once, then run by every inference variant of a group."""

    model: torch.nn.Module
    image_size: tuple[int, int]
    owner: str  # id of the cell that built it
    device_bytes: int  # its parameters and buffers on the device
    batchnorm_layers: int = 0  # BatchNorm layers whose statistics were set once, on CALIBRATION_IMAGES images
    calibrations: dict[int, PostprocessLoad] = field(default_factory=dict)  # batch size -> FP32 calibration


@dataclass
class GroupShared:
    """What the sessions of one group (one worker process) set up once and share.

    Inference variants (precisions, batch sizes, compiled or not) run the same weights, so they share one
    model: one build and one BatchNorm recalibration for the group. Its score threshold is calibrated in FP32
    once per batch size (the candidates per image depend on the images), so the precisions and compile modes
    of one batch size run the same post-processing setting and their ratios compare the same work. Training
    variants update their weights and keep a model each. FLOPs per image do not depend on precision, compile
    or batch size: one count per mode, made on a small batch (FLOP_COUNT_BATCH)."""

    flops: dict[str, tuple[FlopCount, str]] = field(default_factory=dict)  # mode -> (count, owner cell id)
    # memory format -> the inference model in that layout; a second layout is a copy of the first (same weights,
    # BatchNorm statistics and calibrations), so contiguous and channels_last variants do the same work
    infer_models: dict[str, SharedModel] = field(default_factory=dict)

    @property
    def infer_model(self) -> SharedModel | None:
        """The first shared inference model (contiguous when the group has one)."""
        return self.infer_models.get("contiguous") or next(iter(self.infer_models.values()), None)


class NotApplicableError(RuntimeError):
    """A cell whose configuration does not apply to its model (channels_last without convolutions): skipped."""


@dataclass
class Prepared:
    """A cell's model and data, ready to iterate."""

    spec: ModelSpec
    model: torch.nn.Module  # the eager module (weights live here)
    runnable: torch.nn.Module  # the module, its wrapper (DDP) or its torch.compile wrapper
    inputs: Any
    targets: Any
    image_size: tuple[int, int]
    optimizer: torch.optim.Optimizer | None
    scaler: Any  # torch.amp.GradScaler for amp-fp16 training, else None


# --- small shared helpers ---------------------------------------------------------------------------------


def cell_device() -> torch.device:
    """cuda:0 (the launcher narrows CUDA_VISIBLE_DEVICES when needed) or the CPU."""
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"cpu ({cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def tf32_flags() -> dict[str, bool]:
    """Whether fp32 matmuls / cuDNN convolutions may run in TF32 (decides which peak an fp32 cell uses)."""
    return {"matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32)}


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] if text else type(exc).__name__


def _device_bytes(model: torch.nn.Module, device: torch.device) -> int:
    """Bytes of ``model``'s parameters and buffers on ``device`` (0 off the GPU)."""
    if device.type != "cuda":
        return 0
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors if t.is_cuda)


def _clone_tensors(tree: Any) -> Any:
    """``tree`` with every tensor cloned (lists, tuples and dicts of tensors, as detectors return)."""
    from torch.utils import _pytree  # noqa: PLC0415

    return _pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, tree)


def release_memory(device: torch.device) -> None:
    """Give back cached blocks after a failure so the next variant starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def host_canary_ms(loops: int = CANARY_LOOPS) -> float:
    """Milliseconds of a fixed pure-Python loop: the host's single-thread speed right now."""
    began = time.perf_counter()
    total = 0
    for i in range(loops):
        total += i * i
    return (time.perf_counter() - began) * 1000.0 if total >= 0 else 0.0


def _dynamo() -> Any:
    """torch._dynamo, imported on first use: eager-only workers skip its ~1 s import. (``import torch._dynamo``
    inside a function would make ``torch`` local to it: tests/test_imports.py.)"""
    return importlib.import_module("torch._dynamo")


def graph_break_count() -> int:
    return int(sum(_dynamo().utils.counters["graph_break"].values()))


def dynamo_frames_compiled() -> int:
    """Frames dynamo has converted since its counters were cleared: every cache miss (compile or recompile)."""
    return int(_dynamo().utils.counters["frames"]["total"])


def cudagraph_skip_count() -> int:
    return int(_dynamo().utils.counters["inductor"]["cudagraph_skips"])


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "cudagraph" in message:  # the older perf-hints logger carries other hints too
            self.into.append(message)


@contextlib.contextmanager
def cudagraph_skip_messages() -> Iterator[list[str]]:
    """Collect inductor's "skipping cudagraphs due to ..." messages while the block runs: reduce-overhead and
    max-autotune fall back to plain kernels for graphs CUDA graphs cannot take (e.g. data-dependent shapes),
    and the reason is what a user needs to see."""
    messages: list[str] = []
    handler = _Collect(messages)
    loggers = [logging.getLogger(name) for name in CUDAGRAPH_LOGGERS]
    for log in loggers:
        log.addHandler(handler)
    try:
        yield messages
    finally:
        for log in loggers:
            log.removeHandler(handler)


def configure_dynamo(*, reset: bool) -> None:
    """Before a compile: ``reset`` dynamo (``torch._dynamo.reset()``) if asked, clear its counters (graph breaks
    are then this compile's), and, since one process compiles many variants of a model, raise the recompile
    limit (every instance and shape is a cache entry) and keep shapes static, as a fresh process per cell
    would compile them."""
    dynamo = _dynamo()
    if reset:
        dynamo.reset()
    dynamo.utils.counters.clear()
    config = dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(int(getattr(config, name)), 256))
    config.automatic_dynamic_shapes = False


def is_sticky_cuda_error(exc: BaseException) -> bool:
    """An error that leaves the CUDA context unusable (the process must end)."""
    accelerator = getattr(torch, "AcceleratorError", None)
    if accelerator is not None and isinstance(exc, accelerator):
        return True
    text = str(exc).lower()
    return any(word in text for word in STICKY_CUDA_WORDS)


def classify_failure(cell: Cell, exc: BaseException, device: torch.device | str | None, *,
                     phase: str = "set-up") -> CellResult:
    """The one failure classifier: OOM -> ``oom``, a missing optional dependency -> ``skipped``, anything
    else -> ``error`` with the traceback tail. (``timeout`` comes from the launcher, which kills hangs.)"""
    name = device_name(device) if isinstance(device, torch.device) else device
    if isinstance(exc, (MissingExtraError, NotApplicableError)):
        return CellResult(cell, status="skipped", reason=str(exc), device=name)
    failure = Failure(error_type=type(exc).__name__, phase=phase,
                      traceback_tail="".join(traceback.format_exception(exc))[-TAIL_CHARS:])
    if memory.is_oom(exc):
        return CellResult(cell, status="oom", reason=one_line(exc), device=name, failure=failure,
                          memory_requested_bytes=memory.requested_bytes(str(exc)))
    return CellResult(cell, status="error", reason=f"{type(exc).__name__}: {one_line(exc)}", device=name,
                      failure=failure)


def resolved_config(cell: Cell, options: RunOptions, device: torch.device) -> dict[str, Any]:
    """The fully resolved configuration this cell runs with (recorded in CellResult.config)."""
    config: dict[str, Any] = {
        "cell_id": cell.id, "options": options.to_dict(), "profile": options.profile, "seed": options.seed,
        "device": device_name(device), "device_type": device.type, "torch": torch.__version__,
        "warmup_policy": timing.policy_dict(options.warmup_policy(device.type)),
        "rounds_policy": options.rounds_policy(device.type).to_dict(),
        "cudnn_benchmark": options.cudnn_benchmark if device.type == "cuda" else None,
        "memory_format": cell.memory_format,
        "tf32": tf32_flags() if device.type == "cuda" else None,
        "autocast_dtype": str(AUTOCAST_DTYPES[cell.precision]) if cell.precision in AUTOCAST_DTYPES else None,
        "compile_mode": cell.compile if cell.compiled else None,
        "inference_context": "torch.no_grad()" if cell.mode == "infer" else None,
        "weights": options.weights.get(cell.model, "random init"),
        "isolation": options.isolation,
    }
    if cell.mode == "train":
        config["optimizer"] = {"name": options.optimizer, "lr": options.learning_rate,
                               "momentum": options.momentum if options.optimizer == "sgd" else None,
                               "grad_scaler": cell.precision == "amp-fp16"}
    return config


# --- building blocks of the set-up ------------------------------------------------------------------------


def to_memory_format(model: torch.nn.Module, memory_format: str, model_name: str) -> None:
    """Put a convolutional model's weights in ``memory_format`` (channels_last: NHWC). Convolutions follow their
    weights' layout, so a detector fed a list of [3, H, W] images that its transform batches runs NHWC too."""
    if memory_format == "contiguous":
        return
    if not any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        raise NotApplicableError(f"{memory_format} applies to convolutional models; {model_name} has no Conv2d layer")
    model.to(memory_format=torch.channels_last)


def inputs_in_format(inputs: Any, memory_format: str) -> Any:
    """Batched 4-D image inputs in ``memory_format``; lists of 3-D images (detectors batch them inside) as given."""
    if memory_format == "channels_last" and isinstance(inputs, torch.Tensor) and inputs.dim() == 4:
        return inputs.contiguous(memory_format=torch.channels_last)
    return inputs


def prepare(cell: Cell, options: RunOptions, device: torch.device, shared: SharedModel | None = None) -> Prepared:
    """Build the seeded model at the cell's size (or take the group's ``shared`` one), move it, set its mode,
    make inputs once on the device."""
    spec = get_model(cell.model)
    if shared is not None:
        model, size = shared.model, shared.image_size
    else:
        torch.manual_seed(options.seed)
        model = spec.build(options.weights.get(cell.model))
        size = configure_size(model, spec, cell.image_size)
        model.to(device)
        to_memory_format(model, cell.memory_format, cell.model)
    model.train(cell.mode == "train")
    batch = cell.batch_size
    if not isinstance(batch, int):  # a bsmax cell is searched by bench.batch_search, one concrete batch per probe
        raise ValueError(f"{cell.id}: batch size {batch!r} must be resolved before set-up (bench.batch_search)")
    generator = torch.Generator(device=device).manual_seed(options.seed)
    inputs = inputs_in_format(spec.make_inputs(batch, size, device, generator), cell.memory_format)
    targets = spec.make_targets(batch, size, device, generator) if cell.mode == "train" else None
    optimizer: torch.optim.Optimizer | None = None
    scaler = None
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
    # CUDA-graph modes: each iteration is a new step for cudagraph trees, so replays never wait on outputs of an
    # earlier iteration that nobody reads (torch.compiler.cudagraph_mark_step_begin's documented use)
    mark_step = torch.compiler.cudagraph_mark_step_begin if cell.compile in CUDA_GRAPH_MODES else None
    if cell.mode == "infer":

        def infer() -> Any:
            if mark_step is not None:
                mark_step()
            with torch.no_grad(), autocast_context(cell, device):
                return prepared.runnable(prepared.inputs)

        return infer

    optimizer, scaler = prepared.optimizer, prepared.scaler
    assert optimizer is not None

    def train() -> Any:
        if mark_step is not None:
            mark_step()
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(cell, device):
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
        self.peak_bytes: int | None = None
        self.telemetry: dict[str, Any] | None = None
        self.telemetry_round: int | None = None
        self.last_output: Any = None
        self.origin_s: float | None = None  # perf_counter of the group's first block (start offsets)
        self.resident_bytes = 0  # what this session keeps allocated on the device between blocks
        self.config = resolved_config(cell, options, device)

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
        faults.maybe_trigger(cell.id)  # test-only, see bench/faults.py

        if shares_model and reused is None:
            self.shared.infer_models[cell.memory_format] = SharedModel(prepared.model, prepared.image_size, cell.id,
                                                                       _device_bytes(prepared.model, device))
        if prepared.spec.is_detector and cell.mode == "infer":
            mark = time.perf_counter()
            load = self._postprocess_load(reused)
            self.postprocess = load.to_dict() if load is not None else None
            # these forwards come first, so cuDNN autotuning happens here rather than in the first call
            self.setup.postprocess_calibration_s = time.perf_counter() - mark
        self._count_flops()

        sync = self._sync
        if cell.compiled:
            configure_dynamo(reset=self.reset_dynamo)
            # compiling a Module gives a Module (OptimizedModule); torch.compile's signature says Callable
            prepared.runnable = cast(torch.nn.Module, torch.compile(prepared.runnable, mode=cell.compile))
        # after calibration, so the adapter's notes carry the threshold it settled on
        self.runtime_notes = dict(getattr(prepared.model, "runtime_notes", None) or {})
        self.step = faults.slow_step(cell.id, make_step(cell, prepared, device), self._sync)  # test-only hook
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

    def _copy_in_layout(self, memory_format: str) -> SharedModel:
        """The group's shared inference model copied into ``memory_format``: the same weights, BatchNorm
        statistics and per-batch calibrations (the same dict), so the layouts' ratios compare the same work."""
        source = self.shared.infer_model
        assert source is not None
        model = copy.deepcopy(source.model)
        to_memory_format(model, memory_format, self.cell.model)
        shared = SharedModel(model, source.image_size, f"{self.cell.id} (copy of {source.owner}'s model)",
                             _device_bytes(model, self.device), source.batchnorm_layers, source.calibrations)
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
        if reused is None:  # the builder: BatchNorm statistics once, from a fixed batch (see CALIBRATION_IMAGES)
            generator = torch.Generator(device=device).manual_seed(self.options.seed)
            images = p.spec.make_inputs(CALIBRATION_IMAGES, p.image_size, device, generator)
            shared.batchnorm_layers = recalibrate_batchnorm(p.model, images)
            del images
        batch = int(cell.batch_size)
        known = shared.calibrations.get(batch)
        if known is None:  # FP32 whatever the cell: the threshold must not depend on which variant came first
            load = calibrate_postprocess(p.model, p.spec, p.inputs, recalibrate_bn=False)
            if load is None:
                return None
            known = shared.calibrations[batch] = dataclasses.replace(
                load, batchnorm_layers_recalibrated=shared.batchnorm_layers, calibrated_by=cell.id)
            self.threshold = known
            if cell.precision == "fp32":
                return known
        self.threshold = known
        self._set_threshold()
        with autocast_context(cell, device):
            return restate_postprocess(p.model, p.spec, p.inputs, known, known.calibrated_by or cell.id)

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

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @property
    def estimate_ms(self) -> float:
        """A steady iteration's milliseconds, from the warm-up's last iterations."""
        return (self.warm.median_ms if self.warm else None) or 1.0

    def iterations_for(self, block_s: float, min_iterations: int) -> int:
        """Iterations that fill about ``block_s`` seconds (at least ``min_iterations``)."""
        return max(min_iterations, round(block_s * 1000.0 / self.estimate_ms))

    # -- timing --------------------------------------------------------------------------------------------
    def time_steps(self, iterations: int) -> list[float]:
        """Per-iteration milliseconds of ``iterations`` steps, not recorded as a block (a collective warm-up)."""
        if self.step is None:
            raise RuntimeError(f"{self.cell.id}: time_steps before set_up")
        self._set_threshold()
        exact = timing.MeasurePolicy(iterations, 0.0, iterations, 1e9)
        if self.device.type == "cuda":
            return timing.measure_cuda_events(self.step, exact, self.estimate_ms, self.device).times_ms
        return timing.measure_perf_counter(self.step, self._sync, exact).times_ms

    def time_block(self, iterations: int, *, round_index: int = 0, telemetry: bool = False,
                   exact: bool = False) -> list[float]:
        """Per-iteration milliseconds of one block (CUDA events on a GPU, perf_counter + sync on the CPU).

        On the CPU a block that runs past twice its plan ends early (after 2 iterations) unless ``exact``:
        DDP ranks must all take the same number of steps, or the one with a step more waits in all-reduce forever.

        The host canary runs just before; peak memory is reset for the block and counts this session's own
        allocations only (other sessions of the group stay resident); ``telemetry`` samples NVML around it."""
        if self.step is None:
            raise RuntimeError(f"{self.cell.id}: time_block before set_up")
        faults.maybe_trigger(self.cell.id, f"round{round_index}")  # test-only, see bench/faults.py
        self._set_threshold()
        canary = host_canary_ms()
        device = self.device
        tracker = None
        if telemetry and device.type == "cuda" and self.options.telemetry_hz > 0:
            tracker = TelemetryTracker([device.index or 0], self.options.telemetry_hz)
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
                run = timing.measure_perf_counter(self.step, self._sync, policy)
        wall = time.perf_counter() - began
        if mem.peak_bytes is not None:
            own_peak = max(mem.peak_bytes - others, 0)
            self.peak_bytes = max(self.peak_bytes or 0, own_peak)
        if tracker is not None:
            self.telemetry = tracker.summary(int(self.cell.batch_size) * len(run.times_ms))
            self.telemetry_round = round_index
        if self.compile_details is not None:  # a guard that failed inside the block compiled again: count it
            self.compile_details.recompilations += dynamo_frames_compiled() - frames
        # CUDA-graph outputs live in a pool the next replay overwrites: keep a copy (outside the timed region)
        self.last_output = _clone_tensors(run.last_output) if self.cell.compile in CUDA_GRAPH_MODES else run.last_output
        self.times_ms.extend(run.times_ms)
        self.blocks.append(BlockRecord(round=round_index, median_ms=statistics.median(run.times_ms),
                                       iterations=len(run.times_ms), host_canary_ms=round(canary, 4),
                                       start_offset_s=round(began - self.origin_s, 4), wall_s=round(wall, 5)))
        return run.times_ms

    # -- result --------------------------------------------------------------------------------------------
    def result(self) -> CellResult:
        """The cell's result from everything measured so far (status ok once a block was timed)."""
        cell, device = self.cell, self.device
        timer = "cuda-events" if device.type == "cuda" else "perf-counter+sync"
        result = CellResult(cell, status="ok", device=device_name(device), timer=timer, config=self.config,
                            first_call_s=self.first_call_s, graph_breaks=self.graph_breaks, setup=self.setup,
                            postprocess=self.postprocess, model_runtime_notes=self.runtime_notes,
                            flops_info=self.flops_info, telemetry=self.telemetry, peak_memory_bytes=self.peak_bytes)
        if self.warm is not None:
            result.warmup_iterations, result.warmup_s = self.warm.iterations, self.warm.seconds
            result.warmup_converged = self.warm.converged
        if not self.times_ms:
            result.status, result.reason = "error", "set up but never timed"
            return result
        timed_s = sum(b.wall_s for b in self.blocks)
        batch = int(cell.batch_size)
        images = batch * len(self.times_ms)
        result.times_ms = list(self.times_ms)
        result.latency = stats.latency_stats(self.times_ms)
        spread = stats.throughput(self.times_ms, batch)
        result.throughput_ips = statistics.median(batch * 1000.0 / b.median_ms for b in self.blocks)
        result.throughput_ips_p10, result.throughput_ips_p90 = spread.p10_ips, spread.p90_ips
        result.compile_details = self.compile_details
        if cell.compiled and self.first_call_s is not None:
            result.compile_s = timing.compile_seconds(self.first_call_s, result.latency.median_ms)
        result.measurement = Measurement(
            timer=timer, iterations=len(self.times_ms), timed_s=round(timed_s, 5),
            isolation=self.options.isolation, rounds=len({b.round for b in self.blocks}), blocks=list(self.blocks),
            wall_throughput_ips=images / timed_s if timed_s > 0 else None,
            memory_method=memory.PeakMemoryTracker.method + " minus other variants' resident memory"
            if device.type == "cuda" else "not measured on CPU",
            setup_wall_s=self.setup.total_s, telemetry_round=self.telemetry_round,
            warmup_stop_reason=self.warm.stop_reason if self.warm else None)
        if cell.mode == "train" and isinstance(self.last_output, torch.Tensor):
            result.measurement.final_loss = float(self.last_output.detach().float().item())
        if cell.mode == "infer" and self.prepared is not None and self.prepared.spec.count_detections is not None \
                and self.last_output is not None:
            counts = self.prepared.spec.count_detections(self.last_output)
            if counts:
                result.detections_per_image = {"mean": sum(counts) / len(counts), "min": float(min(counts)),
                                               "max": float(max(counts))}
        if self.options.telemetry_hz == 0:
            result.config["telemetry"] = "disabled (--telemetry-hz 0)"
        elif device.type != "cuda":
            result.config["telemetry"] = "not sampled on CPU"
        self._fill_flops(result)
        return result

    def _fill_flops(self, result: CellResult) -> None:
        count = self.flop_count
        if count is None:
            return
        result.flops_per_image = count.flops_per_image
        result.flop_convention = count.convention
        if not result.flops_per_image or not result.throughput_ips:
            return
        result.achieved_tflops = result.flops_per_image * result.throughput_ips / 1e12
        if self.device.type != "cuda":
            return
        from envcheck.tables import gpu_spec  # noqa: PLC0415

        spec = gpu_spec(torch.cuda.get_device_name(self.device))
        if spec is None:
            self.flops_info.peak_basis = "GPU not in envcheck.tables.GPU_SPECS"
            return
        basis = self.cell.precision
        if basis == "fp32" and any(tf32_flags().values()):
            basis = "tf32"  # fp32 matmuls/convolutions may run on tensor cores in TF32
        result.peak_tflops = spec.peak_tflops(basis)
        self.flops_info.peak_basis = f"{spec.name} dense {basis} datasheet peak"
        if result.peak_tflops:
            result.mfu = result.achieved_tflops / result.peak_tflops

    def close(self) -> None:
        """Drop the model, inputs and compiled code references so the memory can be given back."""
        self.prepared = None
        self.step = None
        self.last_output = None
