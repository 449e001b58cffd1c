"""What only a whole group knows: each cell's paired ratio to its baseline, and when compiling pays off.

Pure bookkeeping over results (no torch): the runtime calls :func:`finish_group` on the cells it timed
together, the repeats' merge re-pairs them, reports read the figures.
"""

from __future__ import annotations

import dataclasses
import statistics

from detbench.bench.core import stats
from detbench.bench.core.schema import Cell, CellResult, PairedRatio


def baseline_of(cell: Cell) -> Cell:
    """The group's baseline for ``cell``: eager fp32 at the same mode, batch size, GPU count and image size."""
    return Cell(cell.model, cell.mode, "eager", "fp32", cell.batch_size, cell.gpus, cell.image_size)


def eager_twin(cell: Cell) -> Cell:
    """The eager cell with the same configuration (precision, memory format, batch ...) as a compiled one."""
    return dataclasses.replace(cell, compile="eager")


def compile_seconds(first_call_s: float, steady_median_ms: float) -> float:
    """First-call time minus one steady iteration: what compiling (and first-call setup) cost."""
    return max(first_call_s - steady_median_ms / 1000.0, 0.0)


def break_even_iterations(compile_s: float | None, eager_median_ms: float | None,
                          compiled_median_ms: float | None) -> float | None:
    """Iterations after which compiling has paid for itself; None when unknown or it never pays off."""
    if compile_s is None or eager_median_ms is None or compiled_median_ms is None:
        return None
    saved_s = (eager_median_ms - compiled_median_ms) / 1000.0
    if saved_s <= 0:
        return None
    return compile_s / saved_s


def paired_ratio(cell: CellResult, baseline: CellResult) -> PairedRatio | None:
    """Throughput ratio to ``baseline`` per round, median and IQR: blocks of the same (repeat, round) are paired,
    since only those were interleaved with each other (one worker run has a single repeat)."""
    if cell.measurement is None or baseline.measurement is None:
        return None
    base = {(b.repeat, b.round): b.median_ms for b in baseline.measurement.blocks}
    pairs = [base[(b.repeat, b.round)] / b.median_ms for b in cell.measurement.blocks
             if (b.repeat, b.round) in base and b.median_ms > 0]
    if not pairs:
        return None
    ordered = sorted(pairs)
    return PairedRatio(baseline.cell.id, statistics.median(pairs), stats.percentile(ordered, 25),
                       stats.percentile(ordered, 75), [round(p, 6) for p in pairs])


def finish_group(results: list[CellResult]) -> None:
    """Fill what needs the whole group: the paired ratio to the baseline and compile break-even vs eager."""
    by_id = {r.cell.id: r for r in results if r.status == "ok"}
    for result in by_id.values():
        base = by_id.get(baseline_of(result.cell).id)
        result.ratio = paired_ratio(result, base) if base is not None else None
        if result.cell.deployed:
            _deploy_break_even(result, by_id.get(dataclasses.replace(result.cell, runtime="eager").id))
        if not result.cell.compiled or result.latency is None:
            continue
        twin = by_id.get(eager_twin(result.cell).id)
        if twin is None or twin.latency is None:
            result.break_even_basis = "eager twin not measured in this run"
            continue
        result.break_even_iterations = break_even_iterations(
            result.compile_s, twin.latency.median_ms, result.latency.median_ms)
        result.break_even_basis = (
            f"compile_s / (eager median {twin.latency.median_ms:.3f} ms - compiled median "
            f"{result.latency.median_ms:.3f} ms), interleaved in one worker"
            + ("" if result.break_even_iterations is not None else ": compiled is not faster, never pays off"))


def _deploy_break_even(result: CellResult, twin: CellResult | None) -> None:
    """Requests (iterations) after which a deployed cell's export has paid for itself against its eager twin."""
    info = result.deploy
    if info is None or result.latency is None:
        return
    if twin is None or twin.latency is None:
        info.break_even_basis = "eager twin not measured in this run"
        return
    info.break_even_requests = break_even_iterations(info.export_s, twin.latency.median_ms, result.latency.median_ms)
    info.break_even_basis = (
        f"export_s / (eager median {twin.latency.median_ms:.3f} ms - {result.cell.runtime} median "
        f"{result.latency.median_ms:.3f} ms), interleaved in one worker"
        + ("" if info.break_even_requests is not None else f": {result.cell.runtime} is not faster, never pays off"))
