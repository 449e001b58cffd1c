"""Profiles (shipped as data) and their expansion into benchmark cells, with filters and skip reasons.

A profile is a list of *blocks*; a block is a small product (models x modes x compile x precisions x
batch sizes). Options filter the expansion; nothing here touches the GPU except :func:`probe_capabilities`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from detbench.bench.core.options import OptionError
from detbench.bench.core.schema import (
    BATCH_MAX,
    COMPILE_ALIASES,
    COMPILE_MODES,
    CUDA_GRAPH_MODES,
    MAX_IMAGE_SIDE,
    MEMORY_FORMATS,
    MODES,
    PRECISIONS,
    RUNTIMES,
    Cell,
)

PROFILES = ("auto", "smoke", "quick", "full", "tune", "deploy")
# --compile: the modes, plus version 1's words: compiled (= --compile-mode, default "default") and both
COMPILE_CHOICES = (*COMPILE_MODES, "compiled", "both")
VISIBLE = -1  # in Block.gpus: every visible GPU count 1..N that is a power of two, and N


class MatrixError(OptionError):
    """Bad matrix input (unknown profile/model/mode/..., bad batch size); the message names valid choices."""


@dataclass(frozen=True)
class Block:
    """One product of the matrix; ``models=("*",)`` means every model the registry knows."""

    models: tuple[str, ...]
    modes: tuple[str, ...] = ("infer",)
    compile: tuple[str, ...] = ("eager",)
    precisions: tuple[str, ...] = ("fp32",)
    # BATCH_MAX: the largest batch that fits (detbench.bench.runtime.batch_search)
    batch_sizes: tuple[int | str, ...] = (1,)
    image_size: tuple[int, int] | None = None
    gpus: tuple[int, ...] = (1,)  # VISIBLE expands to the machine's counts (only counts > 1 of it here)
    memory_formats: tuple[str, ...] = ("contiguous",)
    # a model named by --models that the profile does not list gets the axes of the blocks marked so (none marked:
    # of the first block)
    for_unlisted: bool = False
    runtimes: tuple[str, ...] = ("eager",)  # deployment runtimes (RUNTIMES); others than eager: infer, eager compile


# --- the profiles, as data -------------------------------------------------------------------------------

# Detectors of torchvision's zoo; `full` also takes every other registered model.
TORCHVISION_DETECTORS = (
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "retinanet_resnet50_fpn",
    "retinanet_resnet50_fpn_v2",
    "fcos_resnet50_fpn",
    "ssd300_vgg16",
    "ssdlite320_mobilenet_v3_large",
    "maskrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn_v2",
    "keypointrcnn_resnet50_fpn",
)

# tune: the detectors of issue 18, and DETR (a transformer head, no NMS; the [detr] extra, nothing downloaded)
TUNE_MODELS = ("retinanet_resnet50_fpn", "fasterrcnn_resnet50_fpn", "fcos_resnet50_fpn", "detr_resnet50")

PROFILE_BLOCKS: dict[str, tuple[Block, ...]] = {
    # CPU-sized: what CI runs on 2 cores in well under two minutes.
    "smoke": (
        Block(("ssdlite320_mobilenet_v3_large",), ("infer",), batch_sizes=(1,), image_size=(320, 320)),
        Block(("ssdlite320_mobilenet_v3_large",), ("train",), batch_sizes=(2,), image_size=(160, 160)),
        Block(("fasterrcnn_mobilenet_v3_large_fpn",), ("infer",), batch_sizes=(1,), image_size=(224, 224)),
        Block(("resnet50",), ("infer", "train"), batch_sizes=(2,), image_size=(64, 64)),
    ),
    # The configuration search (issue 18), sized for ~9 minutes per model on one H100 (docs/bench.md): at batch 8,
    # eager fp32/bf16 x contiguous/channels_last, torch.compile default bf16 in both layouts, reduce-overhead (CUDA
    # graphs) bf16 channels_last, all interleaved in one worker per model; then the largest batch that fits for
    # eager bf16 channels_last. max-autotune modes are left out: several minutes of autotuning per model each.
    "tune": (
        Block(TUNE_MODELS, ("infer",), ("eager",), ("fp32", "amp-bf16"), (8,),
              memory_formats=("contiguous", "channels_last"), for_unlisted=True),
        Block(TUNE_MODELS, ("infer",), ("default",), ("amp-bf16",), (8,),
              memory_formats=("contiguous", "channels_last"), for_unlisted=True),
        Block(TUNE_MODELS, ("infer",), ("reduce-overhead",), ("amp-bf16",), (8,), memory_formats=("channels_last",),
              for_unlisted=True),
        Block(TUNE_MODELS, ("infer",), ("eager",), ("amp-bf16",), (BATCH_MAX,), memory_formats=("channels_last",),
              for_unlisted=True),
    ),
    # About 16 minutes on one H100 (measured, docs/bench.md; sized for 10 from an estimate): every detector eager
    # fp32 and bf16 at batch 1 and 8 (ratios paired inside each model's worker), compiled fp32 for three,
    # a batch sweep for two detectors (throughput-vs-batch lines), one training-step pair; on a multi-GPU
    # machine, the same two detectors' bf16 training step and inference on every visible GPU count.
    "quick": (
        Block(TORCHVISION_DETECTORS, ("infer",), ("eager",), ("fp32", "amp-bf16"), (1, 8)),
        Block(("retinanet_resnet50_fpn", "fcos_resnet50_fpn", "fasterrcnn_resnet50_fpn"), ("infer",), ("default",),
              ("fp32",), (8,)),
        Block(("retinanet_resnet50_fpn", "fasterrcnn_resnet50_fpn"), ("infer",), ("eager",), ("fp32",),
              (1, 2, 4, 8, 16)),
        Block(("fasterrcnn_resnet50_fpn",), ("train",), ("eager",), ("fp32", "amp-bf16"), (4,)),
        Block(("retinanet_resnet50_fpn", "fasterrcnn_resnet50_fpn"), ("infer", "train"), ("eager",), ("amp-bf16",),
              (8,), gpus=(VISIBLE,)),
    ),
    # Which way to ship each detector (issue 35): every torchvision detector on every deployment runtime, inference at
    # batch 1, FP32, at 320x320: the whole profile took 19 min 43 s on the 2-core CPU VM (docs/runtimes.md).
    "deploy": (
        Block(TORCHVISION_DETECTORS, ("infer",), ("eager",), ("fp32",), (1,), image_size=(320, 320),
              runtimes=RUNTIMES),
    ),
    # Everything, where memory allows (cells that do not fit are recorded as `oom`).
    "full": (
        Block(("*",), MODES, ("eager", "default"), PRECISIONS, (1, 2, 4, 8, 16)),
    ),
}


# --- run-wide selections (from command-line options) ------------------------------------------------------


@dataclass(frozen=True)
class MatrixFilters:
    """Restrictions from the command line; None = keep what the profile says."""

    models: tuple[str, ...] | None = None
    modes: tuple[str, ...] | None = None
    precisions: tuple[str, ...] | None = None
    compile: tuple[str, ...] | None = None  # compile modes (see parse_compile); None = the profile's choice
    batch_sizes: tuple[int | str, ...] | None = None  # integers and BATCH_MAX
    memory_formats: tuple[str, ...] | None = None
    image_size: tuple[int, int] | None = None
    gpus: tuple[int, ...] | None = None  # --gpus: replaces every block's GPU counts
    runtimes: tuple[str, ...] | None = None  # --runtimes: deployment runtimes (inference cells, eager compile)

    def __post_init__(self) -> None:
        _check_all("mode", self.modes, MODES)
        _check_all("runtime", self.runtimes, RUNTIMES)
        _check_all("precision", self.precisions, PRECISIONS)
        if isinstance(self.compile, str):  # one word as on the command line: "eager", "both", "reduce-overhead"
            object.__setattr__(self, "compile", parse_compile(self.compile))
        _check_all("compile mode", self.compile, COMPILE_MODES)
        _check_all("memory format", self.memory_formats, MEMORY_FORMATS)
        for size in self.batch_sizes or ():
            if size != BATCH_MAX and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
                raise MatrixError(f"bad batch size {size!r}; batch sizes are positive integers or {BATCH_MAX}, "
                                  "e.g. 1,8,max")
        for count in self.gpus or ():
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise MatrixError(f"bad GPU count {count!r}; GPU counts are positive integers, e.g. 1,2,4")


def resolve_profile(profile: str, cuda_available: bool) -> str:
    """``auto`` is smoke without CUDA and quick with it; other names are checked and returned."""
    if profile not in PROFILES:
        raise MatrixError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    if profile == "auto":
        return "quick" if cuda_available else "smoke"
    return profile


def visible_counts(gpu_count: int) -> tuple[int, ...]:
    """GPU counts worth a cell on a machine with ``gpu_count`` GPUs: powers of two up to it, and itself."""
    counts = {n for n in (1, 2, 4, 8, 16, 32, 64) if n <= gpu_count} | ({gpu_count} if gpu_count >= 1 else set())
    return tuple(sorted(counts)) or (1,)


def expand(profile: str, filters: MatrixFilters, known_models: Iterable[str], gpu_count: int = 1) -> list[Cell]:
    """The cells of a (resolved) profile after filters, without duplicates, eager before compiled.

    ``--modes/--precisions/--compile/--batch-sizes/--image-size`` replace that axis in every block of the
    profile; ``--models`` keeps only the named models, and names models explicitly: a model the profile does not
    list still runs, with the axes of the blocks marked ``for_unlisted`` (tune: all of them), else of the first
    block (so ``--models X`` always yields cells).
    ``--gpus`` replaces every block's GPU counts; without it a block's ``VISIBLE`` counts are those of
    :func:`visible_counts` above one (the 1-GPU cells come from the other blocks and :func:`add_gpu_twins`).
    """
    known = tuple(known_models)
    if profile not in PROFILE_BLOCKS:
        raise MatrixError(f"unknown profile {profile!r}; valid: {', '.join(p for p in PROFILES if p != 'auto')}")
    _check_all("model", filters.models, known)
    blocks = PROFILE_BLOCKS[profile]
    for block in blocks:
        _check_all("model (in profile " + profile + ")", tuple(m for m in block.models if m != "*"), known)
    if filters.models:
        listed = {m for b in blocks for m in (known if b.models == ("*",) else b.models)}
        extra = tuple(m for m in filters.models if m not in listed)
        if extra:
            templates = [b for b in blocks if b.for_unlisted] or [blocks[0]]
            blocks = blocks + tuple(dataclasses.replace(b, models=extra) for b in templates)
    cells: dict[str, Cell] = {}
    for block in blocks:
        models = known if block.models == ("*",) else block.models
        for model in models:
            if filters.models is not None and model not in filters.models:
                continue
            for mode in _pick(block.modes, filters.modes):
                for compile_mode in filters.compile or block.compile:
                    for precision in _pick(block.precisions, filters.precisions):
                        for batch in filters.batch_sizes or block.batch_sizes:
                            size = filters.image_size or block.image_size
                            for layout in filters.memory_formats or block.memory_formats:
                                for gpus in _gpu_counts(block.gpus, filters.gpus, gpu_count):
                                    for runtime in filters.runtimes or block.runtimes:
                                        if runtime != "eager" and (mode != "infer" or compile_mode != "eager"):
                                            continue  # a deployment runtime runs inference, not under compile
                                        cell = Cell(model, mode, compile_mode, precision, batch, gpus, size, layout,
                                                    runtime)
                                        cells.setdefault(cell.id, cell)
    return matrix_order(list(cells.values()))


def matrix_order(cells: list[Cell]) -> list[Cell]:
    """The order cells run in: by model, then GPU count (1-GPU cells first: they are the scaling references of the
    multi-GPU ones); eager before compiled and before deployment runtimes (in RUNTIMES order) for the same
    configuration, so break-even can use the eager median;
    bsmax cells last (they are searched after the group's other cells, in fresh workers); else as given."""
    order = {c.id: i for i, c in enumerate(cells)}
    return sorted(cells, key=lambda c: (c.model, c.gpus, c.mode, c.searches_batch, c.precision,
                                        _batch_key(c.batch_size), MEMORY_FORMATS.index(c.memory_format),
                                        COMPILE_MODES.index(c.compile), RUNTIMES.index(c.runtime), order[c.id]))


def _batch_key(batch: int | str) -> tuple[int, int]:
    return (1, 0) if batch == BATCH_MAX else (0, int(batch))


def _gpu_counts(block: tuple[int, ...], wanted: tuple[int, ...] | None, gpu_count: int) -> tuple[int, ...]:
    if wanted is not None:
        return wanted
    if VISIBLE in block:
        return tuple(n for n in visible_counts(gpu_count) if n > 1)
    return block


def add_gpu_twins(cells: list[Cell]) -> tuple[list[Cell], dict[str, str]]:
    """Every multi-GPU cell's 1-GPU twin (scaling efficiency is judged against it), added where missing and placed
    before it (:func:`matrix_order`); returns the cells and ``{added cell id: why}``."""
    have = {c.id for c in cells}
    added: dict[str, str] = {}
    out = list(cells)
    for cell in cells:
        if cell.gpus == 1:
            continue
        twin = dataclasses.replace(cell, gpus=1)
        if twin.id not in have:
            have.add(twin.id)
            out.append(twin)
            added[twin.id] = f"added: the 1-GPU twin of {cell.id} (scaling efficiency is measured against it)"
    return matrix_order(out), added


def _pick(values: tuple[str, ...], wanted: tuple[str, ...] | None) -> tuple[str, ...]:
    """An option given on the command line replaces the block's axis; otherwise the block's values."""
    if wanted is None:
        return values
    return tuple(wanted)


# --- what this machine can run ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Capabilities:
    """What the machine offers; decides which cells are skipped before any GPU work."""

    cuda_available: bool
    gpu_count: int = 0
    bf16_supported: bool = False
    compile_available: bool = True
    device_name: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def probe_capabilities() -> Capabilities:
    """Ask torch what this machine can run (initialises CUDA when it is present)."""
    import torch  # noqa: PLC0415

    from detbench.envcheck.probe import native_bf16_supported  # noqa: PLC0415

    cuda = torch.cuda.is_available()
    return Capabilities(
        cuda_available=cuda,
        gpu_count=torch.cuda.device_count() if cuda else 0,
        bf16_supported=bool(cuda and native_bf16_supported()),
        compile_available=hasattr(torch, "compile"),
        device_name=torch.cuda.get_device_name(0) if cuda else None,
    )


def skip_reason(cell: Cell, caps: Capabilities) -> str | None:
    """Why this cell cannot run here, or None when it can."""
    visible = caps.gpu_count if caps.cuda_available else 0
    if caps.cuda_available and cell.gpus > visible:
        return f"needs {cell.gpus} GPUs, {visible} visible"
    # gpus > 1 without CUDA: detbench.bench.distributed runs the ranks on the CPU over gloo (or says why it cannot)
    if cell.precision != "fp32" and not caps.cuda_available:
        return f"{cell.precision} autocast is GPU-only in this suite (CPU runs fp32)"
    if cell.precision == "amp-bf16" and not caps.bf16_supported:
        return f"bf16 is not supported on {caps.device_name or 'this GPU'}"
    if cell.compiled and not caps.compile_available:
        return "torch.compile is not available in this torch"
    if cell.compile in CUDA_GRAPH_MODES and not caps.cuda_available:
        return f"{cell.compile} captures CUDA graphs: GPU-only"
    if cell.searches_batch and cell.gpus > 1:
        return f"the batch search ({BATCH_MAX}) runs on 1 GPU; search there, then give the batch to {cell.gpus} GPUs"
    return None


def parse_csv(text: str | None) -> tuple[str, ...] | None:
    """``"a, b"`` -> ("a", "b"); None or empty -> None."""
    if not text:
        return None
    return tuple(part.strip() for part in text.split(",") if part.strip()) or None


def parse_batch_sizes(text: str | None) -> tuple[int | str, ...] | None:
    """``"1,8,max"`` -> (1, 8, "max"), with a one-line error for anything else."""
    parts = parse_csv(text)
    if parts is None:
        return None
    sizes: list[int | str] = []
    for part in parts:
        if part.lower() == BATCH_MAX:
            sizes.append(BATCH_MAX)
        elif part.isdecimal() and int(part) >= 1:
            sizes.append(int(part))
        else:
            raise MatrixError(f"bad batch size {part!r}; batch sizes are positive integers or {BATCH_MAX} (the "
                              "largest that fits), e.g. 1,8,max")
    return tuple(dict.fromkeys(sizes))


def parse_compile(text: str | None, compiled_as: str = "default") -> tuple[str, ...] | None:
    """``"eager,default,reduce-overhead"`` -> those modes; ``compiled`` means ``compiled_as`` (``--compile-mode``)
    and ``both`` means eager and ``compiled_as``, as in version 1. A one-line error names the valid choices."""
    parts = parse_csv(text)
    if parts is None:
        return None
    _check_all("compile mode", (compiled_as,), COMPILE_MODES[1:])
    modes: list[str] = []
    for part in parts:
        if part not in COMPILE_CHOICES:
            raise MatrixError(f"unknown compile mode {part!r}; valid: {', '.join(COMPILE_CHOICES)}")
        if part == "both":
            modes += ["eager", compiled_as]
        else:
            modes.append(compiled_as if part in COMPILE_ALIASES else part)
    return tuple(dict.fromkeys(modes))


def parse_runtimes(text: str | None) -> tuple[str, ...] | None:
    """``"eager,onnxruntime"`` -> both; a one-line error names the valid choices."""
    parts = parse_csv(text)
    _check_all("runtime", parts, RUNTIMES)
    return tuple(dict.fromkeys(parts)) if parts else None


def parse_memory_formats(text: str | None) -> tuple[str, ...] | None:
    """``"contiguous,channels_last"`` -> both; a one-line error names the valid choices."""
    parts = parse_csv(text)
    _check_all("memory format", parts, MEMORY_FORMATS)
    return tuple(dict.fromkeys(parts)) if parts else None


def parse_gpus(text: str | None) -> tuple[int, ...] | None:
    """``"1,2,4"`` -> (1, 2, 4), with a one-line error for anything else; None or empty -> None."""
    parts = parse_csv(text)
    if parts is None:
        return None
    counts = []
    for part in parts:
        if not part.isdecimal() or not 1 <= int(part) <= 1024:
            raise MatrixError(f"bad GPU count {part!r}; GPU counts are positive integers, e.g. --gpus 1,2,4")
        counts.append(int(part))
    return tuple(dict.fromkeys(counts))


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """``"480x640"`` (height x width) -> (480, 640); sides within 32..MAX_IMAGE_SIDE."""
    if not text:
        return None
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdecimal() and 32 <= int(p) <= MAX_IMAGE_SIDE for p in parts):
        raise MatrixError(f"bad image size {text!r}; use HEIGHTxWIDTH with both within 32..{MAX_IMAGE_SIDE} "
                          "(larger exceeds any GPU's memory), e.g. 480x640")
    return int(parts[0]), int(parts[1])


def _check_all(kind: str, values: tuple[str, ...] | None, valid: Iterable[str]) -> None:
    valid = tuple(valid)
    for value in values or ():
        if value not in valid:
            raise MatrixError(f"unknown {kind} {value!r}; valid: {', '.join(valid)}")
