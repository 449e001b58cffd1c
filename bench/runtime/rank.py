"""One rank of a multi-GPU cell group: ``torchrun ... -m detbench.bench.runtime.rank REQUEST.json EVENTS.jsonl``.

Reads the standard torchrun variables (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK,
MASTER_ADDR/PORT), joins the process group (nccl on GPUs, device = LOCAL_RANK; gloo on the CPU) and measures
the request's group with the same engine as one GPU (detbench.bench.runtime.engine), as a :class:`RankTeam`: every
cell is set up (DDP-wrapped for training), the ranks warm it up together until every rank is stable, agree
on each block's iteration count, start every block at a barrier, and visit the cells in the same interleaved
rounds, so multi-GPU cells carry paired ratios too; at the end every rank's figures are gathered on rank 0,
which writes the group's events (detbench.bench.runtime.protocol) to EVENTS.jsonl and samples telemetry on its node.

Each rank keeps ``EVENTS.jsonl.ranks/rank<R>.json`` (pid, phase, cell) current, so a launcher that has to
kill a hung group can say which rank stopped where. An exception ends the rank; torchrun's error file
(``@record``) carries its message to the launcher.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from detbench.bench.core import scaling as aggregate
from detbench.bench.core.distributed_options import DistributedOptions
from detbench.bench.core.options import RunOptions, import_model_modules
from detbench.bench.core.schema import Cell, CellResult
from detbench.bench.measure import timing
from detbench.bench.measure.ddp_comm import AllReduceTimer, CudaClock, HostClock
from detbench.bench.models import MissingExtraError
from detbench.bench.runtime import faults
from detbench.bench.runtime.build import ModelWrapper
from detbench.bench.runtime.device import release_memory
from detbench.bench.runtime.engine import Team, measure_group
from detbench.bench.runtime.failures import NotApplicableError
from detbench.bench.runtime.protocol import EventLog
from detbench.bench.runtime.rank_status import StatusFile
from detbench.bench.runtime.request import GroupRequest
from detbench.bench.runtime.session import CellSession

FAULT_RANK_ENV = "DETBENCH_TEST_FAULT_RANK"  # test-only: fire DETBENCH_TEST_FAULT on this rank alone
PROCESS_GROUP_GRACE_S = 60.0  # collectives time out after the launcher's own deadline, never before it


@dataclass(frozen=True)
class RankContext:
    """Where this process sits in the job, from torchrun's standard variables."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    node_rank: int
    backend: str
    device: torch.device

    @classmethod
    def from_env(cls, backend: str) -> RankContext:
        env = os.environ
        local_rank = int(env.get("LOCAL_RANK", 0))
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
        return cls(int(env["RANK"]), local_rank, int(env["WORLD_SIZE"]),
                   int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])), int(env.get("GROUP_RANK", 0)), backend, device)

    @property
    def nnodes(self) -> int:
        return max(1, self.world_size // self.local_world_size)

    def collective_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")


def model_wrapper(cell: Cell, ctx: RankContext, dist_options: DistributedOptions,
                  timer: AllReduceTimer | None) -> Callable[[torch.nn.Module], Any]:
    """DDP for training (this rank's device, the stated bucket size, the timing comm hook); inference keeps
    the plain module: each rank runs its own copy."""
    if cell.mode != "train":
        return lambda model: model

    def wrap(model: torch.nn.Module) -> torch.nn.parallel.DistributedDataParallel:
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            bucket_cap_mb=dist_options.bucket_cap_mb, find_unused_parameters=dist_options.find_unused_parameters,
            gradient_as_bucket_view=dist_options.gradient_as_bucket_view)
        if timer is not None:
            timer.attach(ddp)
        return ddp

    return wrap


