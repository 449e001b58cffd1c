"""The versioned result schema: one benchmark cell and what it measured.

Every writer goes through :meth:`CellResult.to_dict`; every reader through :meth:`CellResult.from_dict`,
which validates (types, finiteness, plausible ranges) and raises :class:`SchemaError` naming the field.
Version 2 replaced the free-form pieces of ``config`` (set-up times, measurement, FLOP details,
failure tails, runtime notes) with the typed records below and added per-block records and the paired
ratio to the group's baseline; version-1 files still load (their ``config`` pieces are lifted).
``--repeats`` added optional fields within version 2 (a block's ``repeat``, ``Measurement.repeats`` and
``repeat_setup_wall_s``, ``CellResult.repeat`` and ``repeat_failures``); files without them read as one repeat.
Issue 18 added, also optional within version 2: the compile modes (``compiled`` reads as ``default``), the
memory format, ``bsmax`` cells with their ``batch_search`` and ``compile_details``.
Version 3 (issue 37) added the status ``partial``: a cell cut short (a signal, a dead worker) with the rounds it
finished, never to be read as complete; and ``Measurement.planned_rounds`` / ``resumed_rounds``. Versions 1 and 2
still load (they hold no partial cell).
Version 4 (issue 35) added the deployment runtime axis: ``Cell.runtime`` (``eager`` when absent, so earlier ids and
files are unchanged), the status ``not-supported`` (a runtime that cannot take the model, with the exporter's first
error line) and ``CellResult.deploy`` (:class:`DeployInfo`: export seconds, artifact size, cold start, the split,
output parity against eager FP32).
Version 5 (issue 41) added serving cells (detbench.bench.tools.serve): ``Cell.scenario`` (``single-stream``, ``server``,
``offline``; absent on matrix cells, whose ids and dicts are unchanged), ``Cell.latency_bound_ms`` (the Server
scenario's p99 bound) and ``Cell.batch_wait_ms`` (dynamic batching's wait bound; ``batch_size`` is then the largest
batch), and ``CellResult.serve`` (:class:`ServeInfo`: every LoadGen trial with its percentiles and latency histogram,
the sustainable rate under the bound). Versions 1 to 4 still load (they hold no serving cell).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from detbench.bench.core.distributed_stats import DistributedStats

SCHEMA_VERSION = 5
SCHEMA_NAME = "detbench.cell"

MODES = ("infer", "train")
# eager, or torch.compile with this mode. Before issue 18 the axis had one compiled value, "compiled" (the default
# mode): it still loads and is still accepted, as "default", and "default" cells keep the "compiled" id token.
COMPILE_MODES = ("eager", "default", "max-autotune", "reduce-overhead", "max-autotune-no-cudagraphs")
COMPILE_ALIASES = {"compiled": "default"}
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that capture CUDA graphs
PRECISIONS = ("fp32", "amp-fp16", "amp-bf16")
MEMORY_FORMATS = ("contiguous", "channels_last")
# How the cell's model is deployed (detbench.bench.runtime.deploy: one module each). "eager" is the model as built (and,
# with a compile mode, torch.compile); the others export an artifact, load it back and run it: inference, compile eager
# only.
RUNTIMES = ("eager", "torchscript", "onnxruntime", "aot-inductor")
BATCH_MAX = "max"  # Cell.batch_size: the largest batch that fits, searched (detbench.bench.runtime.batch_search)
# partial: cut short (a signal, a dead worker) after some of its rounds; it carries them, and a resume continues it
# not-supported: a deployment runtime cannot take this model (the exporter's first error line is the reason)
STATUSES = ("ok", "partial", "oom", "error", "skipped", "timeout", "not-supported")
MEASURED = ("ok", "partial")  # statuses that carry timed blocks
# Serving scenarios (detbench.bench.tools.serve, MLPerf LoadGen's names): one query at a time; Poisson arrivals at a
# rate searched for the highest whose p99 latency stays under Cell.latency_bound_ms; every query at once (throughput).
SCENARIOS = ("single-stream", "server", "offline")
MAX_IMAGE_SIDE = 8192  # beyond any GPU's memory for a detector batch

_PRECISION_SHORT = {"fp32": "fp32", "amp-fp16": "fp16", "amp-bf16": "bf16"}
# id tokens: "default" keeps version 1's "compiled", so ids of eager and compiled-default cells never changed
_COMPILE_TOKEN = {"eager": "eager", "default": "compiled", "max-autotune": "compiled-max-autotune",
                  "reduce-overhead": "compiled-reduce-overhead",
                  "max-autotune-no-cudagraphs": "compiled-max-autotune-no-cudagraphs"}
# No number in a result is larger than this; a bigger one is corruption, not a measurement.
ABSURD = 1e18


class SchemaError(ValueError):
    """A result dict that does not follow this schema; the message names the field."""


@dataclass(frozen=True)
class Cell:
    """One point of the matrix: (detector, mode, compile, precision, batch size, GPU count, image size, memory
    format). ``compile`` is ``eager`` or a torch.compile mode; ``batch_size`` is an integer or :data:`BATCH_MAX`
    (the largest batch that fits, found by detbench.bench.runtime.batch_search)."""

    model: str
    mode: str = "infer"
    compile: str = "eager"
    precision: str = "fp32"
    batch_size: int | str = 1
    gpus: int = 1
    image_size: tuple[int, int] | None = None  # (height, width); None = the model's native size
    memory_format: str = "contiguous"  # channels_last: model (and 4-D inputs) in NHWC, convolutional models only
    runtime: str = "eager"  # a deployment runtime (RUNTIMES); not eager: inference with compile "eager" only
    # v5, serving cells only (None on matrix cells): the scenario, the Server p99 bound, dynamic batching's wait bound
    scenario: str | None = None
    latency_bound_ms: float | None = None
    batch_wait_ms: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a non-empty string, got {self.model!r}")
        _choice("mode", self.mode, MODES)
        object.__setattr__(self, "compile", COMPILE_ALIASES.get(self.compile, self.compile))
        _choice("compile", self.compile, COMPILE_MODES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("memory format", self.memory_format, MEMORY_FORMATS)
        _choice("runtime", self.runtime, RUNTIMES)
        if self.runtime != "eager" and (self.mode != "infer" or self.compile != "eager"):
            raise ValueError(f"runtime {self.runtime!r} runs inference without torch.compile; got mode {self.mode!r}, "
                             f"compile {self.compile!r}")
        if self.batch_size != BATCH_MAX and not (isinstance(self.batch_size, int) and _is_int(self.batch_size)
                                                 and 1 <= self.batch_size <= 1_000_000):
            raise ValueError(f"batch_size must be a positive integer or {BATCH_MAX!r}, got {self.batch_size!r}")
        if not _is_int(self.gpus) or not 1 <= self.gpus <= 100_000:
            raise ValueError(f"gpus must be a positive integer, got {self.gpus!r}")
        if self.image_size is not None:
            size = tuple(self.image_size)
            if len(size) != 2 or not all(_is_int(v) and 32 <= v <= MAX_IMAGE_SIDE for v in size):
                raise ValueError(f"image_size must be (height, width) of integers within 32..{MAX_IMAGE_SIDE}, "
                                 f"got {self.image_size!r}")
            object.__setattr__(self, "image_size", size)
        self._check_serving()

    def _check_serving(self) -> None:
        if self.scenario is None:
            if self.latency_bound_ms is not None or self.batch_wait_ms is not None:
                raise ValueError("latency_bound_ms and batch_wait_ms belong to serving cells (a scenario)")
            return
        _choice("scenario", self.scenario, SCENARIOS)
        if self.mode != "infer" or self.searches_batch or self.gpus != 1:
            raise ValueError(f"a {self.scenario} cell serves inference on one device at a given batch; got mode "
                             f"{self.mode!r}, batch {self.batch_size!r}, gpus {self.gpus!r}")
        bound = self.latency_bound_ms
        if (self.scenario == "server") != (bound is not None):
            raise ValueError(f"latency_bound_ms is the server scenario's p99 bound; got {bound!r} for {self.scenario}")
        for name, value in (("latency_bound_ms", bound), ("batch_wait_ms", self.batch_wait_ms)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 <= value <= 1e7 or math.isnan(value)):
                raise ValueError(f"{name} must be a number of milliseconds within 0..1e7, got {value!r}")

    @property
    def id(self) -> str:
        """Readable test id, e.g. ``retinanet_resnet50_fpn-infer-compiled-bf16-bs8-gpu1``."""
        size = f"-{self.image_size[0]}x{self.image_size[1]}" if self.image_size else ""
        layout = "" if self.memory_format == "contiguous" else f"-{self.memory_format}"
        return (
            f"{self.model}-{self.mode}-{self._variant_token}-{_PRECISION_SHORT[self.precision]}{layout}"
            f"-bs{self.batch_size}-gpu{self.gpus}{size}{self._serving_token}"
        )

    @property
    def _serving_token(self) -> str:
        """``-server-p99le200ms-wait5ms`` and the like; empty for matrix cells (their ids as before)."""
        if self.scenario is None:
            return ""
        bound = f"-p99le{self.latency_bound_ms:g}ms" if self.latency_bound_ms is not None else ""
        wait = f"-wait{self.batch_wait_ms:g}ms" if self.batch_wait_ms is not None else ""
        return f"-{self.scenario}{bound}{wait}"

    @property
    def _variant_token(self) -> str:
        """The compile token, or the deployment runtime's name where it is not eager (ids of eager cells as before)."""
        return _COMPILE_TOKEN[self.compile] if self.runtime == "eager" else self.runtime

    @property
    def deployed(self) -> bool:
        """Whether the cell runs an exported artifact (a runtime other than eager)."""
        return self.runtime != "eager"

    @property
    def compiled(self) -> bool:
        """Whether the cell runs under torch.compile (any mode)."""
        return self.compile != "eager"

    @property
    def batch(self) -> int:
        """The concrete batch size; a :data:`BATCH_MAX` cell has none until detbench.bench.runtime.batch_search
        resolves it."""
        if isinstance(self.batch_size, str):
            raise ValueError(f"{self.id}: batch size {self.batch_size!r} must be resolved first (a batch search)")
        return self.batch_size

    @property
    def searches_batch(self) -> bool:
        """Whether the batch size is to be searched (the largest that fits) rather than given."""
        return self.batch_size == BATCH_MAX

    @property
    def configuration(self) -> str:
        """The configuration without model, mode, batch and GPUs, in the id's words: ``eager/fp32``,
        ``compiled/amp-bf16/channels_last``, ``compiled-reduce-overhead/amp-bf16`` (the reports' variant)."""
        layout = "" if self.memory_format == "contiguous" else f"/{self.memory_format}"
        return f"{self._variant_token}/{self.precision}{layout}{self._serving_token.replace('-', '/', 1)}"

    @property
    def group_key(self) -> tuple[str, tuple[int, int] | None, int]:
        """Cells sharing (model, image size, GPU count) are measured by one worker, interleaved."""
        return (self.model, self.image_size, self.gpus)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["image_size"] = list(self.image_size) if self.image_size else None
        if self.scenario is None:  # matrix cells' dicts as before version 5
            for name in ("scenario", "latency_bound_ms", "batch_wait_ms"):
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Cell:
        if not isinstance(data, dict):
            raise SchemaError(f"cell must be an object, got {_kind(data)}")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if isinstance(kwargs.get("image_size"), list):
            kwargs["image_size"] = tuple(kwargs["image_size"])
        return cls(**kwargs)


