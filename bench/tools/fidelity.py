"""Does the suite measure what a plain loop measures? ``python -m detbench.bench.tools.fidelity --model X [...]``

The cell is set up once by the matrix's own :class:`~detbench.bench.runtime.session.CellSession` (build, size, inputs,
post-processing calibration, FLOPs, compile, warm-up), then timed in rounds that alternate, in rotating
order, between
- the matrix's timed block, exactly as the engine runs it (:meth:`CellSession.time_block`: host canary,
  CUDA events around every iteration, one synchronize at the end, the peak-memory and telemetry
  trackers running), and
- the plainest loop over the same session's step: synchronize, perf_counter, the same number of
  iterations, synchronize.
Interleaving matters on hosts whose speed moves (the lent H100 VM switches between two speeds for tens
of seconds at a time; docs/NOTES.md): two timings taken a minute apart measure the host as much as the
timer. Two checks, each must hold:
1. throughput: the suite's images/s (at the median iteration, as cells report it) vs the bare loop's,
   paired by round, median over rounds -> within 5%;
2. repeatability: the suite's median latency in each odd round vs the even round before it, median
   over the pairs -> within 3%.
The same figure for the first half of the rounds vs the second half (sequential, so it includes the
host's drift) is reported too, with the host canary's range. Exit status 0 when both checks hold, 1 when one
fails, 2 when the cell cannot run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from detbench.bench.core import config as config_table
from detbench.bench.core import matrix
from detbench.bench.core.groups import rotation
from detbench.bench.core.options import RunOptions
from detbench.bench.core.schema import Cell, CellResult
from detbench.bench.measure.host import host_canary_ms
from detbench.bench.runtime.device import cell_device, device_name
from detbench.bench.runtime.session import CellSession

THROUGHPUT_TOLERANCE = 0.05
REPEAT_TOLERANCE = 0.03


@dataclass
class FidelityReport:
    """Per-round timings of the suite's region and the bare loop, and the checks over them."""

    cell_id: str
    device: str
    timer: str
    batch_size: int
    iterations_per_block: int
    suite_median_ms: list[float] = field(default_factory=list)  # per round: median iteration of the region
    suite_mean_ms: list[float] = field(default_factory=list)  # per round: mean iteration of the region
    bare_ms: list[float] = field(default_factory=list)  # per round: bare loop wall time / iterations
    host_canary_ms: list[float] = field(default_factory=list)
    telemetry_hz: float = 0.0
    cell_result: CellResult | None = None  # the suite's blocks as the matrix reports the cell

    def _ips(self, ms: float) -> float:
        return self.batch_size * 1000.0 / ms

    @property
    def paired_gaps(self) -> list[float]:
        """Per round: suite images/s (median iteration) over the bare loop's, minus one."""
        return [bare / suite - 1.0 for suite, bare in zip(self.suite_median_ms, self.bare_ms)]

    @property
    def paired_mean_gaps(self) -> list[float]:
        """As :attr:`paired_gaps` with the suite's mean iteration (the bare loop's own statistic)."""
        return [bare / suite - 1.0 for suite, bare in zip(self.suite_mean_ms, self.bare_ms)]

    @property
    def throughput_gap(self) -> float:
        return abs(statistics.median(self.paired_gaps))

    @property
    def repeat_gap(self) -> float:
        """The cell timed twice, interleaved: odd rounds over the even round before each, median over pairs."""
        pairs = [odd / even - 1.0 for even, odd in zip(self.suite_median_ms[0::2], self.suite_median_ms[1::2])]
        return abs(statistics.median(pairs))

    @property
    def sequential_repeat_gap(self) -> float:
        """First half of the rounds vs the second half: includes the host's drift over the run."""
        half = len(self.suite_median_ms) // 2
        return _gap(self.suite_median_ms[:half], self.suite_median_ms[half:])

    @property
    def passed(self) -> bool:
        return self.throughput_gap <= THROUGHPUT_TOLERANCE and self.repeat_gap <= REPEAT_TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        suite_ips = self._ips(statistics.median(self.suite_median_ms))
        bare_ips = self._ips(statistics.median(self.bare_ms))
        return {
            "cell_id": self.cell_id, "device": self.device, "timer": self.timer, "rounds": len(self.bare_ms),
            "iterations_per_block": self.iterations_per_block, "telemetry_hz": self.telemetry_hz,
            "suite_throughput_ips": suite_ips, "bare_loop_throughput_ips": bare_ips,
            "suite_median_ms_per_round": self.suite_median_ms, "suite_mean_ms_per_round": self.suite_mean_ms,
            "bare_loop_ms_per_round": self.bare_ms,
            "paired_gaps": self.paired_gaps, "paired_mean_gaps": self.paired_mean_gaps,
            "throughput_gap": self.throughput_gap, "throughput_tolerance": THROUGHPUT_TOLERANCE,
            "mean_throughput_gap": abs(statistics.median(self.paired_mean_gaps)),
            "repeat_gap": self.repeat_gap, "repeat_tolerance": REPEAT_TOLERANCE,
            "sequential_repeat_gap": self.sequential_repeat_gap,
            "host_canary_ms": self.host_canary_ms, "passed": self.passed,
            "cell": self.cell_result.to_dict() if self.cell_result is not None else None,
        }


