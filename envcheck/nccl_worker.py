"""The all-reduce sweep of the NCCL check: ``python -m detbench.envcheck.nccl_worker --world-size N``.

Like nccl-tests' ``all_reduce_perf -b 1M -e 1G -f 4``: for each message size, the sum is checked on every
rank, then a few warm-up all-reduces and ``--iterations`` timed back to back between two CUDA events (the
time of one is their mean; the slowest rank's counts). This process starts one rank per GPU with
torch.multiprocessing, which share its process group (the check's deadline kills them all) and get the
standard RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT variables. Rank 0 prints one JSON line;
a failed rank makes this process print ``{"failed_rank": r, "error": "..."}`` and exit 1.
``--backend gloo`` runs the same sweep on the CPU (tests).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from datetime import timedelta
from typing import Any

UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
DEFAULT_SIZES = "1M,4M,16M,64M,256M,1G"  # nccl-tests: -b 1M -e 1G -f 4
WARMUP_ITERATIONS = 5
TIMED_ITERATIONS = 20


def parse_sizes(text: str) -> list[int]:
    """'1M,4M,1G' -> bytes (binary units, as nccl-tests); a multiple of 4 bytes (float32 elements)."""
    sizes = []
    for part in (p.strip().upper() for p in text.split(",") if p.strip()):
        number, unit = (part[:-1], part[-1]) if part[-1] in UNITS else (part, "")
        if not number.isdigit() or int(number) * UNITS[unit] < 4 or int(number) * UNITS[unit] % 4:
            raise ValueError(f"bad message size {part!r}; use bytes with K/M/G, multiples of 4, e.g. 1M,4M,1G")
        sizes.append(int(number) * UNITS[unit])
    if not sizes:
        raise ValueError("no message sizes given; e.g. --sizes 1M,4M,16M")
    return sizes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _timer(device: Any) -> tuple[Any, Any]:
    """(mark, seconds_between): CUDA events on a GPU, perf_counter on the CPU (gloo all-reduce is blocking)."""
    import torch  # noqa: PLC0415

    if device.type == "cuda":
        def mark() -> Any:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event

        def between(start: Any, end: Any) -> float:
            end.synchronize()
            return start.elapsed_time(end) / 1e3

        return mark, between
    return time.perf_counter, lambda start, end: end - start


def sweep_size(size: int, rank: int, world_size: int, device: Any, warmup: int, iterations: int,
               keep: list[Any]) -> dict[str, Any]:
    """Check the sum at one message size, then time it (world size 1: correctness only).

    Every tensor that went through a collective is appended to ``keep`` (see ``rank_main``)."""
    import torch  # noqa: PLC0415
    import torch.distributed as dist  # noqa: PLC0415

    tensor = torch.full((size // 4,), float(rank + 1), device=device)
    dist.all_reduce(tensor)  # rank r contributes r+1: the sum is n(n+1)/2 everywhere
    expected = world_size * (world_size + 1) / 2
    correct = torch.tensor([float(bool(torch.all(tensor == expected)))], device=device)
    flags = [torch.zeros_like(correct) for _ in range(world_size)]
    keep.extend([tensor, correct, *flags])
    dist.all_gather(flags, correct)
    row: dict[str, Any] = {"bytes": size, "wrong_ranks": [r for r, f in enumerate(flags) if f.item() != 1.0],
                           "time_s": None}
    if world_size == 1:
        return row
    mark, between = _timer(device)
    for _ in range(warmup):
        dist.all_reduce(tensor)
    dist.barrier()
    start = mark()
    for _ in range(iterations):
        dist.all_reduce(tensor)  # the values grow by a factor n per call; only the time matters now
    elapsed = torch.tensor([between(start, mark()) / iterations], device=device)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    keep.append(elapsed)
    row["time_s"] = float(elapsed.item())
    return row


def rank_main(local_rank: int, args: argparse.Namespace, port: int) -> None:
    """One rank: standard env:// initialisation, the sweep, rank 0 prints the JSON line."""
    import torch  # noqa: PLC0415
    import torch.distributed as dist  # noqa: PLC0415

    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(args.world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if args.backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group(args.backend, init_method="env://", timeout=timedelta(seconds=args.timeout))
    # The tensors stay referenced until the group is gone: otherwise gloo's worker thread may free the last
    # reference to one while destroy_process_group joins it holding the GIL, a deadlock seen on torch 2.5/2.7.
    keep: list[Any] = []
    try:
        rows = [sweep_size(size, local_rank, args.world_size, device, args.warmup, args.iterations, keep)
                for size in parse_sizes(args.sizes)]
    finally:
        dist.destroy_process_group()
    del keep
    if local_rank == 0:
        version = torch.cuda.nccl.version() if args.backend == "nccl" else None
        print(json.dumps({"world_size": args.world_size, "backend": args.backend,
                          "nccl": ".".join(map(str, version)) if isinstance(version, tuple) else version,
                          "warmup_iterations": args.warmup, "iterations": args.iterations, "sizes": rows}),
              flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--sizes", default=DEFAULT_SIZES)
    parser.add_argument("--backend", choices=("nccl", "gloo"), default="nccl")
    parser.add_argument("--warmup", type=int, default=WARMUP_ITERATIONS)
    parser.add_argument("--iterations", type=int, default=TIMED_ITERATIONS)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    parse_sizes(args.sizes)  # a bad size is a usage error here, not N crashed ranks

    import torch.multiprocessing as mp  # noqa: PLC0415

    try:
        mp.start_processes(rank_main, args=(args, free_port()), nprocs=args.world_size, start_method="spawn")
    except mp.ProcessRaisedException as exc:  # the rank's traceback; its last line is the error (NCCL's text)
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        error = lines[-1] if lines else "unknown error"
        print(json.dumps({"failed_rank": exc.error_index, "error": error}), flush=True)
        return 1
    except mp.ProcessExitedException as exc:  # killed by a signal or os._exit: no traceback to quote
        print(json.dumps({"failed_rank": exc.error_index, "error": str(exc)}), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