# --- typed records ---------------------------------------------------------------------------------------


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
class BlockRecord:
    """One timed block of a cell: the unit of between-block spread (issue 15's gate uses these)."""

    round: int  # the round of the group's interleaved schedule this block belongs to
    median_ms: float  # median iteration of the block
    iterations: int
    host_canary_ms: float | None  # the fixed pure-Python loop timed just before the block
    start_offset_s: float  # seconds since the group's first timed block began
    wall_s: float = 0.0  # host wall time of the block, synchronisation included
    repeat: int = 0  # which of the run's --repeats measured the block (files before repeats: 0)


@dataclass
class SetupTimes:
    """Seconds spent setting the cell up, outside the timed region (first call and warm-up are top-level)."""

    build_s: float | None = None  # model build, resize, move, inputs
    postprocess_calibration_s: float | None = None  # includes the first forwards (cuDNN autotuning)
    flop_count_s: float | None = None  # 0 when reused from a cell of the same mode and batch size
    total_s: float | None = None  # the whole set-up: the above + first call + warm-up


@dataclass
class Measurement:
    """How the timed region was taken, and where the cell's wall time went."""

    timer: str  # "cuda-events" | "perf-counter+sync"
    iterations: int
    timed_s: float  # sum of the blocks' wall time: the timed region
    isolation: str  # model | cell | inline
    rounds: int = 0  # rounds this cell was timed in
    block_s: float | None = None  # target seconds per block
    blocks: list[BlockRecord] = field(default_factory=list)
    wall_throughput_ips: float | None = None  # images / timed_s (host clock, all syncs included)
    memory_method: str | None = None
    group: str | None = None  # the (model, image size, GPUs) group the cell was measured in
    group_cells: int | None = None  # cells measured together in that group
    worker_attempt: int = 1  # 2+: a fresh worker took over after a crash or hang
    setup_wall_s: float | None = None
    shared_overhead_s: float | None = None  # the worker's start and teardown, split over its cells
    cell_wall_s: float | None = None  # set-up + blocks + shared overhead
    overhead_s: float | None = None  # cell_wall_s - timed_s
    telemetry_round: int | None = None  # the round whose block the telemetry sampler covered
    warmup_stop_reason: str | None = None
    final_loss: float | None = None  # training cells: the last step's loss
    repeats: int = 1  # repeats whose blocks are merged here (--repeats; a failed repeat is not counted)
    repeat_setup_wall_s: list[float] = field(default_factory=list)  # set-up wall of each merged repeat, in order
    planned_rounds: int | None = None  # rounds the run asked for (per repeat); fewer timed: the cell is partial
    resumed_rounds: int = 0  # rounds taken from a cut worker's partial result; a fresh worker timed the rest


