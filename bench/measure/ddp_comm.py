"""A DDP comm hook that runs DDP's default all-reduce and marks when each gradient bucket was handed over
and when its all-reduce finished, so the share of a step spent waiting on all-reduce can be reported.

On a GPU the marks are CUDA events: the hand-over event is recorded on the backward stream (it fires when
the bucket's gradients exist), the finish event in the future's callback, whose stream waits for the
NCCL kernel. On the CPU (gloo) the marks are perf_counter readings taken at the same points. A forward
pre-hook on the DDP module starts a new step, so the marks group by step whoever times the steps.
"""

# No `from __future__ import annotations` here: DDP's register_comm_hook checks the hook's annotations at
# run time and refuses the string "dist.GradBucket".
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from detbench.bench.core.distributed_stats import AllReduceStats

Interval = tuple[float, float]  # (handed over, finished), ms from the step's start


class CudaClock:
    name = "cuda-events"

    def mark(self) -> Any:
        event = torch.cuda.Event(enable_timing=True)
        event.record()  # on the current stream of the calling thread
        return event

    def ms_between(self, start: Any, end: Any) -> float:
        return start.elapsed_time(end)


class HostClock:
    name = "perf-counter"

    def mark(self) -> float:
        return time.perf_counter()

    def ms_between(self, start: float, end: float) -> float:
        return (end - start) * 1000.0


@dataclass
class _Step:
    start: Any
    buckets: list[tuple[Any, Any]] = field(default_factory=list)


class AllReduceTimer:
    """State of the timing comm hook; ``attach(ddp_module)`` once, ``reset()`` before the timed region,
    ``summary(step_times_ms)`` after it (once the device has synchronised)."""

    def __init__(self, clock: CudaClock | HostClock, process_group: dist.ProcessGroup | None = None) -> None:
        self.clock = clock
        self.process_group = process_group
        self._steps: list[_Step] = []
        self._lock = threading.Lock()  # the hook runs on autograd's thread, callbacks on the backend's

    def attach(self, ddp_module: torch.nn.parallel.DistributedDataParallel) -> None:
        ddp_module.register_comm_hook(self, timed_allreduce_hook)
        ddp_module.register_forward_pre_hook(lambda module, args: self.begin_step())

    def begin_step(self) -> None:
        with self._lock:
            self._steps.append(_Step(self.clock.mark()))

    def reset(self) -> None:
        with self._lock:
            self._steps = []

    def record(self, start: Any, end: Any) -> None:
        with self._lock:
            if self._steps:
                self._steps[-1].buckets.append((start, end))

    def intervals(self) -> list[list[Interval]]:
        """Per step, every bucket's (handed over, finished) in ms from the step's start."""
        ms = self.clock.ms_between
        with self._lock:
            return [[(ms(s.start, a), ms(s.start, b)) for a, b in s.buckets] for s in self._steps]

    def summary(self, step_times_ms: Sequence[float]) -> AllReduceStats | None:
        return summarise(self.intervals(), step_times_ms, self.clock.name)


def timed_allreduce_hook(state: AllReduceTimer, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP's default all-reduce hook (divide by world size, all-reduce), with a mark on each side."""
    start = state.clock.mark()
    # torch's hook takes None as the default group at run time (its annotation says ProcessGroup)
    future = default_hooks.allreduce_hook(cast(dist.ProcessGroup, state.process_group), bucket)

    def finished(fut: torch.futures.Future[torch.Tensor]) -> torch.Tensor:
        state.record(start, state.clock.mark())
        return fut.value()

    return future.then(finished)


# --- pure arithmetic over the marks -----------------------------------------------------------------------


def busy_ms(intervals: Sequence[Interval]) -> float:
    """Length of the union of the intervals (time with any all-reduce queued or running)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def wait_ms(intervals: Sequence[Interval]) -> float:
    """From the last bucket handed over (backward done) to the last all-reduce finished; 0 if none."""
    if not intervals:
        return 0.0
    return max(0.0, max(end for _, end in intervals) - max(start for start, _ in intervals))


def summarise(steps: Sequence[Sequence[Interval]], step_times_ms: Sequence[float], timer: str) -> AllReduceStats | None:
    """AllReduceStats of the timed steps (paired with their times in order); None when nothing was marked."""
    pairs = [(s, t) for s, t in zip(steps, step_times_ms) if s]
    if not pairs:
        return None
    waits = [wait_ms(s) for s, _ in pairs]
    busy = [busy_ms(s) for s, _ in pairs]
    total = sum(t for _, t in pairs)
    return AllReduceStats(timer=timer, steps=len(pairs), buckets_per_step=statistics.mean(len(s) for s, _ in pairs),
                          wait_ms_median=statistics.median(waits), busy_ms_median=statistics.median(busy),
                          wait_share=sum(waits) / total if total > 0 else 0.0,
                          busy_share=sum(busy) / total if total > 0 else 0.0)