def _gap(a: list[float], b: list[float]) -> float:
    x, y = statistics.median(a), statistics.median(b)
    return abs(x - y) / min(x, y)


def bare_loop_ms(step: Callable[[], Any], sync: Callable[[], None], iterations: int) -> float:
    """Milliseconds per iteration of the plainest loop: N calls between two synchronizes, perf_counter."""
    sync()
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    sync()
    return (time.perf_counter() - start) * 1000.0 / iterations


def check(cell: Cell, options: RunOptions, rounds: int | None = None) -> FidelityReport:
    """Set the cell up once (CellSession), then alternate its timed block and the bare loop for ``rounds`` (None:
    the matrix's rounds on this device)."""
    device = cell_device()
    rounds = options.rounds_policy(device.type).rounds if rounds is None else rounds
    if rounds < 2:
        raise ValueError(f"rounds must be >= 2 (repeatability compares halves), got {rounds}")
    session = CellSession(cell, options, device)
    session.set_up()
    policy = options.rounds_policy(device.type)
    iterations = session.iterations_for(policy.block_s, policy.min_block_iterations)
    assert session.step is not None
    step, sync = session.step, session.sync  # the same work per iteration for both timings
    timer = "cuda-events" if device.type == "cuda" else "perf-counter+sync"
    report = FidelityReport(cell.id, device_name(device), timer, cell.batch, iterations,
                            telemetry_hz=options.telemetry_hz)
    for round_index in range(rounds):
        for which in rotation(2, round_index):
            if which == 0:  # the matrix's block: it times its own host canary first
                times = session.time_block(iterations, round_index=round_index, telemetry=True)
                report.host_canary_ms.append(session.blocks[-1].host_canary_ms or 0.0)
                report.suite_median_ms.append(statistics.median(times))
                report.suite_mean_ms.append(statistics.fmean(times))
            else:
                report.host_canary_ms.append(host_canary_ms())
                report.bare_ms.append(bare_loop_ms(step, sync, iterations))
    report.cell_result = session.result()
    session.close()
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m detbench.bench.tools.fidelity",
                                     description=__doc__.splitlines()[0])
    config_table.add_cell_arguments(parser, measuring=True)
    parser.add_argument("--json", default=None, help="also write the report to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cell = config_table.cell_from(args)
        options = RunOptions(profile="fidelity", telemetry_hz=args.telemetry_hz,
                             model_modules=matrix.parse_csv(args.model_modules) or (), rounds_count=args.rounds,
                             block_s=args.block_s)
        from detbench.bench.core.options import import_model_modules  # noqa: PLC0415
        from detbench.bench.models import get_model  # noqa: PLC0415

        import_model_modules(options.model_modules)
        get_model(args.model)
        rounds = options.rounds_policy(cell_device().type).rounds
        if rounds < 2:
            raise ValueError(f"--rounds must be >= 2 (repeatability compares halves), got {rounds}")
    except ValueError as exc:
        parser.error(str(exc))
    try:
        report = check(cell, options, rounds)
    except Exception as exc:  # noqa: BLE001 - OOM, a missing extra, a CUDA error: one line, exit 2
        from detbench.bench.runtime.failures import one_line  # noqa: PLC0415

        print(f"python -m detbench.bench.tools.fidelity: {cell.id}: {type(exc).__name__}: {one_line(exc)}",
              file=sys.stderr)
        return 2
    data = report.to_dict()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
    canary = data["host_canary_ms"]
    print(f"cell            {data['cell_id']}  ({data['timer']}, {data['device']}, {data['rounds']} rounds of "
          f"{data['iterations_per_block']} iterations)")
    print(f"throughput      suite {data['suite_throughput_ips']:.2f} img/s vs bare loop "
          f"{data['bare_loop_throughput_ips']:.2f}  paired gap {data['throughput_gap']:.1%} "
          f"(limit {THROUGHPUT_TOLERANCE:.0%}; mean-based {data['mean_throughput_gap']:.1%})")
    print(f"repeatability   odd vs even rounds, paired {data['repeat_gap']:.1%} (limit {REPEAT_TOLERANCE:.0%}); "
          f"first vs second half {data['sequential_repeat_gap']:.1%}; host canary "
          f"{min(canary):.2f}-{max(canary):.2f} ms")
    print("PASS" if report.passed else "FAIL")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
