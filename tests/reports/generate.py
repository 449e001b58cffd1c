"""Synthetic but realistic detbench results, written in the real file formats, for the reports tests.

Run ``python -m tests.reports.generate tests/data`` to refresh the small fixture files.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
from pathlib import Path

from detbench.bench.core.schema import Cell, CellResult, LatencyStats

# (bs1 eager fp32 infer images/s on the synthetic GPU, GFLOPs per image, base memory GiB, GiB per image)
MODELS = {
    "fasterrcnn_resnet50_fpn": (24.0, 134.0, 1.2, 1.1),
    "retinanet_resnet50_fpn": (21.0, 151.0, 1.1, 1.3),
    "fcos_resnet50_fpn": (23.0, 128.0, 1.0, 1.2),
    "ssdlite320_mobilenet_v3_large": (310.0, 0.6, 0.3, 0.05),
}
PRECISION_GAIN = {"fp32": 1.0, "amp-fp16": 1.85, "amp-bf16": 1.75}
COMPILE_GAIN = {"eager": 1.0, "compiled": 1.3}
ENVIRONMENT = {
    "gpu": "NVIDIA H100 80GB HBM3",
    "gpu_count": 1,
    "driver": "580.65.06",
    "driver_cuda": "13.0",
    "torch": "2.11.0+cu130",
    "torchvision": "0.26.0",
    "cuda": "13.0",
    "cudnn": "91300",
    "nccl": "2.27.7",
    "container": True,
    "image": "detbench:cu130",
    "hostname": "gpu-node-1",
    "python": "3.12.3",
    "platform": "Linux-6.8.0-x86_64",
}
MEMORY_GIB = 80.0


def make_results(
    models: list[str] | None = None,
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16),
    modes: tuple[str, ...] = ("infer",),
    gpu_counts: tuple[int, ...] = (1,),
    speed: float = 1.0,
    seed: int = 0,
    environment: dict | None = None,
    series_points: int = 40,
    noise: float = 0.02,
    iterations: int = 50,
) -> list[CellResult]:
    """A matrix of CellResults; big batches OOM, one cell errors, fp16 training is skipped."""
    rng = random.Random(seed)
    env = dict(ENVIRONMENT, **(environment or {}))
    results = []
    for model in models or list(MODELS):
        ips1, gflops, mem0, mem_per = MODELS.get(model, (30.0, 100.0, 1.0, 1.0))
        for mode in modes:
            for gpus in gpu_counts:
                for compile_mode in ("eager", "compiled"):
                    for precision in ("fp32", "amp-fp16", "amp-bf16"):
                        for bs in batch_sizes:
                            cell = Cell(model, mode, compile_mode, precision, bs, gpus)
                            results.append(
                                _result(
                                    cell, rng, env, ips1, gflops, mem0, mem_per, speed, series_points, noise, iterations
                                )
                            )
    return results


def _result(cell, rng, env, ips1, gflops, mem0, mem_per, speed, series_points, noise, iterations) -> CellResult:
    env = dict(env, gpu_count=cell.gpus)
    mode_factor = 1.0 if cell.mode == "infer" else 0.33
    mem_gib = (mem0 + mem_per * cell.batch_size * (3.0 if cell.mode == "train" else 1.0)) * (
        0.6 if cell.precision != "fp32" else 1.0
    )
    if mem_gib > MEMORY_GIB:
        return CellResult(
            cell,
            status="oom",
            reason=f"CUDA out of memory. Tried to allocate {mem_gib - MEMORY_GIB + 2:.2f} GiB",
            memory_requested_bytes=int(mem_gib * 2**30),
            environment=env,
            device="cuda:0",
        )
    if cell.mode == "train" and cell.precision == "amp-fp16" and cell.compiled:
        return CellResult(
            cell, status="skipped", reason="fp16 training needs a GradScaler; not in this profile", environment=env
        )
    if (
        cell.batch_size == 2
        and cell.precision == "amp-bf16"
        and cell.compiled
        and cell.gpus == 1
        and cell.model.startswith("fcos")
    ):
        return CellResult(
            cell,
            status="error",
            reason="torch._dynamo.exc.Unsupported: data-dependent branching",
            environment=env,
            device="cuda:0",
        )
    batch_eff = cell.batch_size / (1.0 + 0.35 * (cell.batch_size - 1) ** 0.85)
    scale_eff = cell.gpus * (0.92 ** (cell.gpus - 1))
    compile_gain = COMPILE_GAIN["compiled" if cell.compiled else "eager"]
    ips = ips1 * speed * mode_factor * PRECISION_GAIN[cell.precision] * compile_gain * batch_eff * scale_eff
    iter_ms = 1000.0 * cell.batch_size / ips
    times = sorted(rng.gauss(iter_ms, iter_ms * noise) for _ in range(iterations))
    times = [round(max(t, iter_ms * 0.5), 3) for t in times]
    q = statistics.quantiles(times, n=100)
    median = statistics.median(times)
    mean = statistics.fmean(times)
    sd = statistics.stdev(times)
    latency = LatencyStats(
        n=len(times),
        median_ms=median,
        mean_ms=mean,
        min_ms=times[0],
        max_ms=times[-1],
        p90_ms=q[89],
        p99_ms=q[98],
        iqr_ms=q[74] - q[24],
        stddev_ms=sd,
        cov=sd / mean,
    )
    flops = gflops * 1e9 * (3.0 if cell.mode == "train" else 1.0)
    achieved = flops * 1000.0 * cell.batch_size / median / 1e12
    peak = 989.0 if cell.precision != "fp32" else 67.0
    first_call = (45.0 + rng.random() * 20) if cell.compiled else 1.5 + rng.random()
    compile_s = first_call - median / 1000.0
    eager_ms = iter_ms * compile_gain
    break_even = compile_s / ((eager_ms - iter_ms) / 1000.0) if cell.compiled else None
    power = 350.0 + 250.0 * min(1.0, cell.batch_size / 8)
    telemetry = _telemetry(rng, power, ips * 1.0, mem_gib, series_points, cell.gpus)
    return CellResult(
        cell,
        status="ok",
        times_ms=times,
        latency=latency,
        throughput_ips=1000.0 * cell.batch_size / median,
        throughput_ips_p10=1000.0 * cell.batch_size / q[89],
        throughput_ips_p90=1000.0 * cell.batch_size / q[9],
        timer="cuda-events",
        first_call_s=first_call,
        compile_s=compile_s,
        warmup_iterations=rng.randint(5, 30),
        warmup_s=rng.random() * 5,
        warmup_converged=True,
        graph_breaks=(2 if cell.model.startswith(("faster", "retina")) else 0) if cell.compiled else None,
        break_even_iterations=break_even,
        peak_memory_bytes=int(mem_gib * 2**30),
        flops_per_image=flops,
        flop_convention="torch.utils.flop_counter: multiply-add = 2 FLOPs",
        achieved_tflops=achieved,
        peak_tflops=peak,
        mfu=achieved / peak,
        detections_per_image={"mean": 87.0 + rng.random() * 10, "min": 12.0, "max": 100.0},
        postprocess={"score_thresh": 0.05, "nms_thresh": 0.5, "detections_per_img": 100},
        device="cuda:0",
        telemetry=telemetry,
        environment=env,
        config={"profile": "synthetic", "min_time_s": 2.0},
    )


def _telemetry(rng, power, ips, mem_gib, points, gpus) -> dict:
    devices = []
    for index in range(gpus):
        t = [i * 0.1 for i in range(points)]
        util = [min(100.0, rng.gauss(92, 4)) for _ in t]
        pw = [rng.gauss(power, 15) for _ in t]
        clock = [rng.gauss(1980, 20) for _ in t]
        temp = [50 + 20 * (i / max(points, 1)) + rng.random() for i in range(points)]
        mem = [mem_gib * 2**30 * (0.9 + 0.1 * min(1, i / 5)) for i in range(points)]
        t, util, pw, clock, temp = ([round(v, 2) for v in xs] for xs in (t, util, pw, clock, temp))
        series = {
            "t_s": t,
            "gpu_util_pct": util,
            "power_w": pw,
            "sm_clock_mhz": clock,
            "temperature_c": temp,
            "memory_used_bytes": mem,
        }

        def stats(values):
            ordered = sorted(values)
            return {
                "mean": statistics.fmean(values),
                "p95": ordered[int(0.95 * (len(ordered) - 1))],
                "max": ordered[-1],
            }

        devices.append(
            {
                "name": f"NVIDIA H100 80GB HBM3 #{index}",
                "metrics": {k: stats(v) for k, v in series.items() if k != "t_s"},
                "energy_j": statistics.fmean(pw) * t[-1] if points else 0.0,
                "throttle_reasons": [],
                "throttled": False,
                "series": series,
            }
        )
    mean_power = power * gpus
    return {
        "available": True,
        "reason": None,
        "rate_hz_achieved": 10.0,
        "samples": points,
        "devices": devices,
        "energy_per_image_j": mean_power / ips,
        "images_per_s_per_w": ips / mean_power,
        "mean_power_w": mean_power,
        "throttled": False,
    }


def benchmark_json(
    results: list[CellResult], machine_node: str = "gpu-node-1", planned_only: tuple[str, ...] = ()
) -> dict:
    """pytest-benchmark's JSON layout as ``pytest bench/ --benchmark-json`` writes it: ok cells in
    ``benchmarks[i].extra_info["detbench"]``, the others in the top-level ``detbench.not_measured``;
    ``planned_only`` adds cell ids that were planned but have no result (an interrupted run)."""
    benchmarks = []
    for r in (r for r in results if r.status == "ok"):
        times_s = [t / 1000.0 for t in r.times_ms] or [0.0]
        ordered = sorted(times_s)
        n = len(ordered)
        mean = sum(ordered) / n
        q1, q3 = ordered[n // 4], ordered[(3 * n) // 4]
        stats = {
            "min": ordered[0],
            "max": ordered[-1],
            "mean": mean,
            "stddev": statistics.stdev(ordered) if n > 1 else 0.0,
            "rounds": n,
            "median": ordered[n // 2],
            "iqr": q3 - q1,
            "q1": q1,
            "q3": q3,
            "iqr_outliers": 0,
            "stddev_outliers": 0,
            "outliers": "0;0",
            "ld15iqr": ordered[0],
            "hd15iqr": ordered[-1],
            "ops": 1.0 / mean if mean else 0.0,
            "total": sum(ordered),
            "iterations": 1,
        }
        benchmarks.append(
            {
                "group": r.cell.model,
                "name": f"test_cell[{r.cell.id}]",
                "fullname": f"bench/test_matrix.py::test_cell[{r.cell.id}]",
                "params": {"cell": r.cell.id},
                "param": r.cell.id,
                "extra_info": {"detbench": r.to_dict(), "detbench_status": r.status},
                "options": {
                    "disable_gc": False,
                    "timer": "perf_counter",
                    "min_rounds": 5,
                    "max_time": 1.0,
                    "min_time": 5e-06,
                    "warmup": False,
                },
                "stats": stats,
            }
        )
    return {
        "machine_info": {
            "node": machine_node,
            "processor": "x86_64",
            "machine": "x86_64",
            "python_implementation": "CPython",
            "python_version": "3.12.3",
            "system": "Linux",
            "release": "6.8.0",
            "cpu": {"brand_raw": "AMD EPYC", "count": 16},
            "detbench_environment": dict(results[0].environment or {}) if results else {},
        },
        "commit_info": {
            "id": "0" * 40,
            "time": "2026-11-24T10:00:00+00:00",
            "dirty": False,
            "project": "detbench",
            "branch": "main",
        },
        "benchmarks": benchmarks,
        "datetime": "2026-11-24T10:30:00.000000+00:00",
        "version": "5.3.1",
        # as bench/plugin/plugin.py's pytest_benchmark_update_json: cells without stats are kept beside "benchmarks"
        "detbench": {
            "schema": "detbench.cell",
            "schema_version": 1,
            "profile": "synthetic",
            "options": {},
            "journal": "run.journal.jsonl",
            "cell_ids": [r.cell.id for r in results] + list(planned_only),
            "not_measured": [r.to_dict() for r in results if r.status != "ok"],
        },
    }


def write_benchmark_json(path: Path, results: list[CellResult], **kwargs) -> Path:
    path = Path(path)
    path.write_text(json.dumps(benchmark_json(results, **kwargs)), encoding="utf-8")
    return path


def write_journal(path: Path, results: list[CellResult]) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in results), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    out = Path((argv or sys.argv[1:] or ["tests/data"])[0])
    out.mkdir(parents=True, exist_ok=True)
    common = dict(
        models=["retinanet_resnet50_fpn", "ssdlite320_mobilenet_v3_large"],
        batch_sizes=(1, 8, 64),
        modes=("infer", "train"),
        series_points=10,
        iterations=15,
    )
    write_benchmark_json(out / "synthetic_run_cu130.json", make_results(seed=1, **common))
    write_benchmark_json(
        out / "synthetic_run_cu128.json",
        make_results(
            seed=2, speed=0.9, environment={"torch": "2.9.1+cu128", "cuda": "12.8", "image": "detbench:cu128"}, **common
        ),
    )
    write_journal(out / "synthetic_run_interrupted.journal.jsonl", make_results(seed=3, **common)[:20])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
