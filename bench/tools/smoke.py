"""Smoke-check registered models on this machine: build, calibrate, count FLOPs, eval forward fp32 and bf16.

    detbench smoke [--models a,b] [--batch-size 2] [--json out.json]   (python -m detbench.bench.tools.smoke)

Not a benchmark: the forward time is a rough median for orientation; use ``pytest bench/`` for numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

from detbench.bench.measure.flops import count_flops
from detbench.bench.models.postprocess import calibrate_postprocess
from detbench.bench.models.registry import MissingExtraError, configure_size, get_model, list_models

ROUGH_REPEATS = 5
STABLE_WITHIN = 0.1  # warm up until two consecutive forwards differ by less than 10%
MAX_WARMUP = 20


def rough_forward_ms(forward: Callable[[], Any], device: torch.device) -> float:
    """Median of a few forwards after warming up until two consecutive ones agree within STABLE_WITHIN."""

    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        forward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - start) * 1e3

    previous = once()
    for _ in range(MAX_WARMUP):
        current = once()
        if abs(current - previous) <= STABLE_WITHIN * previous:
            break
        previous = current
    return statistics.median(once() for _ in range(ROUGH_REPEATS))


def check_model(name: str, batch_size: int, device: torch.device, seed: int = 0) -> dict[str, Any]:
    """One model's smoke check at its native size; raises on failure."""
    spec = get_model(name)
    torch.manual_seed(seed)
    model = spec.build(None)
    size = configure_size(model, spec, None)
    model.to(device).eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    inputs = spec.make_inputs(batch_size, size, device, generator)
    row: dict[str, Any] = {"model": name, "image_size": list(size), "batch_size": batch_size}
    load = calibrate_postprocess(model, spec, inputs)
    row["postprocess"] = load.to_dict() if load else None
    row["flops"] = count_flops(model, inputs, "infer").to_dict()
    for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        def forward(dtype: torch.dtype | None = dtype) -> Any:
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                return model(inputs)

        outputs = forward()
        if spec.count_detections is not None:
            row[f"detections_per_image_{precision}"] = spec.count_detections(outputs)
        row[f"forward_ms_{precision}"] = rough_forward_ms(forward, device)
    return row


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detbench smoke", description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated names (default: all registered)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--json", help="write the rows to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    names = args.models.split(",") if args.models else list_models()
    header = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    rows, failures = [], 0
    for name in names:
        try:
            rows.append(check_model(name, args.batch_size, device))
        except MissingExtraError as exc:
            rows.append({"model": name, "skipped": str(exc)})
        except Exception as exc:  # noqa: BLE001 - recorded with its traceback, and the exit status says so
            failures += 1
            rows.append({"model": name, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
        print(json.dumps(rows[-1], default=str), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"environment": header, "rows": rows}, handle, indent=1, default=str)
    print(f"\n{header}")
    print(f"{'model':34} {'cand/img':>9} {'det/img':>8} {'GFLOP/img':>10} {'fp32 ms':>8} {'bf16 ms':>8}")
    for row in rows:
        if "error" in row or "skipped" in row:
            print(f"{row['model']:34} {row.get('error') or row.get('skipped')}")
            continue
        load = row["postprocess"]
        cand = f"{load['candidates_per_image']['mean']:.0f}" if load else "-"
        dets = f"{load['detections_per_image']['mean']:.0f}" if load else "-"
        print(f"{row['model']:34} {cand:>9} {dets:>8} {row['flops']['flops_per_image'] / 1e9:>10.1f} "
              f"{row['forward_ms_fp32']:>8.1f} {row['forward_ms_bf16']:>8.1f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
