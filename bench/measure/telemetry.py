"""NVML telemetry beside one benchmark cell's timed region: sampler threads and a per-cell summary.

Usage (the runner wraps exactly one cell's timed region)::

    with TelemetryTracker([0], rate_hz=50) as tracker:
        run_timed_iterations()
    result.telemetry = tracker.summary(images=n_images)

CUDA ordinals are mapped to NVML devices by UUID (honouring CUDA_VISIBLE_DEVICES). Without NVML the
summary says ``available: false`` with a reason; nothing here raises because a GPU query failed.
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from detbench.bench.measure import telemetry_stats as stats
from detbench.envcheck import nvml

NAN = float("nan")
PCIE_KB = 1024  # NVML reports PCIe throughput in KB/s
# The energy counter is read only every ENERGY_READ_PERIOD_S (and at the first and last sample): only its
# end points matter, and on an H100 (driver 580) one read costs ~3 ms against ~1-8 us for the others.
ENERGY_READ_PERIOD_S = 0.5
MAX_RATE_HZ = 1000.0  # NVML's own windows are >= 1/6 s; faster sampling only re-reads them

# Summary "metrics" per device (plus the PCIe pair); RAW_METRICS are every fast-lane series kept.
SUMMARY_METRICS = (
    "gpu_util_pct",
    "mem_util_pct",
    "memory_used_bytes",
    "power_w",
    "temperature_c",
    "sm_clock_mhz",
    "mem_clock_mhz",
)
PCIE_METRICS = ("pcie_tx_bytes_s", "pcie_rx_bytes_s")
RAW_METRICS = (*SUMMARY_METRICS, "energy_mj", "throttle_mask")
SERIES_DIGITS = {"gpu_util_pct": 0, "power_w": 1, "sm_clock_mhz": 0, "temperature_c": 0, "memory_used_bytes": 0}


@dataclass(frozen=True)
class Reader:
    """One NVML query of the hot loop: ``store(fn(*args))``; ``store(None)`` when it fails or is skipped.

    ``every_ticks`` > 1 reads it only on every n-th tick (and the last one).
    """

    query: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    store: Callable[[Any], None]
    every_ticks: int = 1


@dataclass
class DeviceSeries:
    """Everything sampled from one GPU during one cell."""

    device: nvml.NvmlDevice
    name: str
    t_s: array = field(default_factory=lambda: array("d"))
    values: dict[str, array] = field(default_factory=lambda: {m: array("d") for m in RAW_METRICS})
    pcie_t_s: array = field(default_factory=lambda: array("d"))
    pcie: dict[str, array] = field(default_factory=lambda: {m: array("d") for m in PCIE_METRICS})
    readers: list[Reader] = field(default_factory=list)
    pcie_readers: list[Reader] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    throttle_seen: int = 0
    lost_at_s: float | None = None

    def truncate(self, times: array, series: dict[str, array]) -> None:
        """Drop a half-read sample (the GPU was lost during it) so every series stays aligned."""
        del times[-1:]
        for values in series.values():
            del values[len(times):]


def _scalar(values: array, scale: float = 1.0) -> Callable[[Any], None]:
    append = values.append

    def store(value: Any) -> None:
        append(NAN if value is None else value * scale)

    return store


def _attribute(values: array, name: str) -> Callable[[Any], None]:
    append = values.append

    def store(value: Any) -> None:
        append(NAN if value is None else getattr(value, name))

    return store


def _utilisation(gpu: array, memory: array) -> Callable[[Any], None]:
    def store(value: Any) -> None:
        if value is None:
            gpu.append(NAN)
            memory.append(NAN)
        else:
            gpu.append(value.gpu)
            memory.append(value.memory)

    return store


def _throttle(series: DeviceSeries) -> Callable[[Any], None]:
    append = series.values["throttle_mask"].append

    def store(value: Any) -> None:
        if value is None:
            append(NAN)
        else:
            append(value)
            series.throttle_seen |= int(value)

    return store


def _clock_event_reasons(nv: Any) -> Callable[..., Any] | None:
    """Newer pynvml names it ClocksEventReasons; older only ClocksThrottleReasons."""
    return getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
        nv, "nvmlDeviceGetCurrentClocksThrottleReasons", None
    )


def build_readers(nv: Any, series: DeviceSeries, rate_hz: float = 50.0, pcie: bool = True) -> None:
    """Probe each query once; keep in the hot loop only those this GPU answers."""
    energy_every = max(1, round(ENERGY_READ_PERIOD_S * rate_hz))
    h = series.device.handle
    v = series.values
    fast = [
        Reader("utilization", nv.nvmlDeviceGetUtilizationRates, (h,),
               _utilisation(v["gpu_util_pct"], v["mem_util_pct"])),
        Reader("memory_info", nv.nvmlDeviceGetMemoryInfo, (h,), _attribute(v["memory_used_bytes"], "used")),
        Reader("power_usage", nv.nvmlDeviceGetPowerUsage, (h,), _scalar(v["power_w"], 0.001)),
        Reader("total_energy", nv.nvmlDeviceGetTotalEnergyConsumption, (h,), _scalar(v["energy_mj"]), energy_every),
        Reader("temperature", nv.nvmlDeviceGetTemperature, (h, nv.NVML_TEMPERATURE_GPU), _scalar(v["temperature_c"])),
        Reader("sm_clock", nv.nvmlDeviceGetClockInfo, (h, nv.NVML_CLOCK_SM), _scalar(v["sm_clock_mhz"])),
        Reader("mem_clock", nv.nvmlDeviceGetClockInfo, (h, nv.NVML_CLOCK_MEM), _scalar(v["mem_clock_mhz"])),
    ]
    reasons = _clock_event_reasons(nv)
    if reasons is not None:
        fast.append(Reader("clock_event_reasons", reasons, (h,), _throttle(series)))
    else:
        series.unsupported.append("clock_event_reasons")
    p = series.pcie
    pcie_readers = [
        Reader("pcie_tx", nv.nvmlDeviceGetPcieThroughput, (h, nv.NVML_PCIE_UTIL_TX_BYTES),
               _scalar(p["pcie_tx_bytes_s"], PCIE_KB)),
        Reader("pcie_rx", nv.nvmlDeviceGetPcieThroughput, (h, nv.NVML_PCIE_UTIL_RX_BYTES),
               _scalar(p["pcie_rx_bytes_s"], PCIE_KB)),
    ] if pcie else []
    for reader, keep in [(r, series.readers) for r in fast] + [(r, series.pcie_readers) for r in pcie_readers]:
        if nvml.query(reader.fn, *reader.args) is None:
            series.unsupported.append(reader.query)
        else:
            keep.append(reader)


class Lane:
    """One sampler loop: ticks at ``rate_hz`` on a monotonic clock, sleeping until the next deadline.

    A tick that overruns skips the deadlines it missed instead of bursting to catch up, so the
    schedule never drifts. ``pcie`` selects which of each device's readers and series this lane owns.
    """

    def __init__(self, name: str, series: list[DeviceSeries], rate_hz: float, t0: float, nv_error: type[BaseException],
                 pcie: bool) -> None:
        self.name = name
        self.series = series
        self.period_s = 1.0 / rate_hz
        self.t0 = t0
        self.nv_error = nv_error
        self.pcie = pcie
        self.stop = threading.Event()
        self.ticks = 0
        self.busy_s = 0.0
        self.first_s: float | None = None
        self.last_s: float | None = None
        self.error: str | None = None
        self.final = False  # the closing tick reads every query, whatever its cadence
        self.cpu_s = 0.0  # CPU time of the lane's thread (its real cost to the host)
        self.thread: threading.Thread | None = None

    def tick(self) -> None:
        """Read every live GPU once. An unexpected (non-NVML) error stops this lane and is recorded."""
        if self.error is not None:
            return
        start = time.perf_counter()
        t = start - self.t0
        error_type = self.nv_error
        n, final = self.ticks, self.final
        for s in self.series:
            if s.lost_at_s is not None:
                continue
            times, readers, values = (s.pcie_t_s, s.pcie_readers, s.pcie) if self.pcie else (s.t_s, s.readers, s.values)
            if not readers:
                continue
            times.append(t)
            try:
                for reader in readers:
                    if reader.every_ticks > 1 and n % reader.every_ticks and not final:
                        reader.store(None)
                        continue
                    try:
                        value = reader.fn(*reader.args)
                    except error_type as exc:
                        if nvml.is_gpu_lost(exc):
                            s.lost_at_s = t
                            s.truncate(times, values)
                            break
                        value = None
                    reader.store(value)
            except Exception as exc:  # noqa: BLE001 - a broken sampler must not kill the cell: recorded in the summary
                s.truncate(times, values)
                self.error = f"{type(exc).__name__}: {exc}"
                self.stop.set()
                return
        end = time.perf_counter()
        self.busy_s += end - start
        self.ticks += 1
        if self.first_s is None:
            self.first_s = t
        self.last_s = t

    def run(self) -> None:
        cpu_start = time.thread_time()
        k = 1
        while not self.stop.is_set():
            delay = self.t0 + k * self.period_s - time.perf_counter()
            if delay > 0 and self.stop.wait(delay):
                break
            self.tick()
            if self.error is not None or all(s.lost_at_s is not None for s in self.series):
                break
            k = max(k + 1, math.floor((time.perf_counter() - self.t0) / self.period_s) + 1)
        self.cpu_s = time.thread_time() - cpu_start

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name=f"detbench-telemetry-{self.name}", daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
            self.thread = None

    def achieved_rate_hz(self) -> float:
        if self.first_s is None or self.last_s is None or self.ticks < 2 or self.last_s <= self.first_s:
            return 0.0
        return (self.ticks - 1) / (self.last_s - self.first_s)


class TelemetryTracker:
    """Context manager sampling NVML for the GPUs of one cell; :meth:`summary` gives the JSON-able result.

    ``cuda_uuids`` (one per CUDA ordinal of this process) is for tests; by default torch is asked.
    PCIe throughput is sampled in a second lane because NVML measures it over a ~20 ms window per call.
    """

    def __init__(
        self,
        cuda_indices: list[int],
        rate_hz: float = 50.0,
        keep_series_points: int = 512,
        cuda_uuids: list[str] | None = None,
        pcie: bool = True,
    ) -> None:
        if not isinstance(rate_hz, (int, float)) or not 0 <= rate_hz <= MAX_RATE_HZ:
            raise ValueError(
                f"rate_hz must be a number from 0 to {MAX_RATE_HZ:g} (0 disables telemetry), got {rate_hz!r}")
        if keep_series_points < 2:
            raise ValueError(f"keep_series_points must be >= 2, got {keep_series_points!r}")
        if any(not isinstance(i, int) or i < 0 for i in cuda_indices):
            raise ValueError(f"cuda_indices must be CUDA ordinals (ints >= 0), got {cuda_indices!r}")
        self.cuda_indices = list(cuda_indices)
        self.rate_hz = float(rate_hz)
        self.keep_series_points = keep_series_points
        self._cuda_uuids = cuda_uuids
        self.pcie = pcie  # False: no PCIe-throughput lane (each NVML call blocks ~20 ms)
        self.series: list[DeviceSeries] = []
        self.unmapped_cuda_indices: list[int] = []
        self.reason: str | None = None
        self._lanes: list[Lane] = []
        self._fast: Lane | None = None
        self._t0 = 0.0

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> TelemetryTracker:
        if self.rate_hz == 0:
            return self
        nv = nvml.load()
        if nv is None:
            self.reason = nvml.unavailable_reason() or "NVML not available"
            return self
        self.series = self._map_devices(nv)
        if not self.series:
            self.reason = self.reason or f"none of CUDA devices {self.cuda_indices} could be matched to an NVML device"
            return self
        for s in self.series:
            build_readers(nv, s, self.rate_hz, pcie=self.pcie)
        self._t0 = time.perf_counter()
        error_type = getattr(nv, "NVMLError", Exception)
        self._fast = Lane("sampler", self.series, self.rate_hz, self._t0, error_type, pcie=False)
        self._lanes = [self._fast]
        if any(s.pcie_readers for s in self.series):
            self._lanes.append(Lane("pcie", self.series, self.rate_hz, self._t0, error_type, pcie=True))
        self._fast.tick()  # first sample before the region starts, so energy covers all of it
        for lane in self._lanes:
            lane.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for lane in self._lanes:
            lane.join()
        if self._fast is not None:
            self._fast.final = True
            self._fast.tick()  # last sample after the region ends

    def _map_devices(self, nv: Any) -> list[DeviceSeries]:
        uuids = self._cuda_uuids
        if uuids is None:
            try:
                uuids = nvml.torch_device_uuids()
            except ImportError as exc:
                self.reason = f"torch is not importable, cannot list CUDA devices ({exc})"
                return []
        if not uuids:
            self.reason = "no CUDA devices visible to this process"
            return []
        by_cuda = {d.cuda_index: d for d in nvml.map_cuda_to_nvml(uuids)}
        out = []
        for index in self.cuda_indices:
            device = by_cuda.get(index)
            if device is None:
                self.unmapped_cuda_indices.append(index)
                continue
            out.append(DeviceSeries(device=device, name=nvml.query(nv.nvmlDeviceGetName, device.handle) or "unknown"))
        return out

    # -- live view -----------------------------------------------------------------------------
    @property
    def samples_taken(self) -> int:
        return self._fast.ticks if self._fast is not None else 0

    def latest(self) -> list[dict[str, Any]]:
        """The most recent finite reading of every metric per GPU (for live exporters), else None."""
        out = []
        for s in self.series:
            row: dict[str, Any] = {"cuda_index": s.device.cuda_index, "uuid": s.device.uuid, "name": s.name,
                                   "lost": s.lost_at_s is not None}
            for name, values in list(s.values.items()) + list(s.pcie.items()):
                row[name] = next((v for v in reversed(values[-1000:]) if not math.isnan(v)), None)
            out.append(row)
        return out

    # -- result --------------------------------------------------------------------------------
    def summary(self, images: int) -> dict[str, Any] | None:
        """JSON-able summary of the sampled region; None when telemetry was disabled (rate 0)."""
        if self.rate_hz == 0:
            return None
        fast = self._fast
        duration_s = (fast.last_s - fast.first_s
                      if fast and fast.first_s is not None and fast.last_s is not None else 0.0)
        out: dict[str, Any] = {
            "available": fast is not None,
            "reason": self.reason,
            "rate_hz_requested": self.rate_hz,
            "rate_hz_achieved": round(fast.achieved_rate_hz(), 2) if fast else 0.0,
            "samples": fast.ticks if fast else 0,
            "duration_s": round(duration_s, 4),
            "devices": [],
            "energy_j": None,
            "energy_per_image_j": None,
            "images_per_s_per_w": None,
            "mean_power_w": None,
            "throttled": False,
        }
        if fast is None:
            return out
        pcie = self._lanes[1] if len(self._lanes) > 1 else None
        out["pcie_rate_hz_achieved"] = round(pcie.achieved_rate_hz(), 2) if pcie else None
        out["sampler_tick_ms"] = round(1000 * fast.busy_s / fast.ticks, 4) if fast.ticks else None
        # wall time inside NVML calls (mostly waiting on the driver, GIL released) and CPU time used
        busy = duration_s > 0
        out["sampler_busy_fraction"] = round(fast.busy_s / duration_s, 5) if busy else None
        out["pcie_busy_fraction"] = round(pcie.busy_s / duration_s, 5) if busy and pcie else None
        out["sampler_cpu_fraction"] = round(sum(lane.cpu_s for lane in self._lanes) / duration_s, 5) if busy else None
        errors = [f"{lane.name}: {lane.error}" for lane in self._lanes if lane.error]
        if errors:
            out["sampler_errors"] = errors
        if self.unmapped_cuda_indices:
            out["unmapped_cuda_indices"] = self.unmapped_cuda_indices
        devices = [device_summary(s, self.keep_series_points) for s in self.series]
        out["devices"] = devices
        energies = [d["energy_j"] for d in devices]
        if devices and all(e is not None for e in energies):
            energy_j = sum(energies)
            power_w = sum(d["energy_j"] / d["energy_window_s"] for d in devices if d["energy_window_s"])
            out["energy_j"] = round(energy_j, 4)
            out["mean_power_w"] = round(power_w, 3) if power_w else None
            if images > 0:
                out["energy_per_image_j"] = round(energy_j / images, 6)
            if power_w and duration_s > 0:
                out["images_per_s_per_w"] = round(images / duration_s / power_w, 6)
        out["throttled"] = any(d["throttled"] for d in devices)
        return out


def device_summary(s: DeviceSeries, keep_points: int) -> dict[str, Any]:
    """Stats, energy, throttle reasons and a decimated series for one GPU."""
    t = s.t_s
    metrics: dict[str, Any] = {name: stats.distribution(s.values[name]) for name in SUMMARY_METRICS}
    for name in PCIE_METRICS:
        metrics[name] = stats.distribution(s.pcie[name])
    energy_j, why = stats.counter_energy_j(s.values["energy_mj"])
    source: str | None = "counter"
    note = None
    if energy_j is None:
        energy_j = stats.integrate_power_j(t, s.values["power_w"])
        source = "integrated-power" if energy_j is not None else None
        note = why
    window_s = (t[-1] - t[0]) if len(t) >= 2 else 0.0
    keep = stats.decimate_indices(len(t), keep_points)
    reasons = stats.throttle_reason_names(s.throttle_seen)
    device: dict[str, Any] = {
        "cuda_index": s.device.cuda_index,
        "nvml_index": s.device.nvml_index,
        "uuid": s.device.uuid,
        "name": s.name,
        "samples": len(t),
        "metrics": metrics,
        "energy_j": round(energy_j, 4) if energy_j is not None else None,
        "energy_source": source,
        "energy_window_s": round(window_s, 4),
        "throttle_reasons": reasons,
        "throttled": bool(reasons),
        "unsupported_queries": s.unsupported,
        "lost": s.lost_at_s is not None,
        "series": {
            "t_s": [round(t[i] - t[0], 3) for i in keep],
            **{
                name: stats.rounded(s.values[name], keep, digits) if len(s.values[name]) == len(t) else None
                for name, digits in SERIES_DIGITS.items()
            },
        },
    }
    if note:
        device["energy_note"] = note
    if s.lost_at_s is not None:
        device["lost_at_s"] = round(s.lost_at_s, 4)
    return device
