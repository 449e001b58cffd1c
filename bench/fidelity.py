"""Does the suite measure what a plain loop measures? ``python -m bench.fidelity --model X [...]``

Two checks on one cell, run inline in this process:
1. the cell's throughput vs a bare loop timing the same model and batch the plainest way
   (synchronize, perf_counter, N iterations, synchronize) -> must agree within 5%;
2. the same cell measured twice -> medians must agree within 3%.
The bare loop shares only the setup (build, size, inputs, post-processing calibration) with the cell,
not its timing code. Exit status 0 when both agree, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

from bench import matrix
from bench.options import RunOptions
from bench.runner import autocast_context, cell_device, make_step, prepare, run_cell
from bench.schema import PRECISIONS, Cell, CellResult

THROUGHPUT_TOLERANCE = 0.05
REPEAT_TOLERANCE = 0.03


@dataclass
class FidelityReport:
    cell_id: str
    first: CellResult
    second: CellResult
    bare_ips: float
    bare_iterations: int

    @property
    def throughput_gap(self) -> float:
        return abs(self.first.throughput_ips - self.bare_ips) / self.bare_ips

    @property
    def repeat_gap(self) -> float:
        a, b = self.first.latency.median_ms, self.second.latency.median_ms
        return abs(a - b) / min(a, b)

    @property
    def passed(self) -> bool:
        return self.throughput_gap <= THROUGHPUT_TOLERANCE and self.repeat_gap <= REPEAT_TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        return {
            "cell_id": self.cell_id,
            "cell_throughput_ips": self.first.throughput_ips,
            "cell_mean_throughput_ips": self.first.cell.batch_size * 1000.0 / self.first.latency.mean_ms,
            "bare_loop_throughput_ips": self.bare_ips,
            "bare_loop_iterations": self.bare_iterations,
            "throughput_gap": self.throughput_gap,
            "throughput_tolerance": THROUGHPUT_TOLERANCE,
            "median_ms_first": self.first.latency.median_ms,
            "median_ms_second": self.second.latency.median_ms,
            "repeat_gap": self.repeat_gap,
            "repeat_tolerance": REPEAT_TOLERANCE,
            "timer": self.first.timer,
            "device": self.first.device,
            "passed": self.passed,
        }


def bare_loop_ips(cell: Cell, options: RunOptions, warmup_iterations: int, iterations: int) -> float:
    """Images/s of the plainest loop: N calls between two synchronizes, timed with perf_counter."""
    device = cell_device()
    prepared = prepare(cell, options, device)
    if prepared.spec.is_detector and cell.mode == "infer":
        from bench.postprocess import calibrate_postprocess  # noqa: PLC0415

        with autocast_context(cell, device):
            calibrate_postprocess(prepared.model, prepared.spec, prepared.inputs)
    if cell.compile == "compiled":
        prepared.runnable = torch.compile(prepared.model, mode=options.compile_mode)
    step = make_step(cell, prepared, device)  # the same work per iteration as the cell

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup_iterations):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    sync()
    return cell.batch_size * iterations / (time.perf_counter() - start)


def check(cell: Cell, options: RunOptions) -> FidelityReport:
    first = run_cell(cell, options)
    if first.status != "ok":
        raise RuntimeError(f"{cell.id}: {first.status}: {first.reason}")
    second = run_cell(cell, options)
    if second.status != "ok":
        raise RuntimeError(f"{cell.id} (second run): {second.status}: {second.reason}")
    iterations = len(first.times_ms)
    bare = bare_loop_ips(cell, options, (first.warmup_iterations or 0) + 1, iterations)
    return FidelityReport(cell.id, first, second, bare, iterations)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fidelity", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--mode", default="infer", choices=("infer", "train"))
    parser.add_argument("--compile", default="eager", choices=("eager", "compiled"))
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--image-size", default=None, help="HEIGHTxWIDTH (default: the model's native size)")
    parser.add_argument("--json", default=None, help="also write the report to this JSON file")
    args = parser.parse_args(argv)
    try:
        cell = Cell(args.model, args.mode, args.compile, args.precision, args.batch_size, 1,
                    matrix.parse_image_size(args.image_size))
    except ValueError as exc:
        parser.error(str(exc))
    report = check(cell, RunOptions(profile="fidelity", telemetry_hz=0, count_flops=False))
    data = report.to_dict()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
    print(f"cell            {data['cell_id']}  ({data['timer']}, {data['device']})")
    print(f"throughput      cell {data['cell_throughput_ips']:.2f} img/s (median), "
          f"{data['cell_mean_throughput_ips']:.2f} (mean)  vs bare loop {data['bare_loop_throughput_ips']:.2f} img/s"
          f"  gap {data['throughput_gap']:.1%} (limit {THROUGHPUT_TOLERANCE:.0%})")
    print(f"repeatability   median {data['median_ms_first']:.3f} ms vs {data['median_ms_second']:.3f} ms"
          f"  gap {data['repeat_gap']:.1%} (limit {REPEAT_TOLERANCE:.0%})")
    print("PASS" if report.passed else "FAIL")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
