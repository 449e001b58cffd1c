"""Timing trackers: first call, warm-up until stable, and the timed region (CUDA events or perf_counter).

The runner hands in ``step`` (one iteration: one batch) and ``sync`` (wait for the device); nothing
here knows about models. Warm-up is measured until the median settles, never a fixed count.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from detbench.bench.core.options import MeasurePolicy, WarmupPolicy

Step = Callable[[], Any]
Sync = Callable[[], None]


def window_converged(times: list[float], window: int, tolerance: float) -> bool:
    """True when the last two windows of ``times`` have medians within ``tolerance`` of each other."""
    if len(times) < 2 * window:
        return False
    last = statistics.median(times[-window:])
    previous = statistics.median(times[-2 * window : -window])
    return previous > 0 and abs(last - previous) / previous < tolerance


@dataclass
class WarmupResult:
    iterations: int
    seconds: float
    converged: bool
    stop_reason: str  # "converged" | "max_iterations" | "max_s"
    times_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float | None:
        tail = self.times_ms[-5:]
        return statistics.median(tail) if tail else None


def time_first_call(step: Step, sync: Sync, clock: Callable[[], float] = time.perf_counter) -> tuple[float, Any]:
    """Seconds of the very first call (includes torch.compile's compile, cudnn autotune), and its output."""
    sync()
    start = clock()
    output = step()
    sync()
    return clock() - start, output


def warm_up(step: Step, sync: Sync, policy: WarmupPolicy,
            clock: Callable[[], float] = time.perf_counter) -> WarmupResult:
    """Iterate until the per-iteration median is stable (synchronising after each iteration)."""
    times_ms: list[float] = []
    began = clock()
    while True:
        start = clock()
        step()
        sync()
        end = clock()
        times_ms.append((end - start) * 1000.0)
        elapsed = end - began
        if len(times_ms) >= policy.min_iterations and window_converged(times_ms, policy.window, policy.tolerance):
            return WarmupResult(len(times_ms), elapsed, True, "converged", times_ms)
        if len(times_ms) >= policy.max_iterations:
            return WarmupResult(len(times_ms), elapsed, False, "max_iterations", times_ms)
        if elapsed >= policy.max_s:
            return WarmupResult(len(times_ms), elapsed, False, "max_s", times_ms)


@dataclass
class TimedRun:
    """Per-iteration times of the timed region and how they were taken."""

    times_ms: list[float]
    timer: str  # "cuda-events" | "perf-counter+sync"
    wall_s: float  # host wall time of the whole region, sync included
    last_output: Any = None

    def describe(self) -> dict[str, Any]:
        return {"timer": self.timer, "iterations": len(self.times_ms), "wall_s": self.wall_s}


def planned_iterations(policy: MeasurePolicy, estimate_ms: float) -> int:
    """Iterations for the event timer, chosen from the warm-up estimate (no host sync inside the loop)."""
    estimate_ms = max(estimate_ms, 1e-3)
    wanted = math.ceil(policy.min_s * 1000.0 / estimate_ms)
    affordable = math.floor(policy.max_s * 1000.0 / estimate_ms)
    return max(policy.min_iterations, min(wanted, affordable, policy.max_iterations))


def measure_cuda_events(step: Step, policy: MeasurePolicy, estimate_ms: float, device: Any) -> TimedRun:
    """Record a start/end CUDA event around every iteration; synchronise once, after the loop."""
    import torch  # noqa: PLC0415

    count = planned_iterations(policy, estimate_ms)
    with torch.cuda.device(device):
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
        torch.cuda.synchronize(device)
        began = time.perf_counter()
        output = None
        for start, end in zip(starts, ends):
            start.record()
            output = step()
            end.record()
        torch.cuda.synchronize(device)
        wall_s = time.perf_counter() - began
    return TimedRun([s.elapsed_time(e) for s, e in zip(starts, ends)], "cuda-events", wall_s, output)


def measure_perf_counter(step: Step, sync: Sync, policy: MeasurePolicy,
                         clock: Callable[[], float] = time.perf_counter) -> TimedRun:
    """perf_counter around every iteration with a device sync (CPU: no-op); time-bounded by the policy."""
    times_ms: list[float] = []
    output = None
    sync()
    began = clock()
    while True:
        start = clock()
        output = step()
        sync()
        end = clock()
        times_ms.append((end - start) * 1000.0)
        elapsed = end - began
        enough = len(times_ms) >= policy.min_iterations and elapsed >= policy.min_s
        capped = len(times_ms) >= policy.max_iterations or (
            elapsed >= policy.max_s and len(times_ms) >= policy.min_iterations)
        if enough or capped:
            return TimedRun(times_ms, "perf-counter+sync", elapsed, output)


def policy_dict(policy: WarmupPolicy | MeasurePolicy) -> dict[str, Any]:
    return asdict(policy)
