"""Pure functions from per-rank figures to a multi-GPU cell's result: total throughput, spread, scaling.

Total images/s differs by what the ranks do:

* DDP training: every step ends with an all-reduce, so the ranks advance together at the pace of the
  slowest; the job processes the world batch once per slowest-rank step. Total = world batch / the
  slowest rank's median step time. (Summing per-rank rates would count a fast rank's time spent waiting
  for the slow one as work.)
* Data-parallel inference: the ranks are independent copies that ran at the same time, so their rates
  add up. Total = sum over ranks of per-GPU batch / that rank's median.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from statistics import mean
from typing import Any

from detbench.bench.core import stats as bench_stats
from detbench.bench.core.distributed_stats import DistributedStats, RankFigures
from detbench.bench.core.schema import Cell, CellResult


def rank_figures(rank: int, times_ms: Sequence[float], batch_size: int, **facts: Any) -> RankFigures:
    """One rank's figures from its timed iterations (median, IQR, its own images/s)."""
    latency = bench_stats.latency_stats(times_ms)
    return RankFigures(rank=rank, times_ms=list(times_ms), median_ms=latency.median_ms, iqr_ms=latency.iqr_ms,
                       throughput_ips=batch_size * 1000.0 / latency.median_ms, **facts)


def total_throughput(mode: str, ranks: Sequence[RankFigures], per_gpu_batch: int, q: float = 50.0) -> float:
    """Group images/s at percentile ``q`` of the iteration times (50: median; 90: the slow end)."""
    if not ranks:
        raise ValueError("no ranks to aggregate")
    at_q = [bench_stats.percentile(sorted(r.times_ms), q) for r in ranks]
    if mode == "train":
        return per_gpu_batch * len(ranks) * 1000.0 / max(at_q)
    return sum(per_gpu_batch * 1000.0 / t for t in at_q)


def throughput_basis(mode: str) -> str:
    if mode == "train":
        return "world batch / slowest rank's median step (DDP ranks advance together)"
    return "sum over ranks of per-GPU batch / that rank's median (independent model copies)"


def slowest_rank(ranks: Sequence[RankFigures]) -> int:
    return max(ranks, key=lambda r: r.median_ms).rank


def median_spread(ranks: Sequence[RankFigures]) -> float:
    """(slowest - fastest median) / fastest median across ranks."""
    medians = [r.median_ms for r in ranks]
    return (max(medians) - min(medians)) / min(medians)


def region_overlap(ranks: Sequence[RankFigures]) -> float | None:
    """Share of the union of the timed regions during which every rank was inside its region."""
    spans = [(s, e) for s, e in ((r.region_start_unix_s, r.region_end_unix_s) for r in ranks)
             if s is not None and e is not None]
    if len(spans) < len(ranks):  # a rank without a timed region
        return None
    union = max(e for _, e in spans) - min(s for s, _ in spans)
    common = min(e for _, e in spans) - max(s for s, _ in spans)
    return max(common, 0.0) / union if union > 0 else 1.0


def allreduce_shares(ranks: Sequence[RankFigures]) -> tuple[float | None, float | None]:
    """(wait share, busy share) averaged over the ranks that timed their all-reduce."""
    timed = [r.allreduce for r in ranks if r.allreduce is not None]
    if not timed:
        return None, None
    return mean(a.wait_share for a in timed), mean(a.busy_share for a in timed)


def scaling_efficiency(throughput_n: float, gpus: int, throughput_1: float) -> float:
    """throughput(N) / (N * throughput(1)): 1.0 is perfect weak scaling."""
    if gpus < 1 or throughput_1 <= 0:
        raise ValueError(
            f"scaling efficiency needs gpus >= 1 and a positive 1-GPU throughput, got {gpus}, {throughput_1}")
    return throughput_n / (gpus * throughput_1)


def one_gpu_twin(cell: Cell) -> Cell:
    """The 1-GPU cell of the same configuration (the scaling reference)."""
    return replace(cell, gpus=1)