def agree(ctx: RankContext, values: list[float],
          op: dist.ReduceOp | dist.ReduceOp.RedOpType = dist.ReduceOp.MAX) -> list[float]:
    """The element-wise ``op`` of ``values`` over all ranks (every rank gets the same answer)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.collective_device())
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()


def barrier(ctx: RankContext) -> None:
    if ctx.backend == "nccl":
        dist.barrier(device_ids=[ctx.local_rank])
    else:
        dist.barrier()


def warm_up_together(session: Any, policy: timing.WarmupPolicy, ctx: RankContext) -> timing.WarmupResult:
    """One step at a time until every rank's window median is stable (or any rank hits a cap). The ranks
    must stop after the same step: a DDP rank that took one more step would wait forever in its all-reduce."""
    times: list[float] = []
    began = time.perf_counter()
    while True:
        times.extend(session.time_steps(1))
        elapsed = time.perf_counter() - began
        converged = (len(times) >= policy.min_iterations
                     and timing.window_converged(times, policy.window, policy.tolerance))
        capped_by = 1.0 if len(times) >= policy.max_iterations else 2.0 if elapsed >= policy.max_s else 0.0
        not_converged, capped = agree(ctx, [0.0 if converged else 1.0, capped_by])
        if not not_converged:
            return timing.WarmupResult(len(times), elapsed, True, "converged", times)
        if capped:
            reason = "max_iterations" if capped == 1.0 else "max_s"
            return timing.WarmupResult(len(times), elapsed, False, reason, times)


class RankTeam(Team):
    """The ranks of a torchrun job measuring one group together (see the module docstring)."""

    warm_up_alone = False
    exact_blocks = True

    def __init__(self, request: GroupRequest, ctx: RankContext, status: StatusFile) -> None:
        self.request, self.ctx, self.status = request, ctx, status
        self.timers: dict[str, AllReduceTimer] = {}
        self.warm: dict[str, timing.WarmupResult] = {}
        self.regions: dict[str, list[float]] = {}  # cell id -> [first block start, last block end] (unix s)

    def options_for(self, cell: Cell, options: RunOptions) -> RunOptions:
        """Training cells count no FLOPs here: the counter's backward through the bare module would fire DDP's
        gradient hooks outside a DDP forward; the 1-GPU cell of the same configuration has the count."""
        return dataclasses.replace(options, count_flops=False) if cell.mode == "train" else options

    def wrapper_for(self, cell: Cell) -> ModelWrapper:
        self.status.set("set_up", cell.id)
        # eager only: CUDA-event marks inside a torch.compile'd DDP (DDPOptimizer) would break its graphs
        timed = cell.mode == "train" and self.request.distributed.time_allreduce and cell.compile == "eager"
        clock = CudaClock() if self.ctx.device.type == "cuda" else HostClock()
        timer = AllReduceTimer(clock) if timed else None
        if timer is not None:
            self.timers[cell.id] = timer
        return model_wrapper(cell, self.ctx, self.request.distributed, timer)

    def warm_up(self, session: CellSession) -> None:
        self.status.set("warm_up", session.cell.id)
        session.warm = self.warm[session.cell.id] = warm_up_together(
            session, self.request.options.warmup_policy(self.ctx.device.type), self.ctx)
        if session.cell.id in self.timers:
            self.timers[session.cell.id].reset()
        # rank 0 samples every GPU of its node; the other ranks sample none
        session.telemetry_gpus = list(range(self.ctx.local_world_size)) if self.ctx.rank == 0 else []

    def on_failure(self, exc: Exception) -> None:
        if not isinstance(exc, (MissingExtraError, NotApplicableError)):  # the same on every rank: a skip
            self.status.set("failed")
            raise exc

    def block_iterations(self, planned: list[int]) -> list[int]:
        self.status.set("timed")
        return [int(v) for v in agree(self.ctx, [float(p) for p in planned])] if planned else []

    def before_block(self) -> None:
        barrier(self.ctx)

    def results(self, sessions: list[CellSession], results: dict[str, CellResult]) -> dict[str, CellResult]:
        """Every rank's figures per cell, gathered on rank 0 into the group's results (none on other ranks)."""
        self.status.set("gather")
        out: dict[str, CellResult] = {}
        for session in sessions:
            cell, ctx = session.cell, self.ctx
            blocks = session.blocks
            start = time.time() - (time.perf_counter() - (session.origin_s or time.perf_counter()))
            timer = self.timers.get(cell.id)
            figures = aggregate.rank_figures(
                ctx.rank, session.times_ms, cell.batch, local_rank=ctx.local_rank, node_rank=ctx.node_rank,
                host=socket.gethostname(), device=str(ctx.device), peak_memory_bytes=session.peak_bytes,
                allreduce=timer.summary(session.times_ms) if timer is not None else None,
                region_start_unix_s=start + blocks[0].start_offset_s if blocks else None,
                region_end_unix_s=start + blocks[-1].start_offset_s + blocks[-1].wall_s if blocks else None,
                warmup_iterations=session.warm.iterations if session.warm else None,
                warmup_converged=session.warm.converged if session.warm else None)
            gathered: list[Any] = [None] * ctx.world_size
            dist.all_gather_object(gathered, figures)
            if ctx.rank == 0:
                out[cell.id] = _group_result(cell, session, gathered, self.request, ctx)
        if self.ctx.rank != 0:
            return {}
        return {**{k: v for k, v in results.items() if k not in out}, **out}


def _group_result(cell: Cell, session: CellSession, ranks: list[Any], request: GroupRequest,
                  ctx: RankContext) -> CellResult:
    """Rank 0's session result, made the group's: throughput over every rank, DDP and scaling figures."""
    result = session.result()
    notes = []
    if ctx.device.type == "cpu":
        notes.append(f"no CUDA: {ctx.world_size} processes on the CPU over gloo (one per rank, "
                     f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    if ctx.nnodes > 1:
        notes.append(f"telemetry covers rank 0's node only ({ctx.local_world_size} of {ctx.world_size} GPUs)")
    launcher = (f"torchrun --nnodes {ctx.nnodes} --nproc-per-node {ctx.local_world_size} "
                f"(rendezvous {os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')})")
    ddp = None
    if cell.mode == "train":
        timed = request.distributed.time_allreduce and cell.compile == "eager"
        ddp = {**request.distributed.to_dict(), "comm_hook": "allreduce_hook (DDP default) with timing marks"
               if timed else "DDP default (untimed: compiled cell or time_allreduce off)"}
    sampled = result.telemetry is not None
    stats = aggregate.summarise(cell, ranks, nnodes=ctx.nnodes, backend=ctx.backend, device_type=ctx.device.type,
                                launcher=launcher, ddp=ddp, telemetry_gpus=ctx.local_world_size if sampled else 0,
                                notes=notes)
    aggregate.apply_to_result(result, stats)
    result.config["isolation"] = "torchrun"
    if result.measurement is not None:
        result.measurement.isolation = "torchrun"
        result.measurement.memory_method = ("max over ranks of torch.cuda.max_memory_allocated"
                                            if ctx.device.type == "cuda" else "not measured on CPU")
    return result


def _keep_fault_on_one_rank(rank: int) -> None:
    """Test-only: with DETBENCH_TEST_FAULT_RANK set, only that rank keeps DETBENCH_TEST_FAULT."""
    wanted = os.environ.get(FAULT_RANK_ENV)
    if wanted is not None and int(wanted) != rank:
        os.environ.pop(faults.FAULT_ENV, None)


@record
def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: torchrun ... -m detbench.bench.runtime.rank REQUEST.json EVENTS.jsonl", file=sys.stderr)
        return 2
    request, events_path = GroupRequest.read(argv[0]), Path(argv[1])
    status = StatusFile(events_path, int(os.environ["RANK"]))
    status.set("init")
    _keep_fault_on_one_rank(status.rank)
    import_model_modules(request.options.model_modules)
    ctx = RankContext.from_env(request.distributed.resolve_backend(torch.cuda.is_available()))
    if ctx.world_size != request.world_size:
        raise ValueError(f"the request is for {request.world_size} ranks but torchrun started {ctx.world_size}")
    dist.init_process_group(ctx.backend,
                            timeout=timedelta(seconds=request.options.cell_timeout_s + PROCESS_GROUP_GRACE_S),
                            device_id=ctx.device if ctx.backend == "nccl" else None)
    events = EventLog(events_path, fsync=True) if ctx.rank == 0 else EventLog(None)
    # no destroy_process_group after a failure: the other ranks may sit in a collective; torchrun ends them
    measure_group(request.cells, request.options, ctx.device, events=events, team=RankTeam(request, ctx, status))
    release_memory(ctx.device)
    status.set("done")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
