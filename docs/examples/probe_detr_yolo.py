"""GPU probe: every optional-extra detector builds on CUDA and runs eager/compiled x fp32/bf16 x infer/train.

Rough timings only (a few iterations after a short warm-up, for the table): the benchmark matrix is the real
measurement. Usage on a GPU machine: PYTHONPATH=. python3 docs/examples/probe_detr_yolo.py OUT.json [SECONDS]
Rows are written as they finish; combinations not started before the time budget ends are listed as skipped.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

import torch

from detbench.bench.measure.flops import count_flops
from detbench.bench.models import get_model

MODELS = ["yolov8n", "deformable_detr_resnet50", "detr_resnet50", "rtdetr_resnet50", "yolo11n", "yolov8s"]
BATCH = 2
TIMED_ITERS = 5
WARMUP_ITERS = 2  # rough probe, not the benchmark's measured warm-up


def combos() -> list[tuple[str, str, str, str]]:
    eager = [(m, mode, prec, "eager") for m in MODELS for mode in ("infer", "train") for prec in ("fp32", "bf16")]
    compiled = [(m, mode, prec, "compiled") for m in MODELS for prec in ("bf16", "fp32") for mode in ("infer", "train")]
    return eager + compiled


def run_one(name: str, mode: str, precision: str, compile_mode: str, device: torch.device) -> dict:
    spec = get_model(name)
    gen = torch.Generator(device=device).manual_seed(0)
    model = spec.build(None).to(device)
    inputs = spec.make_inputs(BATCH, spec.native_size, device, gen)
    targets = spec.make_targets(BATCH, spec.native_size, device, gen)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16")
    row = {"model": name, "mode": mode, "precision": precision, "compile": compile_mode,
           "image_size": list(spec.native_size), "batch_size": BATCH}
    load = None
    if mode == "infer":
        model.eval()
        with autocast:
            load = spec.calibrate(model, inputs, None)
        row["postprocess"] = load.to_dict()
    if compile_mode == "eager" and precision == "fp32":
        # FlopCounterMode fails on DETR's no-grad query-embedding views unless parameters need no grad
        # (infer only; see docs/models_extra.md): freeze them for the count.
        flags = [p.requires_grad for p in model.parameters()]
        if mode == "infer":
            model.requires_grad_(False)
        try:
            flops = count_flops(model, inputs, mode, targets, spec.training_loss)
        finally:
            for param, flag in zip(model.parameters(), flags):
                param.requires_grad_(flag)
        row["flops_per_image"] = flops.flops_per_image
    runnable = torch.compile(model) if compile_mode == "compiled" else model
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        with autocast:
            if mode == "infer":
                with torch.no_grad():
                    return runnable(inputs)
            model.train()
            loss = spec.training_loss(runnable, inputs, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    start = time.perf_counter()
    out = step()
    torch.cuda.synchronize()
    row["first_call_s"] = time.perf_counter() - start
    for _ in range(WARMUP_ITERS):
        out = step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(TIMED_ITERS):
        out = step()
    torch.cuda.synchronize()
    row["ms_per_iter"] = (time.perf_counter() - start) / TIMED_ITERS * 1e3
    if mode == "infer":
        row["detections_per_image"] = spec.count_detections(out)
    else:
        row["loss"] = float(out.detach())
    row["runtime_notes"] = getattr(model, "runtime_notes", {})
    row["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
    row["status"] = "ok"
    return row


def main() -> None:
    out_path = sys.argv[1]
    budget_s = float(sys.argv[2]) if len(sys.argv) > 2 else 270.0
    deadline = time.monotonic() + budget_s
    device = torch.device("cuda")
    import transformers
    import ultralytics

    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
              "transformers": transformers.__version__, "ultralytics": ultralytics.__version__, "rows": []}
    for name, mode, precision, compile_mode in combos():
        if time.monotonic() > deadline:
            report["rows"].append({"model": name, "mode": mode, "precision": precision, "compile": compile_mode,
                                   "status": "skipped", "reason": "probe time budget spent"})
            continue
        torch.cuda.reset_peak_memory_stats()
        try:
            row = run_one(name, mode, precision, compile_mode, device)
        except Exception as exc:  # noqa: BLE001 - a probe row records the failure and the probe goes on
            row = {"model": name, "mode": mode, "precision": precision, "compile": compile_mode, "status": "error",
                   "reason": f"{type(exc).__name__}: {str(exc)[:300]}", "traceback": traceback.format_exc()[-2000:]}
        torch._dynamo.reset()
        torch.cuda.empty_cache()
        report["rows"].append(row)
        with open(out_path, "w") as fh:
            json.dump(report, fh, indent=1)
        dets = row.get("detections_per_image")
        dets_text = "-" if not dets else f"{sum(dets) / len(dets):.1f}"
        print(f"{name:26s} {mode:5s} {precision:4s} {compile_mode:8s} {row['status']:6s} "
              f"{row.get('ms_per_iter', float('nan')):8.1f} ms  first {row.get('first_call_s', float('nan')):6.1f} s  "
              f"dets/img {dets_text:>6}  "
              f"attn {row.get('runtime_notes', {}).get('deformable_attention', '-')}  {row.get('reason', '')[:120]}",
              flush=True)
    with open(out_path, "w") as fh:
        json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
