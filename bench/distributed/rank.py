"""One rank of a multi-GPU cell group: ``torchrun ... -m bench.distributed.rank REQUEST.json RESULT.jsonl``.

Reads the standard torchrun variables (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK,
MASTER_ADDR/PORT), joins the process group (nccl on GPUs, device = LOCAL_RANK; gloo on the CPU) and runs
each cell of the request in order:

set up (DDP-wrapped for training) -> warm up together until every rank is stable -> agree on the number
of timed steps -> barrier -> timed block (rank 0 samples telemetry on its node's GPUs) -> gather every
rank's figures on rank 0, which appends the cell's result to RESULT.jsonl (one JSON event per line).

Each rank keeps ``RESULT.jsonl.ranks/rank<R>.json`` (pid, phase, cell) current, so a launcher that has to
kill a hung group can say which rank stopped where. An exception ends the rank; torchrun's error file
(``@record``) carries its message to the launcher.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
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

from bench import faults, timing
from bench.distributed import aggregate
from bench.distributed.ddp_comm import AllReduceTimer, CudaClock, HostClock
from bench.distributed.options import DistributedOptions
from bench.distributed.request import GroupRequest
from bench.models import MissingExtraError
from bench.options import RunOptions, import_model_modules
from bench.schema import Cell, CellResult
from bench.session import CellSession, release_memory
from bench.telemetry import TelemetryTracker

FAULT_RANK_ENV = "DETBENCH_TEST_FAULT_RANK"  # test-only: fire DETBENCH_TEST_FAULT on this rank alone
# in the order a rank passes them
PHASES = ("starting", "init", "set_up", "warm_up", "timed", "gather", "done", "failed")
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


class StatusFile:
    """``<RESULT>.ranks/rank<R>.json``: this rank's pid, phase and cell, replaced atomically at each change."""

    def __init__(self, result_path: Path, rank: int) -> None:
        self.path = Path(f"{result_path}.ranks", f"rank{rank}.json")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rank = rank

    def set(self, phase: str, cell_id: str | None = None) -> None:
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps({"rank": self.rank, "pid": os.getpid(), "phase": phase, "cell_id": cell_id,
                                       "host": socket.gethostname(), "t": time.time()}), encoding="utf-8")
        os.replace(partial, self.path)


