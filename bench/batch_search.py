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
from dataclasses import dataclass, field

from bench.options import RoundsPolicy, RunOptions
from bench.schema import Cell, CellResult

Probe = Callable[[Cell], CellResult]

DEFAULT_START = 8
DEFAULT_LIMIT = 1024  # a CPU never runs out of memory: the doubling must end somewhere
# Bisection stops once the gap between the last fit and the first OOM is at most this fraction of the last
# fit: 64..128 resolves to within 8 images in 3 probes rather than 6, and each probe costs a fresh process.
DEFAULT_TOLERANCE = 0.125
# One short block per probe: enough to prove the timed region fits and to give the boundary a throughput.
PROBE_ROUNDS = RoundsPolicy(rounds=2, block_s=0.5, min_block_iterations=3)


@dataclass
class BatchProbe:
    """One probe of the search: a batch size, how its isolated set-up and block ended."""

    batch_size: int
    status: str  # a CellResult status: ok | oom | error | timeout | skipped
    peak_memory_bytes: int | None = None  # over the probe's timed block (None on CPU or when it failed)
    memory_requested_bytes: int | None = None  # for an OOM, the allocation that failed
    throughput_ips: float | None = None
    reason: str | None = None


@dataclass
class BatchSearch:
    """Where the OOM boundary lies for one cell configuration, and how it was found."""

    start: int
    limit: int
    tolerance: float
    largest_fit: int | None = None  # None: not even the smallest batch tried fit
    smallest_oom: int | None = None  # None: no OOM up to ``limit``
    stop_reason: str = ""
    probes: list[BatchProbe] = field(default_factory=list)

    @property
    def resolved(self) -> bool:
        """The boundary is pinned: a fit and an OOM within the tolerance of each other."""
        return (self.largest_fit is not None and self.smallest_oom is not None
                and self.smallest_oom - self.largest_fit <= _gap_allowed(self.largest_fit, self.tolerance))


@dataclass
class SearchOutcome:
    """The search record, the largest-fit probe's full result and, when a non-OOM failure ended the search,
    that probe's result (its reason and traceback tail are kept, not hidden)."""

    search: BatchSearch
    boundary: CellResult | None
    failed: CellResult | None = None


def _gap_allowed(last_fit: int, tolerance: float) -> int:
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

    ``probe(cell)`` runs one concrete cell and returns its result; only status ``oom`` is a memory boundary.
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


def isolated_probe(options: RunOptions, rounds: RoundsPolicy = PROBE_ROUNDS) -> Probe:
    """A probe that runs one cell in a fresh worker process through the suite's launcher (bench.launch,
    ``isolation="cell"``): the real set-up path and one short timed block per round."""
    probe_options = dataclasses.replace(options, isolation="cell", rounds=rounds)

    def probe(cell: Cell) -> CellResult:
        from bench.launch import run_group  # noqa: PLC0415 (imports torch; the search itself does not need it)

        return run_group([cell], probe_options)[0]

    return probe
