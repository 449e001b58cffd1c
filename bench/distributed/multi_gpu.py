"""The multi-GPU check for a 2- or 4-GPU machine, in under 9 minutes: ``python -m bench.distributed.multi_gpu --out DIR``.

1. envcheck's NCCL sweep on every GPU and on 2, judged against the NVLink/PCIe budget.
2. DDP training, bf16, 8 images per GPU, RetinaNet then Faster R-CNN, on 1 GPU (bench.launch: the scaling
   reference) and on 2 and 4 GPUs (run_group), with the plain DDP reference (bench.distributed.plain_ddp)
   for RetinaNet on 2 and 4 GPUs right after RetinaNet's cells: the fidelity check.
3. Data-parallel inference, the same detectors and counts.

Steps run in that order while the time budget lasts; one that would not fit is recorded as skipped (run
the rest with --models/--modes).
Writes DIR/environment.json, DIR/nccl_sweep.json, DIR/cells.json, DIR/plain_ddp.json (rewritten after
every step, so nothing measured is lost) and prints a short table last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.distributed.launch import child_env, run_group
from bench.launch import launch
from bench.matrix import probe_capabilities
from bench.options import RunOptions
from bench.schema import Cell, CellResult
from bench.timing import MeasurePolicy, WarmupPolicy
from envcheck import fingerprint
from envcheck.checks.nccl import MULTICAST_OFF

MODELS = ("retinanet_resnet50_fpn", "fasterrcnn_resnet50_fpn")
FIDELITY_MODEL = "retinanet_resnet50_fpn"
# Seconds a step is expected to take on an H100 (build, cuDNN autotuning of the first training step ~30 s,
# warm-up, timing); a step starts only if this much budget is left.
ESTIMATE_S = {"sweep": 30, "one_gpu": 45, "group": 55, "plain": 50}
OPTIONS = RunOptions(profile="multi-gpu", isolation="process", count_flops=False, cell_timeout_s=240.0,
                     warmup=WarmupPolicy(window=5, tolerance=0.02, min_iterations=10, max_iterations=200, max_s=6.0),
                     measure=MeasurePolicy(min_iterations=20, min_s=2.0, max_iterations=500, max_s=4.0))


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def allows(self, kind: str) -> bool:
        return time.monotonic() + ESTIMATE_S[kind] <= self.end


def write_json(path: Path, data: Any) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(partial, path)


def nccl_sweeps(counts: list[int], budget: Budget) -> list[dict[str, Any]]:
    from envcheck import links, nvml  # noqa: PLC0415
    from envcheck.checks.nccl import run_sweep  # noqa: PLC0415

    uuids = nvml.torch_device_uuids()
    rows = []
    for world in counts:
        if not budget.allows("sweep"):
            rows.append({"world_size": world, "status": "skip", "detail": "time budget"})
            continue
        outcome = run_sweep(world, 120.0, budget=links.describe_links(uuids[:world]))
        rows.append({"world_size": world, "status": outcome.status, "detail": outcome.detail,
                     "remedy": outcome.remedy, "measured": outcome.measured})
    return rows


def plain_ddp(gpus: int, precision: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "plain.json")
        command = [sys.executable, "-m", "bench.distributed.plain_ddp", "--model", FIDELITY_MODEL, "--gpus", str(gpus),
                   "--batch", "8", "--precision", precision, "--warmup", "25", "--iterations", "30", "--json", str(out)]
        done = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or not out.exists():
            return {"gpus": gpus, "error": done.stderr[-2000:]}
        return json.loads(out.read_text())


def skipped(cell: Cell, why: str) -> CellResult:
    return CellResult(cell, status="skipped", reason=why)


def plan(models: tuple[str, ...], modes: tuple[str, ...], counts: list[int]) -> list[tuple[str, Any]]:
    """Steps by priority: training (the fidelity model first, with its plain DDP references), then
    inference. Each step is ("one_gpu", cell) | ("group", [cells]) | ("plain", gpus)."""
    steps: list[tuple[str, Any]] = []
    for mode in (m for m in ("train", "infer") if m in modes):
        for model in sorted(models, key=lambda m: m != FIDELITY_MODEL):
            steps += [("one_gpu", Cell(model, mode, "eager", "amp-bf16", 8, 1))] if 1 in counts else []
            steps += [("group", [Cell(model, mode, "eager", "amp-bf16", 8, n)]) for n in counts if n > 1]
            if model == FIDELITY_MODEL and mode == "train":
                steps += [("plain", n) for n in counts if n > 1]
    return steps


def run(out: Path, budget_s: float, models: tuple[str, ...], modes: tuple[str, ...]) -> int:
    out.mkdir(parents=True, exist_ok=True)
    os.environ.update(MULTICAST_OFF)  # every process this starts inherits it, 1-GPU cells included
    budget = Budget(budget_s)
    caps = probe_capabilities()
    write_json(out / "environment.json", fingerprint.collect())
    counts = [n for n in (1, 2, 4) if n <= max(caps.gpu_count, 1)]
    sweeps = nccl_sweeps(sorted({n for n in (caps.gpu_count, 2) if 2 <= n <= caps.gpu_count}, reverse=True), budget)
    write_json(out / "nccl_sweep.json", sweeps)
    results: list[CellResult] = []
    plain: list[dict[str, Any]] = []
    baselines: dict[str, CellResult] = {}
    for kind, what in plan(models, modes, counts):
        if kind == "plain":
            plain.append(plain_ddp(what, "bf16") if budget.allows(kind) else {"gpus": what, "skipped": "time budget"})
        elif not budget.allows(kind):
            results += [skipped(c, "time budget of the multi-GPU check") for c in ([what] if kind == "one_gpu" else what)]
        elif kind == "one_gpu":
            results.append(launch(what, OPTIONS))
            baselines[what.id] = results[-1]
        else:
            results += run_group(what, OPTIONS, baselines=baselines, caps=caps)
        write_json(out / "cells.json", [r.to_dict() for r in results])
        write_json(out / "plain_ddp.json", plain)
    print_table(sweeps, results, plain)
    return 0


def print_table(sweeps: list[dict[str, Any]], results: list[CellResult], plain: list[dict[str, Any]]) -> None:
    print("\nNCCL sweep")
    for s in sweeps:
        print(f"  {s['world_size']} GPUs: {s['status']}: {s['detail']}")
    print(f"\n{'cell':56} {'status':8} {'img/s':>8} {'eff':>6} {'slow':>5} {'ar wait':>8}")
    suite = {}
    for r in results:
        d = r.config.get("distributed") or {}
        eff = f"{d['scaling_efficiency']:.2f}" if d.get("scaling_efficiency") else "-"
        wait = f"{d['allreduce_wait_share']:.0%}" if d.get("allreduce_wait_share") is not None else "-"
        rate = f"{r.throughput_ips:.1f}" if r.throughput_ips else "-"
        print(f"{r.cell.id:56} {r.status:8} {rate:>8} {eff:>6} {str(d.get('slowest_rank', '-')):>5} {wait:>8}"
              + ("" if r.status == "ok" else f"  {(r.reason or '')[:80]}"))
        if r.cell.model == FIDELITY_MODEL and r.cell.mode == "train" and r.throughput_ips:
            suite[r.cell.gpus] = r.throughput_ips
    print("\nfidelity: suite DDP cell vs plain DDP loop (same machine, same sitting)")
    for p in plain:
        if "throughput_ips" in p and p["gpus"] in suite:
            ratio = suite[p["gpus"]] / p["throughput_ips"]
            print(f"  {FIDELITY_MODEL} bf16 {p['gpus']}x8: suite {suite[p['gpus']]:.1f}, plain {p['throughput_ips']:.1f} "
                  f"img/s, suite/plain {ratio:.3f} ({'within' if abs(ratio - 1) <= 0.05 else 'OUTSIDE'} 5 %)")
        else:
            print(f"  {p['gpus']} GPUs: {p.get('skipped') or p.get('error', 'no suite cell')[-300:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "multi_gpu_out"))
    parser.add_argument("--budget-s", type=float, default=500.0, help="start no step after this many seconds minus its estimate (default 500)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, default: %(default)s")
    parser.add_argument("--modes", default="train,infer", help="train, infer or both (default)")
    args = parser.parse_args(argv)
    models, modes = tuple(args.models.split(",")), tuple(args.modes.split(","))
    bad = [m for m in modes if m not in ("train", "infer")]
    if bad:
        parser.error(f"unknown mode {bad[0]!r}; valid: train, infer")
    return run(Path(args.out), args.budget_s, models, modes)


if __name__ == "__main__":
    sys.exit(main())