def append_event(path: Path, event: dict[str, Any]) -> None:
    """One JSON line, flushed and fsynced: a result written is a result kept, whatever happens next."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(event) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _prepare_step(cell: Cell, options: RunOptions, device: torch.device,
                  wrap_model: Callable[[torch.nn.Module], Any]) -> CellSession:
    """The engine's set-up path on a rank, without its own warm-up (the ranks warm up together).

    Training cells count no FLOPs here: the counter's backward through the bare module would fire DDP's
    gradient hooks outside a DDP forward; the 1-GPU cell of the same configuration has the count."""
    if cell.mode == "train":
        options = dataclasses.replace(options, count_flops=False)
    return CellSession(cell, options, device, wrap_model=wrap_model, warm_up=False)


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


def run_cell(cell: Cell, request: GroupRequest, ctx: RankContext, status: StatusFile) -> CellResult | None:
    """This rank's part of one cell; rank 0 returns the group's CellResult, the others None."""
    options, dist_options = request.options, request.distributed
    status.set("set_up", cell.id)
    clock = CudaClock() if ctx.device.type == "cuda" else HostClock()
    # eager only: CUDA-event marks inside a torch.compile'd DDP (DDPOptimizer) would break its graphs
    timed = cell.mode == "train" and dist_options.time_allreduce and cell.compile == "eager"
    timer = AllReduceTimer(clock) if timed else None
    session = _prepare_step(cell, options, ctx.device, model_wrapper(cell, ctx, dist_options, timer))
    session.set_up()

    status.set("warm_up", cell.id)
    rounds = options.rounds_policy(ctx.device.type)
    warm = warm_up_together(session, options.warmup_policy(ctx.device.type), ctx)
    planned = max(rounds.min_block_iterations, round(rounds.block_s * 1000.0 / (warm.median_ms or 1.0)))
    (iterations,) = agree(ctx, [float(planned)])  # every rank runs the same number of steps per block

    status.set("timed", cell.id)
    tracker = _telemetry(options, ctx)
    if timer is not None:
        timer.reset()
    times: list[float] = []
    with tracker or contextlib.nullcontext():
        region_start = time.time()
        for round_index in range(rounds.rounds):  # blocks, as for one GPU: their spread is the cell's noise
            barrier(ctx)
            times.extend(session.time_block(int(iterations), round_index=round_index, exact=True))
        region_end = time.time()

    status.set("gather", cell.id)
    figures = aggregate.rank_figures(
        ctx.rank, times, cell.batch, local_rank=ctx.local_rank, node_rank=ctx.node_rank,
        host=socket.gethostname(), device=str(ctx.device), peak_memory_bytes=session.peak_bytes,
        allreduce=timer.summary(times) if timer is not None else None, region_start_unix_s=region_start,
        region_end_unix_s=region_end, warmup_iterations=warm.iterations, warmup_converged=warm.converged)
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, figures)
    if ctx.rank != 0:
        return None
    return _group_result(cell, session, gathered, request, ctx, tracker, warm, int(iterations) * rounds.rounds)


def _group_result(cell: Cell, session: Any, ranks: list[Any], request: GroupRequest, ctx: RankContext,
                  tracker: TelemetryTracker | None, warm: timing.WarmupResult, iterations: int) -> CellResult:
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
    stats = aggregate.summarise(cell, ranks, nnodes=ctx.nnodes, backend=ctx.backend, device_type=ctx.device.type,
                                launcher=launcher, ddp=ddp, telemetry_gpus=ctx.local_world_size if tracker else 0,
                                notes=notes)
    aggregate.apply_to_result(result, stats)
    result.warmup_iterations, result.warmup_s, result.warmup_converged = warm.iterations, warm.seconds, warm.converged
    result.config["isolation"] = "torchrun"
    if result.measurement is not None:
        result.measurement.isolation = "torchrun"
        result.measurement.warmup_stop_reason = warm.stop_reason
        result.measurement.memory_method = ("max over ranks of torch.cuda.max_memory_allocated"
                                            if ctx.device.type == "cuda" else "not measured on CPU")
    if cell.compiled and result.first_call_s is not None:
        result.compile_s = timing.compile_seconds(result.first_call_s, result.latency.median_ms)
    if tracker is not None:
        # every rank of this node ran the same number of steps inside rank 0's region
        result.telemetry = tracker.summary(images=iterations * cell.batch * ctx.local_world_size)
    elif request.options.telemetry_hz == 0:
        result.config["telemetry"] = "disabled (--telemetry-hz 0)"
    else:
        result.config["telemetry"] = "not sampled on CPU"
    return result


def _telemetry(options: RunOptions, ctx: RankContext) -> TelemetryTracker | None:
    if ctx.rank != 0 or ctx.device.type != "cuda" or options.telemetry_hz == 0:
        return None
    return TelemetryTracker(list(range(ctx.local_world_size)), options.telemetry_hz)


def _keep_fault_on_one_rank(rank: int) -> None:
    """Test-only: with DETBENCH_TEST_FAULT_RANK set, only that rank keeps DETBENCH_TEST_FAULT."""
    wanted = os.environ.get(FAULT_RANK_ENV)
    if wanted is not None and int(wanted) != rank:
        os.environ.pop(faults.FAULT_ENV, None)


@record
def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: torchrun ... -m bench.distributed.rank REQUEST.json RESULT.jsonl", file=sys.stderr)
        return 2
    request, result_path = GroupRequest.read(argv[0]), Path(argv[1])
    status = StatusFile(result_path, int(os.environ["RANK"]))
    status.set("init")
    _keep_fault_on_one_rank(status.rank)
    import_model_modules(request.options.model_modules)
    ctx = RankContext.from_env(request.distributed.resolve_backend(torch.cuda.is_available()))
    if ctx.world_size != request.world_size:
        raise ValueError(f"the request is for {request.world_size} ranks but torchrun started {ctx.world_size}")
    dist.init_process_group(ctx.backend,
                            timeout=timedelta(seconds=request.options.cell_timeout_s + PROCESS_GROUP_GRACE_S),
                            device_id=ctx.device if ctx.backend == "nccl" else None)
    for cell in request.cells:
        if ctx.rank == 0:
            append_event(result_path, {"event": "start", "cell_id": cell.id, "t": time.time()})
        try:
            result = run_cell(cell, request, ctx, status)
        except MissingExtraError as exc:  # the same on every rank: a skipped cell, the group goes on
            result = CellResult(cell, status="skipped", reason=str(exc), config={"isolation": "torchrun"})
        except BaseException:
            # no destroy_process_group here: the other ranks may sit in a collective; torchrun ends them
            status.set("failed", cell.id)
            raise
        if result is not None:
            append_event(result_path, {"event": "result", "result": result.to_dict()})
        release_memory(ctx.device)
    status.set("done")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
