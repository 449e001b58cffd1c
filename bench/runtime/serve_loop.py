"""The serving study's server loop (detbench.bench.tools.serve): a system under test driven by MLPerf's LoadGen.

:class:`Server` is a request queue and a batching thread in front of a step (the model's forward with its own
post-processing): LoadGen's issue callback only enqueues; the thread takes the first waiting query, waits up to the
batch wait for more (up to the largest batch), runs the step and reports the whole batch complete.
:func:`run_trial` runs one LoadGen test against it and reads the figures back from LoadGen's logs, which LoadGen
times from each query's scheduled arrival, so queueing in a slow server is charged (no coordinated omission).
:func:`build_step` sets a registered detector up as the step: reduced image size, calibrated post-processing, one
deployment runtime (detbench.bench.runtime.deploy). ``python -m detbench.bench.runtime.serve_loop`` is the process
detbench.bench.tools.serve starts: JSON commands on stdin (set up, run a trial, end), replies on stdout behind
:data:`REPLY`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# the trials' p99 interval (trial_from_logs) needs scipy.stats, which detbench.bench.core.serving imports at first use:
# here it loads with the server process, under the set-up timeout, not inside its first trial's (a fresh server's
# offline trial missed a 2 s trial timeout importing it, in a loaded test run, 2026-12-06)
import scipy.stats  # noqa: F401

from detbench.bench.core.schema import ServeTrial
from detbench.bench.core.serving import (
    ServerFacts,
    TrialReply,
    TrialRequest,
    detail_log_values,
    trace_latencies_ns,
    trial_from_logs,
)

REPLY = "@@detbench-serve "  # the prefix of the loop's replies on stdout (anything else there is noise)
SAMPLES = 16  # distinct images in LoadGen's sample library (LoadGen draws each query's sample from these)
HISTOGRAM_RANGE_US = (1, 3_600_000_000)  # 1 us .. 1 h, 3 significant digits
SCENARIO_NAMES = {"single-stream": "SingleStream", "server": "Server", "offline": "Offline"}
TRIAL_MIN_DURATION_MS = 100  # LoadGen's minimum test duration; the query count (max_query_count) ends a trial


class MissingServeExtraError(RuntimeError):
    """LoadGen or HdrHistogram is not installed."""


def loadgen() -> Any:
    """``mlperf_loadgen``, or a one-line error saying how to install it."""
    try:
        return importlib.import_module("mlperf_loadgen")
    except ImportError:
        raise MissingServeExtraError("the serving study needs MLPerf LoadGen: pip install 'detbench[serve]'") from None


def loadgen_version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return f"mlperf-loadgen {version('mlcommons-loadgen')}"
    except PackageNotFoundError:
        return "mlperf-loadgen (version unknown)"


_SPIN_BLOCK = bytes(16384)  # hashing it takes ~30 us, without the GIL (hashlib releases it past 2 KiB)
SWITCH_INTERVAL_S = 0.001  # the server process's GIL switch interval (Python's default, 5 ms, delays LoadGen's issue)


def busy_wait(seconds: float) -> None:
    """Spin (never sleep) for ``seconds`` of wall time, keeping a core busy as a model's kernels do and, like them,
    mostly without the GIL, so LoadGen's issue thread is not held up by the spin itself."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        hashlib.sha256(_SPIN_BLOCK).digest()


