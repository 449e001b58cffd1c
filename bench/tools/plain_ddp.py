"""The plainest DDP training loop: the fidelity reference for the suite's multi-GPU training cell.

    python -m detbench.bench.tools.plain_ddp --model retinanet_resnet50_fpn --gpus 4 --batch 8 --precision bf16

A torchvision detector (random init), SGD, synthetic images and boxes, one process per GPU through
torchrun (it starts torchrun itself when not already under it), a fixed warm-up, then every step timed
with CUDA events; rank 0 prints world batch / the slowest rank's median step as images/s. Nothing of
detbench's set-up is used, so a gap to the suite's cell (``run_group``) is the suite's own overhead.
cudnn.benchmark is on, as in the suite's default. On a machine without CUDA it runs over gloo (tests).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

PRECISIONS = ("fp32", "bf16")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m detbench.bench.tools.plain_ddp",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a torchvision detection builder name")
    parser.add_argument("--gpus", type=int, required=True, help="processes (one per GPU)")
    parser.add_argument("--batch", type=int, default=1, help="images per GPU")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps first (cuDNN autotuning included)")
    parser.add_argument("--iterations", type=int, default=40, help="timed steps")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--json", help="rank 0 writes its figures here")
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


# torchrun's agent has been seen (torch 2.11.0, gloo on a loaded 2-core host) to stay for minutes after both its
# workers exited, and a gloo worker (torch 2.5.1, CI) not to exit after rank 0 had written its figures: an agent alone
# this long after its workers, or still running this long after rank 0's figures, is ended
AGENT_EXIT_GRACE_S = 30.0


def relaunch(args: argparse.Namespace, argv: list[str]) -> int:
    """Start this module under torchrun, one process per GPU, NVLink multicast off."""
    import tempfile  # noqa: PLC0415

    from detbench.bench.runtime.torchrun import child_env  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="plain-ddp-") as scratch:
        figures_path = args.json or os.path.join(scratch, "figures.json")
        worker_argv = argv if args.json else [*argv, "--json", figures_path]
        # its logs in the scratch folder: without --log-dir torchrun leaves a torchelastic_* folder in $TMPDIR
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                   str(args.gpus), "--log-dir", os.path.join(scratch, "torchrun"), "-m",
                   "detbench.bench.tools.plain_ddp", *worker_argv]
        began = time.time()
        with subprocess.Popen(command, env=child_env()) as agent:
            code = wait_for_agent(agent, figures_path, began)
        if code is not None:
            return code
        written = figures_older_than(figures_path, began, 0.0)
    print(f"plain_ddp: torchrun's agent was still running {AGENT_EXIT_GRACE_S:g} s after "
          f"{'rank 0 had written its figures' if written else 'its workers had exited'}, and was ended"
          f"{'' if written else '; rank 0 wrote no figures'}", file=sys.stderr, flush=True)
    return 0 if written else 1


def wait_for_agent(agent: subprocess.Popen[bytes], figures_path: str | None = None, began: float = 0.0,
                   grace_s: float = AGENT_EXIT_GRACE_S, poll_s: float = 0.5) -> int | None:
    """torchrun's exit code, or None when the agent was ended: it outlived all of its workers by ``grace_s``, or it
    was still running ``grace_s`` after rank 0 wrote ``figures_path`` (at or after ``began``, epoch seconds)."""
    alone_since: float | None = None
    had_workers = False
    while agent.poll() is None:
        workers = children_of(agent.pid)
        had_workers = had_workers or bool(workers)
        if workers or not had_workers:
            alone_since = None
        elif alone_since is None:
            alone_since = time.monotonic()
        lingered = alone_since is not None and time.monotonic() - alone_since > grace_s
        if lingered or figures_older_than(figures_path, began, grace_s):
            end_agent(agent)
            return None
        time.sleep(poll_s)
    return agent.returncode


def figures_older_than(path: str | None, began: float, age_s: float) -> bool:
    """Whether ``path`` was written at or after ``began`` (epoch seconds), more than ``age_s`` ago."""
    if not path:
        return False
    try:
        written = os.path.getmtime(path)
    except OSError:
        return False
    return written >= began and time.time() - written > age_s


def end_agent(agent: subprocess.Popen[bytes]) -> None:
    """SIGTERM the agent (torchrun passes it on to its workers); SIGKILL it and any worker left after 10 s."""
    workers = children_of(agent.pid)
    agent.terminate()
    try:
        agent.wait(timeout=10)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


def children_of(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (read from /proc; zombies are not alive)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in "ZX":
            found.append(int(entry))
    return found


def synthetic_batch(batch: int, height: int, width: int, device, generator):
    """Images in [0, 1] and 4-8 boxes per image (sides 10-50% of the image), labels in [1, 91)."""
    import torch  # noqa: PLC0415

    images = [torch.rand(3, height, width, generator=generator, device=device) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        n = int(torch.randint(4, 9, (1,), generator=generator, device=device))
        size = torch.tensor([width, height, width, height], device=device, dtype=torch.float32)
        wh = (0.1 + 0.4 * torch.rand(n, 2, generator=generator, device=device)) * size[:2]
        xy = torch.rand(n, 2, generator=generator, device=device) * (size[:2] - wh)
        targets.append({"boxes": torch.cat([xy, xy + wh], dim=1),
                        "labels": torch.randint(1, 91, (n,), generator=generator, device=device)})
    return images, targets


def worker(args: argparse.Namespace) -> None:
    import torch  # noqa: PLC0415
    import torch.distributed as dist  # noqa: PLC0415
    import torchvision  # noqa: PLC0415

    rank, local_rank, world = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
        torch.backends.cudnn.benchmark = True
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    dist.init_process_group("nccl" if cuda else "gloo")
    torch.manual_seed(0)
    model = torchvision.models.get_model(args.model, weights=None, weights_backbone=None, num_classes=91)
    model.to(device).train()
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if cuda else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    generator = torch.Generator(device=device).manual_seed(rank)
    images, targets = synthetic_batch(args.batch, args.height, args.width, device, generator)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = sum(ddp(images, targets).values())
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    times_ms = []
    for _ in range(args.iterations):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times_ms.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            step()
            times_ms.append((time.perf_counter() - began) * 1000)
    median = torch.tensor([statistics.median(times_ms)], dtype=torch.float64, device=device)
    dist.all_reduce(median, op=dist.ReduceOp.MAX)
    if rank == 0:
        figures = {"model": args.model, "gpus": world, "batch_per_gpu": args.batch, "precision": args.precision,
                   "image_size": [args.height, args.width], "warmup_steps": args.warmup, "timed_steps": args.iterations,
                   "slowest_rank_median_ms": median.item(), "rank0_times_ms": times_ms,
                   "throughput_ips": world * args.batch * 1000.0 / median.item(),
                   "timer": "cuda-events" if cuda else "perf-counter", "device": str(device)}
        print(f"plain DDP {args.model} {args.precision} {world}x{args.batch}: {figures['throughput_ips']:.1f} images/s "
              f"(slowest rank median {median.item():.1f} ms)", flush=True)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as handle:
                json.dump(figures, handle, indent=1)
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if "LOCAL_RANK" not in os.environ:
        return relaunch(args, argv)
    worker(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
