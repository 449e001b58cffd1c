"""One rank of the NCCL all-reduce check (started by envcheck.checks.nccl, one process per GPU).

Prints one JSON line: the sum it got, whether it is correct, and the median all-reduce time.
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import timedelta


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bytes", type=int, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    args = parser.parse_args()

    import torch  # noqa: PLC0415
    import torch.distributed as dist  # noqa: PLC0415

    torch.cuda.set_device(args.rank)
    device = torch.device("cuda", args.rank)
    store = dist.TCPStore("127.0.0.1", args.port, args.world_size, args.rank == 0,
                          timeout=timedelta(seconds=args.timeout))
    dist.init_process_group("nccl", store=store, rank=args.rank, world_size=args.world_size,
                            timeout=timedelta(seconds=args.timeout))
    numel = args.bytes // 4
    tensor = torch.full((numel,), float(args.rank + 1), device=device)
    dist.all_reduce(tensor)  # correctness: sum of 1..n everywhere
    torch.cuda.synchronize()
    expected = args.world_size * (args.world_size + 1) / 2
    correct = bool(torch.all(tensor == expected).item())

    # warm up until two consecutive timings agree within 5% (bounded), then take the median of several
    def timed() -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dist.all_reduce(tensor)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    previous = timed()
    for _ in range(50):
        current = timed()
        if abs(current - previous) <= 0.05 * previous:
            break
        previous = current
    times = [timed() for _ in range(10)]
    # ranks agree on the slowest rank's median, as nccl-tests reports
    median = torch.tensor([statistics.median(times)], device=device)
    dist.all_reduce(median, op=dist.ReduceOp.MAX)
    version = torch.cuda.nccl.version()
    print(json.dumps({"rank": args.rank, "correct": correct, "expected": expected,
                      "got": float(tensor[0].item()), "time_s": float(median.item()),
                      "nccl": ".".join(map(str, version)) if isinstance(version, tuple) else str(version)}),
          flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