class Server:
    """The system under test: queued queries, dynamic batching up to ``max_batch`` within ``max_wait_s`` of the
    first query's arrival at the queue, and ``step(sample indices)``. ``plant_slowdown`` adds a busy-wait of that
    fraction of each step's own time after it (the study's self-check)."""

    def __init__(self, step: Callable[[list[int]], Any], max_batch: int = 1, max_wait_s: float = 0.0,
                 plant_slowdown: float = 0.0) -> None:
        self.step, self.max_batch, self.max_wait_s, self.plant = step, max_batch, max_wait_s, plant_slowdown
        self._queue: deque[tuple[Any, int, float]] = deque()  # (LoadGen's sample id, sample index, enqueued at)
        self._ready = threading.Condition()
        self._stop = False
        self.calls = 0
        self.images = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="detbench-serve-batcher", daemon=True)
        self._thread.start()

    # LoadGen's SUT callbacks
    def issue(self, samples: Sequence[Any]) -> None:
        now = time.perf_counter()
        with self._ready:
            self._queue.extend((s.id, s.index, now) for s in samples)
            self._ready.notify()

    def flush(self) -> None:
        pass

    def reset_counts(self) -> None:
        self.calls = self.images = 0

    def close(self) -> None:
        with self._ready:
            self._stop = True
            self._ready.notify()
        self._thread.join(timeout=60)

    def _take_batch(self) -> list[tuple[Any, int, float]] | None:
        with self._ready:
            while not self._queue and not self._stop:
                self._ready.wait()
            if self._stop:
                return None
            first = self._queue[0][2]
            deadline = first + self.max_wait_s
            while len(self._queue) < self.max_batch and not self._stop:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._ready.wait(left)
            return [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]

    def _loop(self) -> None:
        lg = loadgen()
        while (batch := self._take_batch()) is not None:
            try:
                began = time.perf_counter()
                self.step([index for _, index, _ in batch])
                if self.plant:
                    busy_wait(self.plant * (time.perf_counter() - began))
            except BaseException as exc:  # noqa: BLE001 - recorded; LoadGen still gets its completions (no hang)
                self.error = self.error or exc
            self.calls += 1
            self.images += len(batch)
            lg.QuerySamplesComplete([lg.QuerySampleResponse(sample_id, 0, 0) for sample_id, _, _ in batch])


def histogram_encoding(latencies_ms: Sequence[float]) -> str:
    """The latencies (microseconds) as an HdrHistogram, in its compressed base64 encoding (``HdrHistogram.decode``)."""
    try:
        from hdrh.histogram import HdrHistogram  # noqa: PLC0415
    except ImportError:
        raise MissingServeExtraError("the serving study needs HdrHistogram: pip install 'detbench[serve]'") from None
    histogram = HdrHistogram(*HISTOGRAM_RANGE_US, 3)
    for value in latencies_ms:
        histogram.record_value(max(1, min(round(value * 1000), HISTOGRAM_RANGE_US[1])))
    encoded = histogram.encode()
    return encoded.decode("ascii") if isinstance(encoded, bytes) else str(encoded)


def decode_histogram(text: str) -> Any:
    """The HdrHistogram :func:`histogram_encoding` wrote (values in microseconds)."""
    from hdrh.histogram import HdrHistogram  # noqa: PLC0415

    return HdrHistogram.decode(text)