@dataclass
class PairedRatio:
    """Throughput of this cell over the group's baseline (eager fp32, same mode and batch), paired by round."""

    baseline_cell_id: str
    median: float
    q1: float
    q3: float
    per_round: list[float] = field(default_factory=list)


@dataclass
class FlopsInfo:
    """What the FLOP count covers."""

    backward_counted: bool | None = None
    not_counted: str | None = None
    top_ops: dict[str, float] = field(default_factory=dict)
    peak_basis: str | None = None  # which datasheet peak MFU uses, or why there is none
    reused_from: str | None = None  # cell id whose count (same mode and batch size) this one reuses
    disabled: bool = False


@dataclass
class Failure:
    """Why a cell failed: the exception, its traceback tail, the worker's output tail."""

    error_type: str | None = None
    phase: str | None = None  # set-up | timing | worker
    traceback_tail: str | None = None
    output_tail: str | None = None
    returncode: int | None = None


@dataclass
class CompileDetails:
    """What torch.compile did for a compiled cell, beyond its compile time and graph breaks (top-level fields)."""

    mode: str  # the torch.compile mode
    recompilations: int = 0  # dynamo compiles after the first call (cache misses): warm-up and timed blocks
    cudagraph_skips: int | None = None  # CUDA-graph modes: graphs inductor ran without CUDA graphs
    cudagraph_skip_reasons: str | None = None  # inductor's "skipping cudagraphs due to ..." messages, "; "-joined


