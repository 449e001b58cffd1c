"""Measure what the telemetry sampler costs a GPU workload: ``python -m detbench.bench.tools.telemetry_overhead``.

Runs fixed GPU workloads (a loop of large bf16 matmuls; a torchvision resnet50 forward at batch 64 under
bf16 autocast) in blocks timed with CUDA events, alternating blocks with and without a
:class:`~detbench.bench.measure.telemetry.TelemetryTracker` (AB BA AB ... so slow drifts cancel), and reports the median
throughput of each, the difference in %, the sampler's achieved rate, power, energy per iteration and
the latency of each NVML query. Writes JSON (``--out``) and prints a short table last.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from detbench.bench.core.options import GPU_ROUNDS
from detbench.bench.measure.telemetry import DeviceSeries, TelemetryTracker, build_readers
from detbench.envcheck import nvml

WORKLOADS = ("matmul", "resnet50", "retinanet")


def make_workload(name: str, device: Any) -> tuple[Callable[[], None], int]:
    """(one iteration, images per iteration). Weights are random: nothing is downloaded."""
    import torch  # noqa: PLC0415

    if name == "matmul":
        a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
        b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
        out = torch.empty_like(a)

        def step() -> None:
            for _ in range(4):
                torch.matmul(a, b, out=out)

        return step, 0
    if name == "resnet50":
        import torchvision  # noqa: PLC0415

        model = torchvision.models.resnet50(weights=None).to(device).eval().to(memory_format=torch.channels_last)
        images = torch.randn(64, 3, 224, 224, device=device).to(memory_format=torch.channels_last)

        def step() -> None:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                model(images)

        return step, 64
    if name == "retinanet":
        # A detection cell as the matrix runs it: retinanet_resnet50_fpn, bs8, 800x1333, bf16 autocast, with the
        # calibrated post-processing load (host-side NMS work included, so sampler/GIL contention would show).
        from detbench.bench.models import get_model  # noqa: PLC0415
        from detbench.bench.models.postprocess import calibrate_postprocess  # noqa: PLC0415
        from detbench.bench.models.registry import configure_size  # noqa: PLC0415

        spec = get_model("retinanet_resnet50_fpn")
        torch.manual_seed(0)
        detector = spec.build(None)
        size = configure_size(detector, spec, None)
        detector.to(device).eval()
        generator = torch.Generator(device=device).manual_seed(0)
        batch = spec.make_inputs(8, size, device, generator)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            calibrate_postprocess(detector, spec, batch)

        def step() -> None:
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                detector(batch)

        return step, 8
    raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")


def time_block(step: Callable[[], None], iterations: int) -> float:
    """Seconds for ``iterations`` steps, by CUDA events."""
    import torch  # noqa: PLC0415

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iterations):
        step()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000.0


def calibrate(step: Callable[[], None], block_s: float, max_warmup_s: float = 30.0) -> tuple[int, int]:
    """Warm up until two consecutive blocks agree within 2%; return (iterations per block, warm-up blocks)."""
    iterations, blocks, previous = 1, 0, None
    deadline = time.monotonic() + max_warmup_s
    while time.monotonic() < deadline:
        seconds = time_block(step, iterations)
        blocks += 1
        if seconds < block_s / 4:  # grow the block until it is long enough to compare
            iterations = max(iterations + 1, int(iterations * block_s / max(seconds, 1e-6)))
            previous = None
            continue
        if previous is not None and abs(seconds - previous) / previous < 0.02:
            break
        previous = seconds
    per_iteration = seconds / iterations
    return max(1, round(block_s / per_iteration)), blocks


def query_latencies_us(cuda_index: int, repeats: int = 200) -> dict[str, float]:
    """Median latency of each NVML query the sampler makes, in microseconds."""
    nv = nvml.load()
    mapped = {d.cuda_index: d for d in nvml.map_cuda_to_nvml(nvml.torch_device_uuids())}
    if nv is None or cuda_index not in mapped:
        return {}
    series = DeviceSeries(device=mapped[cuda_index], name="")
    build_readers(nv, series)
    out = {}
    for reader in series.readers + series.pcie_readers:
        n = repeats if reader not in series.pcie_readers else max(5, repeats // 20)
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            reader.fn(*reader.args)
            samples.append(time.perf_counter() - t)
        out[reader.query] = round(statistics.median(samples) * 1e6, 2)
    return out


def ci95(values: list[float]) -> tuple[float, float]:
    """Normal-approximation 95% interval of the mean (t ~ 2 for the round counts used here)."""
    if len(values) < 2:
        return (math.nan, math.nan) if not values else (values[0], values[0])
    half = 2.0 * statistics.stdev(values) / math.sqrt(len(values))
    mean = statistics.mean(values)
    return mean - half, mean + half


def verdict(paired_pct: list[float], limit_pct: float = 1.0) -> str:
    """'under 1%' when the whole interval is above -limit, 'over 1%' when below it, else 'inconclusive'."""
    low, high = ci95(paired_pct)
    if low > -limit_pct:
        return f"under {limit_pct:g}%"
    if high < -limit_pct:
        return f"over {limit_pct:g}%"
    return "inconclusive (noise wider than the limit: add --rounds)"


def measure(name: str, rounds: int, block_s: float, rate_hz: float, cuda_index: int,
            pcie: bool = True) -> dict[str, Any]:
    import torch  # noqa: PLC0415

    device = torch.device("cuda", cuda_index)
    step, images_per_iteration = make_workload(name, device)
    iterations, warmup_blocks = calibrate(step, block_s)
    off_ips: list[float] = []
    on_ips: list[float] = []
    paired_pct: list[float] = []
    summaries: list[dict[str, Any]] = []
    for r in range(rounds):
        pair: dict[bool, float] = {}
        for with_tracker in ((False, True) if r % 2 == 0 else (True, False)):
            if with_tracker:
                with TelemetryTracker([cuda_index], rate_hz=rate_hz, pcie=pcie) as tracker:
                    seconds = time_block(step, iterations)
                summaries.append(tracker.summary(images=images_per_iteration * iterations) or {})
            else:
                seconds = time_block(step, iterations)
            pair[with_tracker] = iterations / seconds
        off_ips.append(pair[False])
        on_ips.append(pair[True])
        paired_pct.append(100.0 * (pair[True] - pair[False]) / pair[False])
    off, on = statistics.median(off_ips), statistics.median(on_ips)
    energy = [s["energy_j"] / iterations for s in summaries if s.get("energy_j") is not None]

    def med(key: str) -> float | None:
        values = [s[key] for s in summaries if s.get(key) is not None]
        return round(statistics.median(values), 4) if values else None

    devices = [d for s in summaries for d in s.get("devices", [])]
    return {
        "workload": name,
        "iterations_per_block": iterations,
        "images_per_iteration": images_per_iteration,
        "warmup_blocks": warmup_blocks,
        "rounds": rounds,
        "iterations_per_s_off": [round(v, 4) for v in off_ips],
        "iterations_per_s_on": [round(v, 4) for v in on_ips],
        "median_iterations_per_s_off": round(off, 4),
        "median_iterations_per_s_on": round(on, 4),
        "throughput_change_pct": round(100.0 * (on - off) / off, 3),
        "paired_change_pct_median": round(statistics.median(paired_pct), 3),
        "paired_change_pct_mean": round(statistics.mean(paired_pct), 3),
        "paired_change_pct_ci95": [round(v, 3) for v in ci95(paired_pct)],
        "verdict": verdict(paired_pct),
        "off_spread_pct": round(100.0 * (max(off_ips) - min(off_ips)) / off, 3),
        "rate_hz_achieved_median": med("rate_hz_achieved"),
        "pcie_rate_hz_achieved_median": med("pcie_rate_hz_achieved"),
        "samples_per_block_median": med("samples"),
        "sampler_busy_fraction_median": med("sampler_busy_fraction"),
        "sampler_tick_ms_median": med("sampler_tick_ms"),
        "pcie_busy_fraction_median": med("pcie_busy_fraction"),
        "sampler_cpu_fraction_median": med("sampler_cpu_fraction"),
        "mean_power_w_median": med("mean_power_w"),
        "energy_per_iteration_j_median": round(statistics.median(energy), 4) if energy else None,
        "energy_source": sorted({d["energy_source"] for d in devices if d.get("energy_source")}),
        "throttle_reasons_seen": sorted({r for d in devices for r in d.get("throttle_reasons", [])}),
        "last_summary": summaries[-1] if summaries else None,
    }


def environment(cuda_index: int) -> dict[str, Any]:
    import torch  # noqa: PLC0415

    return {
        "gpu": torch.cuda.get_device_name(cuda_index),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "driver": nvml.driver_version(),
        "nvml_reason": nvml.unavailable_reason(),
        "mapped_devices": [
            {"cuda_index": d.cuda_index, "nvml_index": d.nvml_index, "uuid": d.uuid}
            for d in nvml.map_cuda_to_nvml(nvml.torch_device_uuids())
        ],
        "python": sys.version.split()[0],
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m detbench.bench.tools.telemetry_overhead",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=WORKLOADS, action="append", help="repeatable; default: all")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"AB pairs per workload (default: the matrix's GPU rounds, {GPU_ROUNDS.rounds})")
    parser.add_argument("--block-s", type=float, default=None,
                        help=f"seconds per timed block (default: the matrix's GPU block, {GPU_ROUNDS.block_s:g})")
    parser.add_argument("--rate-hz", type=float, default=50.0, help="sampler rate (default 50)")
    parser.add_argument("--no-pcie", action="store_true", help="leave out the PCIe-throughput lane")
    parser.add_argument("--cuda-index", type=int, default=0)
    parser.add_argument("--out", help="write the JSON report here")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.rounds = GPU_ROUNDS.rounds if args.rounds is None else args.rounds
    args.block_s = GPU_ROUNDS.block_s if args.block_s is None else args.block_s
    if args.rounds < 2 or args.block_s <= 0 or args.rate_hz <= 0:
        parser.error("--rounds must be >= 2, --block-s and --rate-hz > 0")
    import torch  # noqa: PLC0415

    if not torch.cuda.is_available():
        print("telemetry_overhead: no CUDA device; nothing to measure", file=sys.stderr)
        return 2
    report = {
        "environment": environment(args.cuda_index),
        "rate_hz_requested": args.rate_hz,
        "pcie_lane": not args.no_pcie,
        "block_s": args.block_s,
        "nvml_query_latency_us_median": query_latencies_us(args.cuda_index),
        "workloads": [measure(w, args.rounds, args.block_s, args.rate_hz, args.cuda_index, pcie=not args.no_pcie)
                      for w in args.workload or WORKLOADS],
    }
    text = json.dumps(report, indent=2, allow_nan=False)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    env = report["environment"]
    print(f"\n{env['gpu']}  torch {env['torch']}  CUDA {env['cuda']}  driver {env['driver']}  "
          f"sampler {args.rate_hz} Hz")
    latencies = report["nvml_query_latency_us_median"]
    print("NVML query latency (us, median): " + ", ".join(f"{k}={v}" for k, v in latencies.items()))
    print(f"{'workload':<10} {'off it/s':>10} {'on it/s':>10} {'change %':>9} {'paired %':>9} {'spread %':>9} "
          f"{'rate Hz':>8} {'busy':>8} {'power W':>8} {'J/iter':>8}  verdict")
    for w in report["workloads"]:
        print(
            f"{w['workload']:<10} {w['median_iterations_per_s_off']:>10.3f} {w['median_iterations_per_s_on']:>10.3f} "
            f"{w['throughput_change_pct']:>9.3f} {w['paired_change_pct_median']:>9.3f} {w['off_spread_pct']:>9.3f} "
            f"{w['rate_hz_achieved_median'] or 0:>8.2f} {w['sampler_busy_fraction_median'] or 0:>8.5f} "
            f"{w['mean_power_w_median'] or 0:>8.1f} {w['energy_per_iteration_j_median'] or 0:>8.3f}  {w['verdict']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
