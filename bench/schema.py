"""The versioned result schema: one benchmark cell and what it measured.

Every writer goes through :class:`CellResult.to_dict`; every reader through :meth:`CellResult.from_dict`.
The dict lives in pytest-benchmark's ``extra_info["detbench"]`` and, line by line, in the run journal.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1
SCHEMA_NAME = "detbench.cell"

MODES = ("infer", "train")
COMPILE_MODES = ("eager", "compiled")
PRECISIONS = ("fp32", "amp-fp16", "amp-bf16")
STATUSES = ("ok", "oom", "error", "skipped", "timeout")

_PRECISION_SHORT = {"fp32": "fp32", "amp-fp16": "fp16", "amp-bf16": "bf16"}


class SchemaError(ValueError):
    """A result dict that does not follow this schema."""


@dataclass(frozen=True)
class Cell:
    """One point of the matrix: (detector, mode, compile, precision, batch size, GPU count)."""

    model: str
    mode: str = "infer"
    compile: str = "eager"
    precision: str = "fp32"
    batch_size: int = 1
    gpus: int = 1
    image_size: tuple[int, int] | None = None  # (height, width); None = the model's native size

    def __post_init__(self) -> None:
        _choice("mode", self.mode, MODES)
        _choice("compile", self.compile, COMPILE_MODES)
        _choice("precision", self.precision, PRECISIONS)
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not isinstance(self.gpus, int) or isinstance(self.gpus, bool) or self.gpus < 1:
            raise ValueError(f"gpus must be a positive integer, got {self.gpus!r}")
        if self.image_size is not None:
            size = tuple(self.image_size)
            if len(size) != 2 or not all(isinstance(v, int) and v >= 32 for v in size):
                raise ValueError(f"image_size must be (height, width) of integers >= 32, got {self.image_size!r}")
            object.__setattr__(self, "image_size", size)

    @property
    def id(self) -> str:
        """Readable test id, e.g. ``retinanet_resnet50_fpn-infer-compiled-bf16-bs8-gpu1``."""
        size = f"-{self.image_size[0]}x{self.image_size[1]}" if self.image_size else ""
        return (
            f"{self.model}-{self.mode}-{self.compile}-{_PRECISION_SHORT[self.precision]}"
            f"-bs{self.batch_size}-gpu{self.gpus}{size}"
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["image_size"] = list(self.image_size) if self.image_size else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Cell":
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if kwargs.get("image_size") is not None:
            kwargs["image_size"] = tuple(kwargs["image_size"])
        return cls(**kwargs)


@dataclass
class LatencyStats:
    """Statistics over per-iteration times, in milliseconds."""

    n: int
    median_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    p90_ms: float
    p99_ms: float
    iqr_ms: float
    stddev_ms: float
    cov: float  # stddev / mean


@dataclass
class CellResult:
    """What one cell measured. Optional fields are None when not measured or not applicable."""

    cell: Cell
    status: str = "ok"
    reason: str | None = None
    # timing of the measured region (per iteration = one batch)
    times_ms: list[float] = field(default_factory=list)
    latency: LatencyStats | None = None
    throughput_ips: float | None = None  # images/s at the median iteration time
    throughput_ips_p10: float | None = None  # images/s at the p90 iteration time (slow end)
    throughput_ips_p90: float | None = None  # images/s at the p10 iteration time (fast end)
    timer: str | None = None  # "cuda-events" or "perf-counter+sync"
    # warm-up and compile, reported apart from the timed region
    first_call_s: float | None = None  # first call, including compile for compiled cells
    compile_s: float | None = None  # first-call time minus a steady iteration
    warmup_iterations: int | None = None
    warmup_s: float | None = None
    warmup_converged: bool | None = None
    graph_breaks: int | None = None
    break_even_iterations: float | None = None  # iterations after which compiling pays off
    # memory
    peak_memory_bytes: int | None = None  # after warm-up, over the timed region
    memory_requested_bytes: int | None = None  # for OOM cells, when the allocator said
    # work
    flops_per_image: float | None = None
    flop_convention: str | None = None  # e.g. "torch.utils.flop_counter: multiply-add = 2 FLOPs"
    achieved_tflops: float | None = None
    peak_tflops: float | None = None  # datasheet peak for this precision on this GPU
    mfu: float | None = None  # achieved / peak
    # post-processing load
    detections_per_image: dict[str, float] | None = None  # mean / min / max over the measured batch
    postprocess: dict[str, Any] | None = None  # the stated load: thresholds, candidates, caps
    # where and how
    device: str | None = None
    telemetry: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)  # fully resolved run configuration
    schema: str = SCHEMA_NAME
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _choice("status", self.status, STATUSES)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["cell"] = self.cell.to_dict()
        data["cell_id"] = self.cell.id
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "result") -> "CellResult":
        """Parse a dict written by :meth:`to_dict`; raise SchemaError with a one-line reason."""
        if not isinstance(data, dict):
            raise SchemaError(f"{source}: expected an object, got {type(data).__name__}")
        if data.get("schema") != SCHEMA_NAME:
            raise SchemaError(f"{source}: not a detbench cell (schema={data.get('schema')!r})")
        version = data.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
            raise SchemaError(
                f"{source}: schema_version {version!r} is not supported (this detbench reads 1..{SCHEMA_VERSION})"
            )
        try:
            cell = Cell.from_dict(data["cell"])
            known = {f.name for f in dataclasses.fields(cls)}
            kwargs = {k: v for k, v in data.items() if k in known and k not in ("cell", "latency")}
            latency = LatencyStats(**data["latency"]) if data.get("latency") else None
            return cls(cell=cell, latency=latency, **kwargs)
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"{source}: malformed cell result ({exc})") from exc


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