def run_trial(server: Server, request: TrialRequest, log_dir: str | os.PathLike[str], samples: int = SAMPLES,
              seed: int = 0) -> TrialReply:
    """One LoadGen test of ``request``'s scenario against ``server``; LoadGen's logs go to ``log_dir``."""
    lg = loadgen()
    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, SCENARIO_NAMES[request.scenario])
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_duration_ms = TRIAL_MIN_DURATION_MS
    settings.min_query_count = settings.max_query_count = request.queries
    if request.max_duration_s:
        settings.max_duration_ms = int(request.max_duration_s * 1000)
    for name in ("qsl_rng_seed", "sample_index_rng_seed", "schedule_rng_seed"):
        setattr(settings, name, seed)
    expected_ms = max(request.expected_ms or 1.0, 0.01)
    if request.scenario == "server":
        assert request.target_qps is not None and request.bound_ms is not None
        settings.server_target_qps = request.target_qps
        settings.server_target_latency_ns = int(request.bound_ms * 1e6)
        settings.server_target_latency_percentile = 0.99
    elif request.scenario == "single-stream":
        settings.single_stream_expected_latency_ns = int(expected_ms * 1e6)
    else:  # offline: LoadGen sizes its one query as expected rate x minimum duration x 1.1
        settings.offline_expected_qps = request.queries / (1.1 * TRIAL_MIN_DURATION_MS / 1000)
    log = lg.LogSettings()
    log.log_output.outdir = str(log_dir)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = True  # the per-sample latencies: the histogram and the cell's times
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    sut = lg.ConstructSUT(server.issue, server.flush)
    qsl = lg.ConstructQSL(samples, samples, lambda indices: None, lambda indices: None)
    server.reset_counts()
    began = time.perf_counter()
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    wall = time.perf_counter() - began
    if server.error is not None:
        error, server.error = server.error, None
        return TrialReply(ServeTrial("error", target_qps=request.target_qps, wall_s=round(wall, 3),
                                     reason=f"{type(error).__name__}: {error}"))
    detail = detail_log_values((Path(log_dir) / "mlperf_log_detail.txt").read_text(errors="replace"))
    latencies = [ns / 1e6 for ns in trace_latencies_ns((Path(log_dir) / "mlperf_log_trace.json").read_text(
        errors="replace"))]
    mean_batch = server.images / server.calls if server.calls else None
    trial = trial_from_logs(detail, latencies, target_qps=request.target_qps, bound_ms=request.bound_ms,
                            mean_batch=mean_batch, histogram=histogram_encoding(latencies) if latencies else None,
                            wall_s=wall)
    return TrialReply(trial, latencies)


def median_step_ms(step: Callable[[list[int]], Any], warmup: int = 3, repeats: int = 7) -> float:
    """One query alone through the step: the median of ``repeats`` calls after ``warmup``."""
    for i in range(warmup):
        step([i % SAMPLES])
    times = []
    for i in range(repeats):
        began = time.perf_counter()
        step([i % SAMPLES])
        times.append((time.perf_counter() - began) * 1000.0)
    return statistics.median(times)


# --- a registered detector as the step -----------------------------------------------------------------------


@dataclass
class ServerSpec:
    """What the server process sets up: a registered model at a size, on a runtime, and how it batches."""

    model: str
    runtime: str = "eager"
    image_size: tuple[int, int] | None = None
    max_batch: int = 1
    batch_wait_ms: float = 0.0
    plant_slowdown: float = 0.0
    seed: int = 0
    threads: int | None = None  # torch's intra-op threads (None: torch's default)
    model_modules: list[str] = field(default_factory=list)
    target_candidates: int | None = None  # post-processing calibration target (None: the detector kind's default)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerSpec:
        data = dict(data)
        if data.get("image_size") is not None:
            data["image_size"] = tuple(data["image_size"])
        return cls(**data)