@dataclass
class BatchProbe:
    """One probe of a batch-size search: a batch size and how its isolated set-up and timed block ended."""

    batch_size: int
    status: str  # a CellResult status: ok | oom | error | timeout | skipped
    peak_memory_bytes: int | None = None  # over the probe's timed blocks (None on CPU or when it failed)
    memory_requested_bytes: int | None = None  # for an OOM, the allocation that failed
    throughput_ips: float | None = None
    reason: str | None = None


@dataclass
class BatchSearch:
    """Where the OOM boundary lies for a ``bsmax`` cell, and how it was found (detbench.bench.runtime.batch_search)."""

    start: int
    limit: int
    tolerance: float  # bisection stops once (smallest OOM - largest fit) <= tolerance x largest fit
    largest_fit: int | None = None  # None: not even batch 1 fit
    smallest_oom: int | None = None  # None: no OOM up to ``limit``
    stop_reason: str = ""
    probes: list[BatchProbe] = field(default_factory=list)

    @property
    def resolved(self) -> bool:
        """The boundary is pinned: a fit and an OOM within the tolerance of each other."""
        return (self.largest_fit is not None and self.smallest_oom is not None
                and self.smallest_oom - self.largest_fit <= max(1, int(self.largest_fit * self.tolerance)))


@dataclass
class Parity:
    """A deployed cell's detections against eager FP32 of the same weights on the same calibrated input
    (detbench.bench.runtime.deploy.parity): boxes matched one-to-one by IoU, then scores, labels and masks compared."""

    verdict: str  # agree | disagree
    tolerance: dict[str, float] = field(default_factory=dict)  # the precision's limits the verdict applied
    reference_detections: int = 0  # eager's detections over the batch
    detections: int = 0  # the runtime's
    matched: int = 0
    unmatched_excused: int = 0  # on one side only, scored at the cut (within the score tolerance of the lowest kept)
    unmatched: int = 0  # on one side only and not excused: a disagreement
    min_box_iou: float | None = None  # over matched pairs
    max_box_error_px: float | None = None  # largest coordinate difference of a matched pair
    max_score_diff: float | None = None
    label_agreement: float | None = None  # fraction of matched pairs with the same label
    min_mask_iou: float | None = None  # Mask R-CNN: binarised at 0.5, over matched pairs
    failures: list[str] = field(default_factory=list)  # each limit exceeded, in words


@dataclass
class DeployInfo:
    """What deploying a cell's model on its runtime cost and gave (detbench.bench.runtime.deploy)."""

    runtime: str
    provider: str | None = None  # what executes it (e.g. ONNX Runtime's CPUExecutionProvider)
    exported: str = "whole model"  # or the split: what was exported, what runs eagerly around it
    export_s: float | None = None  # export / script / compile of the artifact, in this process
    artifact_bytes: int | None = None  # on disk
    load_s: float | None = None  # loading the artifact back, in this process
    cold_start_s: float | None = None  # load + first call in a fresh process (see cold_start_method)
    cold_import_s: float | None = None  # that process's imports (torch and the runtime) before the load
    cold_start_method: str | None = None
    serving_peak_rss_bytes: int | None = None  # that fresh process's peak resident memory (VmHWM) after its call
    break_even_requests: float | None = None  # export_s / per-request saving against eager (None: never)
    break_even_basis: str | None = None
    parity: Parity | None = None
    notes: dict[str, str] = field(default_factory=dict)


@dataclass
class ServeTrial:
    """One LoadGen trial of a serving cell (detbench.bench.tools.serve): its load, its latencies from each query's
    scheduled arrival to its result (queueing included), and its latency histogram."""

    status: str  # ok | error | timeout (a failing trial is recorded, the study goes on)
    target_qps: float | None = None  # server: the Poisson arrival rate asked for; None for the other scenarios
    queries: int = 0  # samples LoadGen issued (one image each)
    scheduled_qps: float | None = None  # server: the rate LoadGen's schedule achieved
    achieved_qps: float | None = None  # completed samples per second
    mean_batch: float | None = None  # images per model call the server's dynamic batching formed
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    mean_ms: float | None = None
    p99_interval_ms: list[float] = field(default_factory=list)  # distribution-free 95 % interval of the p99
    met_bound: bool | None = None  # server: p99_ms <= the cell's latency_bound_ms
    loadgen_valid: bool | None = None  # LoadGen's own verdict (its minimum duration, queries, early stopping)
    early_stopping_met: bool | None = None
    histogram: str | None = None  # HdrHistogram of the latencies in microseconds, its compressed base64 encoding
    wall_s: float | None = None
    reason: str | None = None  # why a trial failed, or LoadGen's reason its result is invalid

    def __post_init__(self) -> None:
        _choice("trial status", self.status, ("ok", "error", "timeout"))


