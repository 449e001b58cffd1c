"""Building a cell: the model (built once per group and shared by its inference variants), inputs, optimizer,
autocast and the step function one iteration runs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from detbench.bench.core.options import RunOptions
from detbench.bench.core.schema import CUDA_GRAPH_MODES, Cell
from detbench.bench.measure import timing
from detbench.bench.measure.flops import FlopCount
from detbench.bench.models import ModelSpec, get_model
from detbench.bench.models.postprocess import PostprocessLoad
from detbench.bench.models.registry import configure_size
from detbench.bench.runtime import device as host
from detbench.bench.runtime.device import device_name, tf32_flags
from detbench.bench.runtime.failures import HostMemoryError, NotApplicableError

AUTOCAST_DTYPES = {"amp-fp16": torch.float16, "amp-bf16": torch.bfloat16}
# Images a group's BatchNorm statistics are set from, whatever the cells' batch sizes: statistics from a single
# image fit that image (SSDlite at batch 1: 1000 candidates on it, 4600 on the next image).
CALIBRATION_IMAGES = 8
# Images a group's FLOP count runs on (FLOPs per image do not depend on the batch): one for inference, two for a
# training step, whose BatchNorm layers in train mode need more than one value per channel (1x1 maps in SSDlite)
FLOP_COUNT_BATCH = {"infer": 1, "train": 2}
INPUT_BYTES_PER_PIXEL = 3 * 4  # an input image: 3 channels of float32 (autocast casts inside the model)

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


def device_bytes(model: torch.nn.Module, device: torch.device) -> int:
    """Bytes of ``model``'s parameters and buffers on ``device`` (0 off the GPU)."""
    if device.type != "cuda":
        return 0
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors if t.is_cuda)


def clone_tensors(tree: Any) -> Any:
    """``tree`` with every tensor cloned (lists, tuples and dicts of tensors, as detectors return)."""
    from torch.utils import _pytree  # noqa: PLC0415

    return _pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, tree)


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
    if not isinstance(batch, int):  # a bsmax cell is searched (runtime.batch_search), a concrete batch per probe
        raise ValueError(f"{cell.id}: batch size {batch!r} must be resolved before set-up "
                         "(detbench.bench.runtime.batch_search)")
    check_host_memory(batch, size, device)
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


def check_host_memory(batch: int, size: tuple[int, int], device: torch.device) -> None:
    """On the CPU, refuse (HostMemoryError: the cell's ``oom``) a batch whose input images alone exceed the host's
    available memory, before allocating them; activations come on top, so this is a lower bound."""
    if device.type != "cpu":
        return
    needed = batch * size[0] * size[1] * INPUT_BYTES_PER_PIXEL
    available = host.available_memory_bytes()
    if available is not None and needed > available:
        raise HostMemoryError(f"not allocated: batch {batch} of {size[0]}x{size[1]} images needs {needed / 2**30:.1f} "
                              f"GiB for its input alone, more than the host's {available / 2**30:.1f} GiB available "
                              "(MemAvailable in /proc/meminfo)", needed)


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
