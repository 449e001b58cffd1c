"""Where a cell's time goes: ``detbench trace --model retinanet_resnet50_fpn --precision amp-bf16 ...``

The cell is set up by the suite's own :class:`~detbench.bench.runtime.session.CellSession` (warm-up included), then a
few steps run under ``torch.profiler``. The summary answers "is this cell host-bound?": the GPU's busy share of the wall
time (union of CUDA kernel intervals over the profiled window; its complement is the idle share), the host's
CPU time per step against the GPU's kernel time per step, and the top operators by self CPU time and by self
CUDA time (post-processing ops such as ``torchvision::nms`` show up here). The profiler adds host overhead of
its own, so CPU figures are upper bounds; the busy share is a lower bound of what an unprofiled run gets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from detbench.bench.core import config as config_table
from detbench.bench.core import matrix
from detbench.bench.core.options import RunOptions, import_model_modules
from detbench.bench.core.schema import Cell

DEFAULT_STEPS = 10
TOP = 12


@dataclass
class OpTime:
    """One operator's self time over the profiled steps, per step."""

    name: str
    calls_per_step: float
    self_cpu_ms_per_step: float
    self_cuda_ms_per_step: float


@dataclass
class TraceSummary:
    """What one profiled stretch of a cell says about where its time goes."""

    cell_id: str
    device: str
    steps: int
    wall_ms_per_step: float
    cpu_ms_per_step: float  # sum of the operators' self CPU time (host work in torch ops)
    cuda_kernel_ms_per_step: float | None  # union of kernel intervals (None without CUDA)
    gpu_busy_share: float | None  # cuda_kernel_ms / wall_ms
    gpu_idle_share: float | None
    top_cpu: list[OpTime] = field(default_factory=list)
    top_cuda: list[OpTime] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "detbench.trace", "schema_version": 1, **asdict(self)}


def union_ms(intervals_us: Iterable[tuple[float, float]]) -> float:
    """Milliseconds covered by the union of (start, end) intervals in microseconds (overlapping kernels on
    several streams count once)."""
    total = 0.0
    end = None
    start = None
    for a, b in sorted(intervals_us):
        if end is None or a > end:
            if end is not None:
                total += end - start  # type: ignore[operator]
            start, end = a, b
        else:
            end = max(end, b)
    if end is not None:
        total += end - start  # type: ignore[operator]
    return total / 1000.0


def _self_cuda_us(avg: Any) -> float:
    # torch >= 2.4 names it self_device_time_total; older ones self_cuda_time_total
    return float(getattr(avg, "self_device_time_total", None) or getattr(avg, "self_cuda_time_total", 0.0) or 0.0)


def summarise(prof: Any, cell: Cell, device: str, steps: int, wall_s: float, top: int = TOP) -> TraceSummary:
    """The summary of a finished ``torch.profiler.profile`` over ``steps`` steps that took ``wall_s``."""
    from torch.autograd import DeviceType  # noqa: PLC0415

    averages = list(prof.key_averages())
    ops = [OpTime(a.key, a.count / steps, a.self_cpu_time_total / 1000.0 / steps, _self_cuda_us(a) / 1000.0 / steps)
           for a in averages]
    kernels = [(e.time_range.start, e.time_range.end) for e in prof.events()
               if getattr(e, "device_type", None) == DeviceType.CUDA]
    wall_ms = wall_s * 1000.0 / steps
    kernel_ms = union_ms(kernels) / steps if kernels else None
    busy = min(kernel_ms / wall_ms, 1.0) if kernel_ms is not None and wall_ms > 0 else None
    host_ops = [o for o in ops if not o.name.startswith("ProfilerStep")]
    return TraceSummary(
        cell_id=cell.id, device=device, steps=steps, wall_ms_per_step=round(wall_ms, 4),
        cpu_ms_per_step=round(sum(o.self_cpu_ms_per_step for o in host_ops), 4),
        cuda_kernel_ms_per_step=round(kernel_ms, 4) if kernel_ms is not None else None,
        gpu_busy_share=round(busy, 4) if busy is not None else None,
        gpu_idle_share=round(1.0 - busy, 4) if busy is not None else None,
        top_cpu=sorted(host_ops, key=lambda o: o.self_cpu_ms_per_step, reverse=True)[:top],
        top_cuda=[o for o in sorted(host_ops, key=lambda o: o.self_cuda_ms_per_step, reverse=True)[:top]
                  if o.self_cuda_ms_per_step > 0],
        note="" if kernels else "no CUDA kernels recorded (CPU run): busy/idle share not measured")