@dataclass
class ServeInfo:
    """What a serving cell measured (detbench.bench.tools.serve): the trials (for the server scenario, the rate search
    in the order run) and the figure the cell reports: the sustainable rate under the bound, or the trial's latency."""

    scenario: str
    load_generator: str  # e.g. "mlperf-loadgen 6.0.17"
    queries_per_trial: int
    percentile: float = 99.0  # the latency percentile the bound applies to
    sustainable_qps: float | None = None  # server: the highest target rate whose trial met the bound
    reported_trial: int | None = None  # index into trials of the trial the cell's figures come from
    step_ms: float | None = None  # one query alone through the server at set-up (median): the service time
    stop_reason: str | None = None  # how the rate search ended
    planted_slowdown: float = 0.0  # a relative busy-wait added to every model call (a self-check), 0 = none
    threads: int | None = None  # torch's intra-op threads in the server process
    trials: list[ServeTrial] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _choice("scenario", self.scenario, SCENARIOS)


@dataclass
class RepeatFailure:
    """One repeat of a ``--repeats`` run that failed while another repeat of the cell measured it: the cell
    stays ``ok`` (its figures come from the repeats that finished) and lists these in ``repeat_failures``."""

    repeat: int
    status: str  # oom | error | timeout | skipped
    reason: str | None = None
    failure: Failure | None = None

    def __post_init__(self) -> None:
        _choice("repeat status", self.status, STATUSES)


@dataclass
class DeviceTelemetry:
    """The per-GPU part of a telemetry summary that readers use (the full dict stays in the result)."""

    name: str | None
    uuid: str | None
    energy_j: float | None
    gpu_util_pct_mean: float | None
    throttled: bool
    has_series: bool


@dataclass
class TelemetrySummary:
    """Typed view of a cell's telemetry summary (detbench.bench.measure.telemetry.TelemetryTracker.summary)."""

    available: bool
    reason: str | None
    samples: int
    rate_hz_achieved: float | None
    energy_per_image_j: float | None
    images_per_s_per_w: float | None
    mean_power_w: float | None
    throttled: bool
    devices: list[DeviceTelemetry]

    @classmethod
    def from_dict(cls, data: Any, where: str = "telemetry") -> TelemetrySummary:
        if not isinstance(data, dict):
            raise SchemaError(f"{where} must be an object, got {_kind(data)}")
        devices = data.get("devices", [])
        if devices is None:
            devices = []
        if not isinstance(devices, list):
            raise SchemaError(f"{where}.devices must be a list, got {_kind(devices)} {devices!r:.40}")
        parsed = []
        for i, dev in enumerate(devices):
            if not isinstance(dev, dict):
                raise SchemaError(f"{where}.devices[{i}] must be an object, got {_kind(dev)}")
            metrics = dev.get("metrics")
            metrics = metrics if isinstance(metrics, dict) else {}
            util = metrics.get("gpu_util_pct")
            util = util if isinstance(util, dict) else {}
            series = dev.get("series")
            parsed.append(DeviceTelemetry(
                name=_opt_str(dev.get("name"), f"{where}.devices[{i}].name"),
                uuid=_opt_str(dev.get("uuid"), f"{where}.devices[{i}].uuid"),
                energy_j=_opt_num(dev.get("energy_j"), f"{where}.devices[{i}].energy_j", 0, 1e12),
                gpu_util_pct_mean=_opt_num(util.get("mean"), f"{where}.devices[{i}].metrics.gpu_util_pct.mean", 0, 100),
                throttled=bool(dev.get("throttled")),
                has_series=isinstance(series, dict) and bool(series.get("t_s"))))
        samples = data.get("samples", 0)
        return cls(
            available=bool(data.get("available")),
            reason=_opt_str(data.get("reason"), f"{where}.reason"),
            samples=int(_opt_num(samples, f"{where}.samples", 0, 1e12, integer=True) or 0),
            rate_hz_achieved=_opt_num(data.get("rate_hz_achieved"), f"{where}.rate_hz_achieved", 0, 1e6),
            energy_per_image_j=_opt_num(data.get("energy_per_image_j"), f"{where}.energy_per_image_j", 0, 1e9),
            images_per_s_per_w=_opt_num(data.get("images_per_s_per_w"), f"{where}.images_per_s_per_w", 0, 1e9),
            mean_power_w=_opt_num(data.get("mean_power_w"), f"{where}.mean_power_w", 0, 1e7),
            throttled=bool(data.get("throttled")),
            devices=parsed,
        )

    @property
    def gpu_util_pct_mean(self) -> float | None:
        values = [d.gpu_util_pct_mean for d in self.devices if d.gpu_util_pct_mean is not None]
        return sum(values) / len(values) if values else None


# --- the result ------------------------------------------------------------------------------------------