def build_step(spec: ServerSpec) -> tuple[Callable[[list[int]], Any], ServerFacts]:
    """The model of ``spec`` set up to serve: built with random weights at the size, BatchNorm statistics and the
    score threshold calibrated (detbench.bench.models.postprocess: a stated number of candidates per image enters NMS),
    then deployed on the runtime (one artifact per batch size where the runtime's artifact has a fixed input shape)."""
    import torch  # noqa: PLC0415 - the loop's machinery and its tests need no torch

    from detbench.bench.core.options import import_model_modules  # noqa: PLC0415
    from detbench.bench.models import get_model  # noqa: PLC0415
    from detbench.bench.models.postprocess import calibrate_postprocess  # noqa: PLC0415
    from detbench.bench.models.registry import configure_size  # noqa: PLC0415
    from detbench.bench.runtime.build import CALIBRATION_IMAGES  # noqa: PLC0415
    from detbench.bench.runtime.deploy import deploy  # noqa: PLC0415

    import_model_modules(tuple(spec.model_modules))
    if spec.threads:
        torch.set_num_threads(spec.threads)
    device = torch.device("cpu")  # CPU first (issue 41); the GPU run is its own issue
    model_spec = get_model(spec.model)
    torch.manual_seed(spec.seed)
    model = model_spec.build(None)
    size = configure_size(model, model_spec, spec.image_size)
    model.to(device).eval()
    generator = torch.Generator(device=device).manual_seed(spec.seed)
    calibration = model_spec.make_inputs(CALIBRATION_IMAGES, size, device, generator)
    load = calibrate_postprocess(model, model_spec, calibration, spec.target_candidates)
    images = model_spec.make_inputs(SAMPLES, size, device, generator)

    def pick(indices: list[int]) -> Any:
        return [images[i] for i in indices] if isinstance(images, list) else images[indices]

    notes: dict[str, str] = {}
    batches = range(1, spec.max_batch + 1)
    runners: dict[int, Callable[[Any], Any]]
    deployed_kept: list[Any] = []  # the step holds them: their artifact folders live as long as the server does
    if spec.runtime == "eager":
        runners = {b: model for b in batches}
    elif spec.runtime in FIXED_SHAPE_RUNTIMES:
        deployed_kept = [deploy(model, pick(list(range(b))), spec.runtime, device, cold_start=False) for b in batches]
        runners = {b: deployed.runner for b, deployed in zip(batches, deployed_kept)}
        notes["artifacts"] = f"one per batch size 1..{spec.max_batch} ({spec.runtime}'s inputs have a fixed shape)"
    else:
        deployed_kept = [deploy(model, pick(list(batches)), spec.runtime, device, cold_start=False)]
        runners = {b: deployed_kept[0].runner for b in batches}
        notes["artifacts"] = "one for every batch size"
    deploy_info = deployed_kept[0].info if deployed_kept else None

    def step(indices: list[int], _kept: list[Any] = deployed_kept) -> Any:
        with torch.no_grad():
            return runners[len(indices)](pick(indices))

    outputs = step(list(range(min(spec.max_batch, SAMPLES))))
    detections = None
    if model_spec.count_detections is not None:
        counts = model_spec.count_detections(outputs)
        detections = {"mean": sum(counts) / len(counts), "min": float(min(counts)), "max": float(max(counts))}
    notes["inputs"] = f"{SAMPLES} uniform-noise images of {size[0]}x{size[1]}, seed {spec.seed}"
    facts = ServerFacts(step_ms=median_step_ms(step), load_generator=loadgen_version(), threads=torch.get_num_threads(),
                        postprocess=load.to_dict() if load is not None else None, detections_per_image=detections,
                        deploy=deploy_info, device="cpu", notes=notes)
    return step, facts


FIXED_SHAPE_RUNTIMES = ("onnxruntime", "aot-inductor")  # an artifact per input shape (batch size)


# --- the server process ----------------------------------------------------------------------------------------


def reply(kind: str, **payload: Any) -> None:
    sys.stdout.write(REPLY + json.dumps({"reply": kind, **payload}, default=_plain) + "\n")
    sys.stdout.flush()


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def main(argv: list[str] | None = None) -> int:
    """The server process: ``setup`` (a :class:`ServerSpec`), then ``trial`` commands, then ``end``; one JSON
    object a line on stdin, replies on stdout. A trial's failure is its reply, not the process's end."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    server: Server | None = None
    log_root = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="detbench-serve-"))
    trials = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        kind = command.get("command")
        if kind == "end":
            break
        try:
            if kind == "setup":
                spec = ServerSpec.from_dict(command["spec"])
                step, facts = build_step(spec)
                server = Server(step, spec.max_batch, spec.batch_wait_ms / 1000.0, spec.plant_slowdown)
                reply("ready", facts=facts)
            elif kind == "trial":
                if server is None:
                    raise RuntimeError("trial before setup")
                request = TrialRequest(**command["request"])
                trials += 1
                outcome = run_trial(server, request, log_root / command.get("name", f"trial-{trials:02d}"))
                reply("trial", trial=outcome.trial, latencies_ms=[round(t, 4) for t in outcome.latencies_ms])
            else:
                raise ValueError(f"unknown command {kind!r}; valid: setup, trial, end")
        except Exception as exc:  # noqa: BLE001 - the coordinator records it and decides
            reply("error", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-4000:])
    if server is not None:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
