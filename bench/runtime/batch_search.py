"""The largest batch that fits: doubling from a start batch until the first OOM, then bisection between the
last batch that fit and the first that did not.

Each probe is the cell's real set-up (build, calibration, FLOPs, compile, first call, warm-up) and one short
timed block, run by the suite's launcher in a fresh worker process (``isolation="cell"``), so an OOM or a
fragmented allocator never poisons the next probe, and "fits" means set-up + warm-up + timing fit. The
search records every probe (batch, status, peak memory, images/s) and the boundary; the largest-fit probe's
result is the throughput at the boundary, an ordinary cell result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from detbench.bench.core.options import RoundsPolicy, RunOptions, WarmupPolicy
from detbench.bench.core.schema import BatchProbe, BatchSearch, Cell, CellResult

Probe = Callable[[Cell], CellResult]

DEFAULT_START = 8
DEFAULT_LIMIT = 512  # a host with much memory may not run out for long: the doubling must end somewhere
# Bisection stops once the gap between the last fit and the first OOM is at most this fraction of the last
# fit: 128..256 resolves to 160..192 in 2 probes rather than 7, and each probe costs a fresh process (~20 s
# for a detector on an H100: start, build, calibration, warm-up at a large batch).
DEFAULT_TOLERANCE = 0.25
# Two short blocks per probe: enough to prove the timed region fits and to give the boundary a throughput.
PROBE_ROUNDS = RoundsPolicy(rounds=2, block_s=0.5, min_block_iterations=2)
# A short warm-up: the peak memory of a step is reached in its first iterations, and a probe must stay cheap.
PROBE_WARMUP = WarmupPolicy(window=2, tolerance=0.1, min_iterations=3, max_iterations=10, max_s=5.0)


@dataclass
class SearchOutcome:
    """The search record, the largest-fit probe's full result and, when a non-OOM failure ended the search,
    that probe's result (its reason and traceback tail are kept, not hidden)."""

    search: BatchSearch
    boundary: CellResult | None
    failed: CellResult | None = None


def _gap_allowed(last_fit: int, tolerance: float) -> int:  # the same rule as BatchSearch.resolved
    return max(1, int(last_fit * tolerance))


def _check(start: int, limit: int, tolerance: float) -> None:
    if not isinstance(start, int) or isinstance(start, bool) or start < 1:
        raise ValueError(f"batch search start must be a positive integer, got {start!r}")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < start:
        raise ValueError(f"batch search limit must be an integer >= the start ({start}), got {limit!r}")
    if not 0 <= tolerance < 1:
        raise ValueError(f"batch search tolerance must be a fraction in [0, 1), got {tolerance!r}")