@dataclass
class CellResult:
    """What one cell measured. Optional fields are None when not measured or not applicable."""

    cell: Cell
    status: str = "ok"
    reason: str | None = None
    # timing of the measured region (per iteration = one batch)
    times_ms: list[float] = field(default_factory=list)
    latency: LatencyStats | None = None
    throughput_ips: float | None = None  # images/s: median over the cell's blocks of their median iteration
    throughput_ips_p10: float | None = None  # images/s at the p90 iteration time (slow end)
    throughput_ips_p90: float | None = None  # images/s at the p10 iteration time (fast end)
    timer: str | None = None  # "cuda-events" or "perf-counter+sync"
    # warm-up and compile, reported apart from the timed region
    first_call_s: float | None = None  # first call, including compile for compiled cells
    compile_s: float | None = None  # first-call time minus a steady iteration
    warmup_iterations: int | None = None
    warmup_s: float | None = None
    warmup_converged: bool | None = None
    graph_breaks: int | None = None  # dynamo's graph-break counter for this cell's compile (reset before it)
    break_even_iterations: float | None = None  # iterations after which compiling pays off
    break_even_basis: str | None = None  # how it was computed, or why there is none
    # memory
    peak_memory_bytes: int | None = None  # after warm-up, over the timed blocks
    memory_requested_bytes: int | None = None  # for OOM cells, when the allocator said
    # work
    flops_per_image: float | None = None
    flop_convention: str | None = None
    achieved_tflops: float | None = None
    peak_tflops: float | None = None  # datasheet peak for this precision on this GPU
    mfu: float | None = None  # achieved / peak
    flops_info: FlopsInfo | None = None
    # post-processing load
    detections_per_image: dict[str, float] | None = None  # mean / min / max over the measured batch
    postprocess: dict[str, Any] | None = None  # detbench.bench.models.postprocess.PostprocessLoad.to_dict()
    # v2: set-up, measurement, ratio, failure
    setup: SetupTimes | None = None
    measurement: Measurement | None = None
    ratio: PairedRatio | None = None
    failure: Failure | None = None
    model_runtime_notes: dict[str, Any] = field(default_factory=dict)  # what the built model ran
    added_reason: str | None = None  # why the run added a cell the user did not ask for
    distributed: DistributedStats | None = None  # multi-GPU cells: per-rank figures, aggregate, scaling
    # --repeats: a journal line of one repeat carries its index; the merged cell (and every cell of a run
    # without repeats) has None. Failed repeats of an ok cell are listed, not dropped.
    repeat: int | None = None
    repeat_failures: list[RepeatFailure] = field(default_factory=list)
    compile_details: CompileDetails | None = None  # compiled cells: recompilations, CUDA-graph skips and reasons
    batch_search: BatchSearch | None = None  # bsmax cells: the boundary; the figures are those at largest_fit
    deploy: DeployInfo | None = None  # v4: cells of a deployment runtime (and not-supported ones: why)
    serve: ServeInfo | None = None  # v5: serving cells: the LoadGen trials and the sustainable rate
    # where and how
    device: str | None = None
    telemetry: dict[str, Any] | None = None  # the sampler's summary; typed view: telemetry_summary
    environment: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)  # the fully resolved run configuration
    schema: str = SCHEMA_NAME
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _choice("status", self.status, STATUSES)

    @property
    def telemetry_summary(self) -> TelemetrySummary | None:
        return TelemetrySummary.from_dict(self.telemetry) if isinstance(self.telemetry, dict) else None

    @property
    def measured_batch_size(self) -> int | None:
        """The batch size the timed blocks ran at: the cell's, or for a ``bsmax`` cell the largest that fit."""
        if not self.cell.searches_batch:
            return int(self.cell.batch_size)
        return self.batch_search.largest_fit if self.batch_search is not None else None

    @property
    def overhead_s(self) -> float | None:
        return self.measurement.overhead_s if self.measurement else None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["cell"] = self.cell.to_dict()
        data["cell_id"] = self.cell.id
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "result") -> CellResult:
        """Parse and validate a dict written by :meth:`to_dict` (v1 or v2); SchemaError names the field."""
        if not isinstance(data, dict):
            raise SchemaError(f"{source}: expected an object, got {_kind(data)}")
        if data.get("schema") != SCHEMA_NAME:
            raise SchemaError(f"{source}: not a detbench cell (schema={data.get('schema')!r})")
        version = data.get("schema_version")
        if not isinstance(version, int) or not _is_int(version) or version > SCHEMA_VERSION or version < 1:
            raise SchemaError(
                f"{source}: schema_version {version!r} is not supported (this detbench reads 1..{SCHEMA_VERSION})"
            )
        try:
            return _parse(data, version)
        except SchemaError as exc:
            raise SchemaError(f"{source}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"{source}: malformed cell result ({exc})") from None


# --- parsing and validation ------------------------------------------------------------------------------

# field -> (low, high, integer); every top-level number is range-checked so corruption cannot pass as data
_NUMBERS: dict[str, tuple[float, float, bool]] = {
    "throughput_ips": (0, 1e7, False), "throughput_ips_p10": (0, 1e7, False), "throughput_ips_p90": (0, 1e7, False),
    "first_call_s": (0, 1e6, False), "compile_s": (0, 1e6, False), "warmup_iterations": (0, 1e9, True),
    "warmup_s": (0, 1e6, False), "graph_breaks": (0, 1e6, True), "break_even_iterations": (0, 1e15, False),
    "peak_memory_bytes": (0, 1e15, True), "memory_requested_bytes": (0, 1e15, True),
    "flops_per_image": (0, 1e16, False), "achieved_tflops": (0, 1e6, False), "peak_tflops": (0, 1e6, False),
    "mfu": (0, 100, False), "repeat": (0, 1e6, True),
}
_STRINGS = ("reason", "timer", "flop_convention", "device", "break_even_basis", "added_reason")
_OBJECTS = ("telemetry", "environment", "detections_per_image", "postprocess", "config", "model_runtime_notes")
_LATENCY_MS = (0, 1e8)


def _parse(data: dict[str, Any], version: int) -> CellResult:
    if data.get("cell") is None:
        raise SchemaError("cell is missing or null")
    cell = Cell.from_dict(data["cell"])
    _check_tree(data, "")
    status = data.get("status", "ok")
    if not isinstance(status, str):
        raise SchemaError(f"status must be a string, got {_kind(status)}")
    kwargs: dict[str, Any] = {"cell": cell, "status": status}
    for name, (low, high, integer) in _NUMBERS.items():
        value = _opt_num(data.get(name), name, low, high, integer=integer)
        kwargs[name] = int(value) if integer and value is not None else value
    for name in _STRINGS:
        kwargs[name] = _opt_str(data.get(name), name)
    for name in _OBJECTS:
        value = data.get(name)
        if value is not None and not isinstance(value, dict):
            raise SchemaError(f"{name} must be an object, got {_kind(value)}")
        kwargs[name] = value if value is not None or name not in ("config", "model_runtime_notes") else {}
    if kwargs["telemetry"] is not None:
        TelemetrySummary.from_dict(kwargs["telemetry"])  # validates; the dict stays as written
    times = data.get("times_ms", [])
    if not isinstance(times, list):
        raise SchemaError(f"times_ms must be a list, got {_kind(times)}")
    kwargs["times_ms"] = [_num(t, f"times_ms[{i}]", *_LATENCY_MS) for i, t in enumerate(times)]
    converged = data.get("warmup_converged")
    if converged is not None and not isinstance(converged, bool):
        raise SchemaError(f"warmup_converged must be true, false or null, got {_kind(converged)}")
    kwargs["warmup_converged"] = converged
    if data.get("latency") is not None:
        kwargs["latency"] = _record(LatencyStats, data["latency"], "latency")
    for name, record in (("setup", SetupTimes), ("measurement", Measurement), ("ratio", PairedRatio),
                         ("flops_info", FlopsInfo), ("failure", Failure), ("compile_details", CompileDetails),
                         ("batch_search", BatchSearch), ("deploy", DeployInfo), ("serve", ServeInfo)):
        if data.get(name) is not None:
            kwargs[name] = _record(record, data[name], name)
    failures = data.get("repeat_failures") or []
    if not isinstance(failures, list):
        raise SchemaError(f"repeat_failures must be a list, got {_kind(failures)}")
    kwargs["repeat_failures"] = [_record(RepeatFailure, f, f"repeat_failures[{i}]") for i, f in enumerate(failures)]
    if data.get("distributed") is not None:
        if not isinstance(data["distributed"], dict):
            raise SchemaError(f"distributed must be an object, got {_kind(data['distributed'])}")
        kwargs["distributed"] = DistributedStats.from_dict(data["distributed"])
    result = CellResult(**kwargs)
    if version == 1:
        _lift_v1_config(result)
    return result


# lists of records inside a record
_NESTED: dict[tuple[type, str], type] = {(Measurement, "blocks"): BlockRecord, (BatchSearch, "probes"): BatchProbe,
                                         (ServeInfo, "trials"): ServeTrial}
_RECORDS: dict[tuple[type, str], type] = {(DeployInfo, "parity"): Parity}  # a record inside a record


def _record(cls: type, data: Any, where: str) -> Any:
    """A typed record from its dict: unknown keys are refused, numbers range-checked, nested records parsed."""
    if not isinstance(data, dict):
        raise SchemaError(f"{where} must be an object, got {_kind(data)}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise SchemaError(f"{where}: unknown field(s) {', '.join(map(str, unknown))}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}"
        if (cls, key) in _NESTED:
            if not isinstance(value, list):
                raise SchemaError(f"{path} must be a list, got {_kind(value)}")
            values[key] = [_record(_NESTED[cls, key], b, f"{path}[{i}]") for i, b in enumerate(value)]
        elif cls is RepeatFailure and key == "failure" and value is not None:
            values[key] = _record(Failure, value, path)
        elif (cls, key) in _RECORDS and value is not None:
            values[key] = _record(_RECORDS[cls, key], value, path)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            values[key] = list(value)
        elif isinstance(value, bool) or value is None or isinstance(value, (str, dict)):
            values[key] = value
        elif isinstance(value, (int, float)):
            low, high = (-1e6, 1e6) if key == "round" else (0, 1e15) if key.endswith(
                ("_s", "_ms", "iterations", "n", "rounds", "repeat", "repeats")) else (-ABSURD, ABSURD)
            if cls is LatencyStats:
                low, high = _LATENCY_MS if key.endswith("_ms") else (0, 1e12)
            values[key] = _num(value, path, low, high)
        elif isinstance(value, list):
            values[key] = [_num(v, f"{path}[{i}]", -ABSURD, ABSURD) for i, v in enumerate(value)]
        else:
            raise SchemaError(f"{path} has an unexpected {_kind(value)}")
    missing = [f.name for f in names.values() if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise SchemaError(f"{where}: missing field(s) {', '.join(missing)}")
    return cls(**values)


def _lift_v1_config(result: CellResult) -> None:
    """Version 1 kept set-up times, measurement, FLOP details and failure tails in ``config``: lift them."""
    config = result.config
    setup = config.get("setup_s")
    if isinstance(setup, dict):
        result.setup = SetupTimes(build_s=setup.get("build_and_inputs"),
                                  postprocess_calibration_s=setup.get("postprocess_calibration"),
                                  flop_count_s=setup.get("flop_count"))
    measured = config.get("measurement")
    if isinstance(measured, dict) and result.times_ms:
        wall = config.get("cell_wall_s")
        timed = measured.get("wall_s") or 0.0
        result.measurement = Measurement(
            timer=str(measured.get("timer") or result.timer or ""), iterations=len(result.times_ms), timed_s=timed,
            isolation=str(config.get("isolation") or "process"), rounds=1,
            wall_throughput_ips=measured.get("wall_throughput_ips"),
            memory_method=measured.get("memory") if isinstance(measured.get("memory"), str) else None,
            cell_wall_s=wall, overhead_s=wall - timed if isinstance(wall, (int, float)) else None,
            warmup_stop_reason=config.get("warmup_stop_reason"), final_loss=config.get("final_loss"))
    flops = config.get("flops")
    if isinstance(flops, dict):
        result.flops_info = FlopsInfo(backward_counted=flops.get("backward_counted"),
                                      not_counted=flops.get("not_counted"), top_ops=flops.get("top_ops") or {},
                                      peak_basis=config.get("peak_basis"))
    if isinstance(config.get("break_even"), str) and result.break_even_basis is None:
        result.break_even_basis = config["break_even"]
    tails = {k: config.get(k) for k in ("traceback_tail", "output_tail", "error_type")}
    if any(isinstance(v, str) for v in tails.values()):
        result.failure = Failure(error_type=tails["error_type"], traceback_tail=tails["traceback_tail"],
                                 output_tail=tails["output_tail"], returncode=config.get("returncode"))
    notes = config.get("model_runtime_notes")
    if isinstance(notes, dict) and not result.model_runtime_notes:
        result.model_runtime_notes = notes


def _check_tree(value: Any, path: str) -> None:
    """Every number anywhere (config, telemetry, environment ...) is finite and below :data:`ABSURD`. A first pass
    only checks; the paths that name an offender are built when there is one (building one for every value took
    about half of loading a 3,000-cell file)."""
    if not _tree_is_sane(value):
        _raise_at_first_offender(value, path)


def _tree_is_sane(value: Any) -> bool:
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list):
        return _number_is_sane(value)
    for item in value:
        if isinstance(item, (dict, list)):
            if not _tree_is_sane(item):
                return False
        elif not _number_is_sane(item):
            return False
    return True


def _number_is_sane(value: Any) -> bool:
    """True for anything but a number, and for a finite number within +-ABSURD."""
    if isinstance(value, float):
        return -ABSURD <= value <= ABSURD  # false for NaN and the infinities too
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) <= ABSURD
    return True


def _raise_at_first_offender(value: Any, path: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _raise_at_first_offender(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _raise_at_first_offender(item, f"{path}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        _num(value, path or "value", -ABSURD, ABSURD)


def _num(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(f"{where} must be a number, got {_kind(value)}")
    if isinstance(value, int) and abs(value) > ABSURD:
        raise SchemaError(f"{where} is an absurd number ({len(str(abs(value)))} digits)")
    if not math.isfinite(value):
        raise SchemaError(f"{where} must be finite, got {value!r}")
    if not low <= value <= high:
        raise SchemaError(f"{where} = {value:.4g} is outside the plausible range {low:g}..{high:g}")
    return value


def _opt_num(value: Any, where: str, low: float, high: float, *, integer: bool = False) -> float | None:
    if value is None:
        return None
    if integer and (isinstance(value, float) and not value.is_integer()):
        raise SchemaError(f"{where} must be an integer, got {value!r}")
    return _num(value, where, low, high)


def _opt_str(value: Any, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise SchemaError(f"{where} must be a string, got {_kind(value)}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _choice(name: str, value: Any, valid: Iterable[str]) -> None:
    valid = tuple(valid)
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
