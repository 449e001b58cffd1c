"""``--repeats``: the order a repeat visits the groups in, and the merge of a cell's repeats into one result.

Every repeat runs the whole list of groups again (a fresh worker per group), so a cell's repeats sit at
different moments of the run; :func:`merge_repeats` turns one cell's per-repeat results into the cell's
result: blocks of every repeat (tagged with their repeat), throughput as the median over all blocks,
latency over all iterations, set-up and compile from the first repeat, failed repeats listed. A ``partial``
repeat (cut short) is pooled with what it timed, and makes the merged cell ``partial``: never complete.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Sequence
from typing import TypeVar

from detbench.bench.core import stats
from detbench.bench.core.schema import MEASURED, CellResult, RepeatFailure

T = TypeVar("T")


def repeat_order(groups: Sequence[T], repeat: int, repeats: int) -> list[T]:
    """The groups rotated by ``repeat / repeats`` of their count, so repeat r of a group runs about r/N of
    the way through the run after its repeat 0 (never twice at the same moment when there are enough groups)."""
    if not groups:
        return []
    shift = (repeat * len(groups)) // max(repeats, 1) % len(groups)
    return [*groups[shift:], *groups[:shift]]


def tag_repeat(result: CellResult, repeat: int) -> CellResult:
    """Mark a freshly measured result (and its blocks) as repeat ``repeat``: a journal line of one repeat."""
    result.repeat = repeat
    if result.measurement is not None:
        for block in result.measurement.blocks:
            block.repeat = repeat
    return result


def merge_repeats(results: Sequence[CellResult], planned: int | None = None) -> CellResult:
    """One cell's result from its repeats (any status, any order). The cell is ``ok`` when any repeat is;
    repeats that failed go to ``repeat_failures``. With no ok repeat, the first failure is the result. It is
    ``partial`` when a pooled repeat is, or when fewer than ``planned`` repeats were measured (a cut run)."""
    if not results:
        raise ValueError("merge_repeats needs at least one repeat's result")
    ordered = sorted(results, key=lambda r: r.repeat or 0)
    ok = [r for r in ordered if r.status in MEASURED]
    failed = [RepeatFailure(r.repeat or 0, r.status, r.reason, r.failure) for r in ordered if r.status not in MEASURED]
    first = copy.deepcopy(ok[0] if ok else ordered[0])
    first.repeat = None
    first.repeat_failures = failed if ok else failed[1:]
    cut = [r.repeat or 0 for r in ok if r.status == "partial"]
    if ok and (cut or (planned is not None and len(ordered) < planned)):
        first.status = "partial"
        first.reason = (f"repeat(s) {', '.join(map(str, cut))} cut short" if cut else
                        f"{len(ordered)} of {planned} repeats measured")
    if len(ok) < 2:
        if first.measurement is not None:
            first.measurement.repeat_setup_wall_s = [m for m in [first.measurement.setup_wall_s] if m is not None]
        return first
    _pool(first, ok)
    return first


def _pool(merged: CellResult, ok: list[CellResult]) -> None:
    """Fill ``merged`` (a copy of the first ok repeat) with the figures of every ok repeat."""
    batch = merged.cell.batch  # a bsmax cell is never repeated (--repeats with max is a usage error)
    merged.times_ms = [t for r in ok for t in r.times_ms]
    if merged.times_ms:
        merged.latency = stats.latency_stats(merged.times_ms)
    peaks = [r.peak_memory_bytes for r in ok if r.peak_memory_bytes is not None]
    merged.peak_memory_bytes = max(peaks) if peaks else None
    measured = [r.measurement for r in ok if r.measurement is not None]
    m = merged.measurement
    if m is not None:
        m.blocks = [copy.deepcopy(b) for x in measured for b in x.blocks]
        m.iterations = sum(x.iterations for x in measured)
        m.timed_s = round(sum(x.timed_s for x in measured), 6)
        m.rounds = sum(x.rounds for x in measured)
        m.repeats = len(ok)
        m.repeat_setup_wall_s = [x.setup_wall_s for x in measured if x.setup_wall_s is not None]
        m.cell_wall_s = _sum_or_none([x.cell_wall_s for x in measured])
        m.overhead_s = _sum_or_none([x.overhead_s for x in measured])
        m.shared_overhead_s = _sum_or_none([x.shared_overhead_s for x in measured])
        images = batch * len(merged.times_ms)
        m.wall_throughput_ips = images / m.timed_s if m.timed_s > 0 and merged.times_ms else None
    if merged.distributed is not None:
        # per-rank figures stay those of the first repeat; the aggregate throughput is the repeats' median
        merged.throughput_ips = statistics.median(r.throughput_ips for r in ok if r.throughput_ips)
        merged.distributed.throughput_ips = merged.throughput_ips
        merged.distributed.notes = [*merged.distributed.notes, f"per-rank figures of repeat {ok[0].repeat or 0}; "
                                    f"throughput is the median over {len(ok)} repeats"]
    elif m is not None and m.blocks:
        merged.throughput_ips = statistics.median(batch * 1000.0 / b.median_ms for b in m.blocks if b.median_ms > 0)
        if merged.times_ms:
            spread = stats.throughput(merged.times_ms, batch)
            merged.throughput_ips_p10, merged.throughput_ips_p90 = spread.p10_ips, spread.p90_ips
    if merged.flops_per_image and merged.throughput_ips:
        merged.achieved_tflops = merged.flops_per_image * merged.throughput_ips / 1e12
        merged.mfu = merged.achieved_tflops / merged.peak_tflops if merged.peak_tflops else merged.mfu


def _sum_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present), 4) if present else None


def repaired_ratios(results: dict[str, CellResult]) -> None:
    """Recompute each merged cell's paired ratio to its baseline, pairing blocks on (repeat, round): a
    repeat's blocks were interleaved with the baseline's blocks of the same repeat and round only."""
    from detbench.bench.core.ratios import baseline_of, paired_ratio  # noqa: PLC0415 (imports torch; reports merge journals without it)

    for result in results.values():
        if result.status != "ok" or result.measurement is None:
            continue
        base = results.get(baseline_of(result.cell).id)
        if base is None or base.status != "ok" or base.measurement is None:
            continue
        result.ratio = paired_ratio(result, base) or result.ratio
