"""What a multi-GPU cell measured beyond a one-GPU cell: per-rank figures and the group's aggregate.

Part of the result schema (``CellResult.distributed``, schema v2); :meth:`DistributedStats.from_dict` reads it
back. Pure dataclasses: detbench.bench.core.schema imports this module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class AllReduceStats:
    """DDP's gradient all-reduce over the timed steps of one rank (from the comm hook's marks).

    ``wait``: from the last gradient bucket being handed over (backward done) to the last all-reduce
    finishing - communication not hidden behind backward, which the optimizer step waits for.
    ``busy``: time with at least one bucket's all-reduce queued or running (it may overlap backward).
    """

    timer: str  # "cuda-events" | "perf-counter"
    steps: int
    buckets_per_step: float
    wait_ms_median: float
    busy_ms_median: float
    wait_share: float  # sum of wait / sum of step times
    busy_share: float


@dataclass
class RankFigures:
    """One rank's timed region."""

    rank: int
    local_rank: int
    node_rank: int
    host: str
    device: str
    times_ms: list[float]
    median_ms: float
    iqr_ms: float
    throughput_ips: float  # this rank's images/s at its median
    peak_memory_bytes: int | None = None
    allreduce: AllReduceStats | None = None
    region_start_unix_s: float | None = None  # wall clock of the timed region (same host: comparable)
    region_end_unix_s: float | None = None
    warmup_iterations: int | None = None
    warmup_converged: bool | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RankFigures:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if kwargs.get("allreduce"):
            kwargs["allreduce"] = AllReduceStats(**kwargs["allreduce"])
        return cls(**kwargs)


@dataclass
class DistributedStats:
    """The group's figures: aggregate throughput and how it was formed, rank spread, all-reduce share, scaling."""

    world_size: int
    nnodes: int
    backend: str  # "nccl" | "gloo"
    device_type: str  # "cuda" | "cpu"
    launcher: str  # e.g. "torchrun --standalone --nproc-per-node 2"
    parallelism: str  # "ddp" (training) | "data-parallel" (inference: one model copy per rank)
    per_gpu_batch: int
    world_batch: int
    throughput_ips: float
    throughput_basis: str
    slowest_rank: int
    rank_median_spread: float  # (slowest - fastest rank median) / fastest
    region_overlap: float | None  # share of the union of the ranks' timed regions that all ran at once
    ranks: list[RankFigures]
    ddp: dict[str, Any] | None = None  # bucket_cap_mb, find_unused_parameters, gradient_as_bucket_view, comm hook
    allreduce_wait_share: float | None = None  # mean over ranks
    allreduce_busy_share: float | None = None
    telemetry_gpus: int = 0  # GPUs rank 0 sampled (its node's)
    scaling_efficiency: float | None = None  # throughput(N) / (N * throughput(1))
    baseline: dict[str, Any] | None = None  # the 1-GPU cell: id, throughput_ips, how it came to be measured
    scaling_note: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistributedStats:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["ranks"] = [RankFigures.from_dict(r) for r in kwargs.get("ranks", [])]
        return cls(**kwargs)