def summarise(cell: Cell, ranks: Sequence[RankFigures], *, nnodes: int, backend: str, device_type: str,
              launcher: str, ddp: dict | None, telemetry_gpus: int, notes: list[str]) -> DistributedStats:
    """DistributedStats of one cell from every rank's figures (ordered by rank)."""
    ranks = sorted(ranks, key=lambda r: r.rank)
    wait, busy = allreduce_shares(ranks)
    return DistributedStats(
        world_size=len(ranks), nnodes=nnodes, backend=backend, device_type=device_type, launcher=launcher,
        parallelism="ddp" if cell.mode == "train" else "data-parallel",
        per_gpu_batch=cell.batch, world_batch=cell.batch * len(ranks),
        throughput_ips=total_throughput(cell.mode, ranks, cell.batch),
        throughput_basis=throughput_basis(cell.mode), slowest_rank=slowest_rank(ranks),
        rank_median_spread=median_spread(ranks), region_overlap=region_overlap(ranks), ranks=list(ranks),
        ddp=ddp, allreduce_wait_share=wait, allreduce_busy_share=busy, telemetry_gpus=telemetry_gpus,
        notes=list(notes))


def apply_to_result(result: CellResult, stats: DistributedStats) -> CellResult:
    """Make ``result`` (rank 0's set-up facts) the group's: the slowest rank's times and latency, the total
    throughput (median, and at the slow/fast ends), peak memory of the fullest GPU, the stats in config."""
    ranks = stats.ranks
    slowest = next(r for r in ranks if r.rank == stats.slowest_rank)
    result.times_ms = list(slowest.times_ms)
    result.latency = bench_stats.latency_stats(slowest.times_ms)
    result.throughput_ips = stats.throughput_ips
    result.throughput_ips_p10 = total_throughput(result.cell.mode, ranks, stats.per_gpu_batch, q=90.0)
    result.throughput_ips_p90 = total_throughput(result.cell.mode, ranks, stats.per_gpu_batch, q=10.0)
    peaks = [r.peak_memory_bytes for r in ranks if r.peak_memory_bytes is not None]
    result.peak_memory_bytes = max(peaks) if peaks else None
    result.distributed = stats
    return result


def attach_scaling(result: CellResult, baseline: CellResult | None, source: str) -> CellResult:
    """Fill the scaling efficiency of a multi-GPU result from its 1-GPU twin's result (or say why not)."""
    stats = result.distributed
    if result.status != "ok" or stats is None:
        return result
    if baseline is None:
        stats.scaling_note = "no 1-GPU cell of this configuration in the run: efficiency not computed"
    elif baseline.status != "ok" or not baseline.throughput_ips:
        stats.scaling_note = f"the 1-GPU cell {baseline.cell.id} did not measure ({baseline.status}: {baseline.reason})"
    else:
        efficiency = scaling_efficiency(stats.throughput_ips, stats.world_size, baseline.throughput_ips)
        stats.scaling_efficiency = efficiency
        stats.baseline = {"cell_id": baseline.cell.id, "throughput_ips": baseline.throughput_ips, "source": source}
        if efficiency > SUPERLINEAR:
            stats.scaling_note = superlinear_note(efficiency, stats.world_size, stats.device_type)
    return result


# an efficiency above this is said to be unlike scaling (block noise alone moves a figure a few per cent)
SUPERLINEAR = 1.1


def superlinear_note(efficiency: float, ranks: int, device_type: str) -> str:
    """Why an efficiency above 1 is not a scaling figure: N ranks did more than N times one rank's work."""
    why = ("CPU ranks share the host's cores (the 1-rank cell had them all, each of these ranks fewer threads), so "
           "the two cells are different set-ups" if device_type == "cpu" else
           "each GPU stepped faster than the 1-GPU cell did: check that both were measured alike (the same batch per "
           "GPU, clocks, inputs)")
    work = efficiency * ranks
    return f"efficiency {efficiency:.2f} is above 1 ({ranks} ranks did {work:.2f}x one rank's work): {why}"