def trace(cell: Cell, options: RunOptions, steps: int = DEFAULT_STEPS, chrome_trace: str | None = None) -> TraceSummary:
    """Set ``cell`` up through CellSession, then profile ``steps`` steps."""
    import torch  # noqa: PLC0415

    from detbench.bench.runtime.device import cell_device, device_name  # noqa: PLC0415
    from detbench.bench.runtime.session import CellSession  # noqa: PLC0415

    device = cell_device()
    session = CellSession(cell, options, device)
    session.set_up()
    assert session.step is not None
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    sync = session.sync
    with torch.profiler.profile(activities=activities) as prof:
        sync()
        began = time.perf_counter()
        for _ in range(steps):
            session.step()
        sync()
        wall = time.perf_counter() - began
    if chrome_trace:
        prof.export_chrome_trace(chrome_trace)
    summary = summarise(prof, cell, device_name(device), steps, wall)
    session.close()
    return summary


def table(summary: TraceSummary) -> str:
    """A short plain-text account (the GPU script prints it)."""
    busy, kernels = summary.gpu_busy_share, summary.cuda_kernel_ms_per_step
    share = "n/a" if busy is None else f"{busy:.0%} busy, {1 - busy:.0%} idle"
    lines = [f"{summary.cell_id} on {summary.device}: {summary.wall_ms_per_step:.2f} ms/step wall, "
             f"host op time {summary.cpu_ms_per_step:.2f} ms/step, GPU kernels "
             f"{'n/a' if kernels is None else f'{kernels:.2f}'} ms/step ({share})", "top self CPU ms/step:"]
    lines += [f"  {o.self_cpu_ms_per_step:8.3f}  {o.name}" for o in summary.top_cpu[:8]]
    if summary.top_cuda:
        lines.append("top self CUDA ms/step:")
        lines += [f"  {o.self_cuda_ms_per_step:8.3f}  {o.name}" for o in summary.top_cuda[:8]]
    if summary.note:
        lines.append(summary.note)
    return "\n".join(lines)


def one_line(data: dict[str, Any]) -> str:
    """One line from a summary's JSON: wall vs GPU kernel time per step and the GPU's busy share."""
    busy = data["gpu_busy_share"]
    if busy is None:
        return f"trace {data['cell_id']}: {data['wall_ms_per_step']:.1f} ms/step wall; no CUDA kernels recorded"
    return (f"trace {data['cell_id']}: {data['wall_ms_per_step']:.1f} ms/step wall, GPU kernels "
            f"{data['cuda_kernel_ms_per_step']:.1f} ms/step (GPU busy {busy:.0%}, idle {1 - busy:.0%}), host op time "
            f"{data['cpu_ms_per_step']:.1f} ms/step")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m detbench.bench.tools.trace", description=__doc__.splitlines()[0])
    config_table.add_cell_arguments(parser, model_required=False)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"profiled steps (default {DEFAULT_STEPS})")
    parser.add_argument("--json", default=None, help="write the summary to this JSON file")
    parser.add_argument("--chrome-trace", default=None, help="also export the raw trace (large) to this file")
    parser.add_argument("--summary", default=None, metavar="JSON", help="print the one-line account of a trace "
                        "written by --json and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.summary:
        try:
            with open(args.summary, encoding="utf-8") as handle:
                print(one_line(json.load(handle)))
        except (OSError, ValueError, KeyError) as exc:
            parser.error(f"cannot read the trace summary {args.summary} ({exc})")
        return 0
    if args.model is None:
        parser.error("--model is required (or --summary JSON)")
    if args.steps < 1:
        parser.error(f"--steps must be a positive integer, got {args.steps}")
    try:
        modules = matrix.parse_csv(args.model_modules) or ()
        import_model_modules(modules)
        cell = config_table.cell_from(args)
        options = RunOptions(profile="trace", telemetry_hz=0.0, count_flops=False, model_modules=modules)
    except ValueError as exc:
        parser.error(str(exc))
    summary = trace(cell, options, args.steps, args.chrome_trace)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(summary.to_dict(), handle, indent=1)
    print(table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