def search(template: Cell, probe: Probe, *, start: int = DEFAULT_START, limit: int = DEFAULT_LIMIT,
           tolerance: float = DEFAULT_TOLERANCE) -> SearchOutcome:
    """Find the largest batch of ``template``'s configuration that fits, probing with ``probe``.

    ``probe(cell)`` runs one concrete cell and returns its result; only status ``oom`` is a memory boundary (on
    the CPU too: an allocator failure, MemoryError or an OOM-killed worker is ``oom``, detbench.bench.runtime.failures).
    Any other failure (error, timeout, skipped) ends the search, recorded with its reason: it says nothing
    about memory. The batch axis is assumed monotonic (if b fits, every smaller batch fits)."""
    _check(start, limit, tolerance)
    record = BatchSearch(start=start, limit=limit, tolerance=tolerance)
    results: dict[int, CellResult] = {}
    failed: CellResult | None = None

    def run(batch: int) -> str:
        nonlocal failed
        result = probe(dataclasses.replace(template, batch_size=batch))
        results[batch] = result
        record.probes.append(BatchProbe(batch, result.status, result.peak_memory_bytes,
                                        result.memory_requested_bytes, result.throughput_ips, result.reason))
        if result.status == "ok":
            record.largest_fit = max(record.largest_fit or 0, batch)
        elif result.status == "oom":
            record.smallest_oom = min(record.smallest_oom or batch, batch)
        else:
            failed = result
            record.stop_reason = f"{result.status} at batch {batch}: {result.reason or 'no reason given'}"
        return result.status

    # doubling: start, 2*start, ... up to the limit (the limit itself is the last probe)
    batch = start
    while True:
        status = run(batch)
        if status != "ok" or batch >= limit:
            break
        batch = min(batch * 2, limit)
    # bisection between the last fit (0: none yet) and the first OOM
    while failed is None and record.smallest_oom is not None:
        low, high = record.largest_fit or 0, record.smallest_oom
        if high - low <= (_gap_allowed(low, tolerance) if low else 1):
            break
        if run((low + high) // 2) not in ("ok", "oom"):
            break
    if not record.stop_reason:
        record.stop_reason = _stop_reason(record)
    boundary = results.get(record.largest_fit) if record.largest_fit is not None else None
    return SearchOutcome(record, boundary, failed)


def _stop_reason(record: BatchSearch) -> str:
    if record.largest_fit is None:
        return f"nothing fits: batch {record.smallest_oom} runs out of memory"
    if record.smallest_oom is None:
        return f"no OOM up to the limit (batch {record.limit})"
    if record.smallest_oom - record.largest_fit == 1:
        return f"exact boundary: {record.largest_fit} fits, {record.smallest_oom} runs out of memory"
    return (f"boundary within {record.tolerance:.0%}: {record.largest_fit} fits, {record.smallest_oom} runs out "
            "of memory")


def isolated_probe(options: RunOptions, run: Callable[[list[Cell], RunOptions], list[CellResult]],
                   rounds: RoundsPolicy | None = None) -> Probe:
    """A probe that runs one cell in a fresh worker process through ``run`` (the suite's launcher,
    detbench.bench.runtime.launch.run_group, with ``isolation="cell"``): the real set-up path and one short timed block
    per round. ``rounds`` defaults to
    :data:`PROBE_ROUNDS`, or to at most two of the run's own rounds when the run sets them; the warm-up to
    :data:`PROBE_WARMUP` unless the run sets one."""
    if rounds is None:
        given = options.rounds
        rounds = PROBE_ROUNDS if given is None else dataclasses.replace(given, rounds=min(given.rounds, 2))
    probe_options = dataclasses.replace(options, isolation="cell", rounds=rounds,
                                        warmup=options.warmup or PROBE_WARMUP)

    def probe(cell: Cell) -> CellResult:
        return run([cell], probe_options)[0]

    return probe


def search_cell(cell: Cell, options: RunOptions, probe: Probe, *, start: int = DEFAULT_START,
                limit: int = DEFAULT_LIMIT, tolerance: float = DEFAULT_TOLERANCE) -> CellResult:
    """The result of a ``bsmax`` cell: the largest-fit probe's result (an ordinary cell result: throughput,
    latency, memory, FLOPs at that batch) under the ``bsmax`` cell, with the search in ``batch_search``. When
    nothing fits, the cell is ``oom``; when a non-OOM failure ended the search before any fit, that failure."""
    if not cell.searches_batch:
        raise ValueError(f"{cell.id}: not a batch-search cell (batch size {cell.batch_size!r})")
    outcome = search(cell, probe, start=start, limit=limit, tolerance=tolerance)
    record = outcome.search
    if outcome.boundary is not None:
        result = dataclasses.replace(outcome.boundary, cell=cell, batch_search=record, ratio=None)
        if outcome.failed is not None:  # the search was cut short: the figures stand, the boundary is a lower bound
            result.reason = f"batch search cut short: {record.stop_reason}"
        return result
    if outcome.failed is not None:
        return dataclasses.replace(outcome.failed, cell=cell, batch_search=record)
    last = record.probes[-1]
    return CellResult(cell, status="oom", reason=f"batch search: {record.stop_reason}", batch_search=record,
                      memory_requested_bytes=last.memory_requested_bytes)
