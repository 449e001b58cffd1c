"""GPU probe: where does the run-to-run noise of host-bound detector cells come from?

One process per model: build, calibrate, warm up, then timed blocks of ~BLOCK_S seconds in rotation over
conditions (ABCABC...), so slow drift of the host hits every condition alike:
- ``default``: the interpreter as it is (what cells did until now);
- ``gc-frozen``: ``gc.collect(); gc.freeze()`` before the block (objects alive before timing are never
  traversed again; garbage made inside the block is still collected);
- ``gc-frozen+telemetry``: as above, with the suite's 50 Hz NVML sampler (PCIe lane on) running.
Each block records its per-iteration CUDA-event times, wall time, and the time spent in each
garbage-collector generation (``gc.callbacks``). Usage on a GPU machine:
``PYTHONPATH=. python3 docs/examples/probe_host_noise.py OUT.json``.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from typing import Any

import torch

from detbench.bench.core.options import RunOptions
from detbench.bench.core.schema import Cell
from detbench.bench.measure.telemetry import TelemetryTracker
from detbench.bench.models.postprocess import calibrate_postprocess
from detbench.bench.runtime.build import autocast_context, make_step, prepare

CELLS = [
    Cell("retinanet_resnet50_fpn", "infer", "eager", "amp-bf16", 8, 1, None),
    Cell("ssdlite320_mobilenet_v3_large", "infer", "eager", "fp32", 8, 1, None),
    Cell("maskrcnn_resnet50_fpn", "infer", "eager", "fp32", 8, 1, None),
]
CONDITIONS = ("default", "gc-frozen", "gc-frozen+telemetry")
ROUNDS = 8
BLOCK_S = 1.5


class GcClock:
    """Seconds and counts of collections per generation, from gc.callbacks."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.counts = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._started
            self.counts[info["generation"]] += 1

    def reset(self) -> None:
        self.seconds, self.counts = [0.0, 0.0, 0.0], [0, 0, 0]


def timed_block(step, estimate_ms: float, device: torch.device) -> tuple[list[float], float]:
    count = max(5, int(BLOCK_S * 1000 / estimate_ms))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
    torch.cuda.synchronize(device)
    began = time.perf_counter()
    for start, end in zip(starts, ends):
        start.record()
        step()
        end.record()
    torch.cuda.synchronize(device)
    return [s.elapsed_time(e) for s, e in zip(starts, ends)], time.perf_counter() - began


def probe(cell: Cell, device: torch.device, clock: GcClock) -> dict[str, Any]:
    torch.backends.cudnn.benchmark = True
    prepared = prepare(cell, RunOptions(profile="probe"), device)
    with autocast_context(cell, device):
        calibrate_postprocess(prepared.model, prepared.spec, prepared.inputs)
    step = make_step(cell, prepared, device)
    warm = []
    for _ in range(30):
        torch.cuda.synchronize(device)
        began = time.perf_counter()
        step()
        torch.cuda.synchronize(device)
        warm.append((time.perf_counter() - began) * 1000)
    estimate = statistics.median(warm[-10:])
    blocks = []
    for round_index in range(ROUNDS):
        for condition in CONDITIONS:
            frozen = condition.startswith("gc-frozen")
            if frozen:
                gc.collect()
                gc.freeze()
            tracker = TelemetryTracker([0], 50.0) if condition.endswith("telemetry") else None
            clock.reset()
            if tracker:
                tracker.__enter__()
            times, wall = timed_block(step, estimate, device)
            if tracker:
                tracker.__exit__(None, None, None)
            if frozen:
                gc.unfreeze()
            blocks.append({"round": round_index, "condition": condition, "n": len(times),
                           "median_ms": statistics.median(times), "mean_ms": statistics.fmean(times),
                           "wall_ips": cell.batch_size * len(times) / wall,
                           "gc_s": list(clock.seconds), "gc_counts": list(clock.counts),
                           "gc_tracked_objects": len(gc.get_objects()), "times_ms": times})
    return {"cell": cell.id, "warmup_ms": warm, "blocks": blocks}


def summarise(result: dict[str, Any]) -> list[str]:
    lines = []
    for condition in CONDITIONS:
        rows = [b for b in result["blocks"] if b["condition"] == condition]
        medians = [b["median_ms"] for b in rows]
        means = [b["mean_ms"] for b in rows]
        gc2 = sum(b["gc_s"][2] for b in rows) / sum(b["n"] for b in rows) * 1000
        gc_all = sum(sum(b["gc_s"]) for b in rows) / sum(b["n"] for b in rows) * 1000
        spread = (max(medians) - min(medians)) / statistics.median(medians)
        skew = statistics.median(means) / statistics.median(medians)
        lines.append(f"{result['cell'][:40]:40s} {condition:20s} median-of-medians {statistics.median(medians):8.2f} ms"
                     f"  block spread {spread:6.1%}  mean/median {skew:5.3f}"
                     f"  gc {gc_all:6.3f} ms/it (gen2 {gc2:6.3f})")
    return lines


def main() -> int:
    out = sys.argv[1]
    device = torch.device("cuda", 0)
    clock = GcClock()
    gc.callbacks.append(clock)
    results = []
    for cell in CELLS:
        results.append(probe(cell, device, clock))
        with open(out, "w", encoding="utf-8") as handle:
            json.dump({"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                       "gc_threshold": gc.get_threshold(), "results": results}, handle)
        for line in summarise(results[-1]):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
