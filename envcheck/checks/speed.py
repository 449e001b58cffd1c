"""Speed sanity: matmul TFLOP/s and device-to-device copy GB/s against the GPU's datasheet."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from detbench.envcheck import tables
from detbench.envcheck.check import register_check
from detbench.envcheck.probe import native_bf16_supported
from detbench.envcheck.result import Outcome, failed, passed, warned

WARN_FRACTION = 0.5
FAIL_FRACTION = 0.25
MATMUL_N = 8192
FP32_MATMUL_N = 4096
COPY_BYTES = 1024**3
TIMED_REPEATS = 15
WARMUP_LIMIT = 50


def time_cuda(fn: Callable[[], Any]) -> float:
    """Median seconds per call, with CUDA events, after warming up until two timings agree within 5%."""
    import torch  # noqa: PLC0415

    def once() -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    previous = once()
    for _ in range(WARMUP_LIMIT):
        current = once()
        if abs(current - previous) <= 0.05 * previous:
            break
        previous = current
    return statistics.median(once() for _ in range(TIMED_REPEATS))


def matmul_tflops(device: str, precision: str) -> float:
    import torch  # noqa: PLC0415

    n = FP32_MATMUL_N if precision in ("fp32", "tf32") else MATMUL_N
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        seconds = time_cuda(lambda: torch.mm(a, b))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    return 2 * n**3 / seconds / 1e12


def copy_gbs(device: str) -> float:
    """Device-to-device copy bandwidth, counting bytes read plus bytes written."""
    import torch  # noqa: PLC0415

    src = torch.empty(COPY_BYTES, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    seconds = time_cuda(lambda: dst.copy_(src))
    return 2 * COPY_BYTES / seconds / 1e9


def judge(measured: float, peak: float | None) -> tuple[str, float | None]:
    if not peak:
        return "pass", None
    fraction = measured / peak
    return ("fail" if fraction < FAIL_FRACTION else "warn" if fraction < WARN_FRACTION else "pass"), fraction


@register_check("speed", "speed sanity (matmul, copy)", severity="warning", needs_gpu=True, slow=True)
def check_speed(ctx) -> Outcome:
    import torch  # noqa: PLC0415

    half = "bf16" if native_bf16_supported() else "fp16"
    rows, per_device = [], {}
    for index in range(torch.cuda.device_count()):
        device = f"cuda:{index}"
        name = torch.cuda.get_device_name(index)
        spec = tables.gpu_spec(name)
        figures: dict[str, Any] = {"name": name, "reference": spec.name if spec else None}
        for precision in (half, "tf32", "fp32"):
            value = matmul_tflops(device, precision)
            peak = spec.peak_tflops(precision) if spec else None
            status, fraction = judge(value, peak)
            figures[f"matmul_{precision}_tflops"] = round(value, 1)
            figures[f"matmul_{precision}_peak_tflops"] = peak
            rows.append((status, f"{device} {precision} matmul {value:.0f} TFLOP/s"
                         + (f" = {fraction:.0%} of {peak:g}" if fraction is not None else "")))
        gbs = copy_gbs(device)
        peak_gbs = spec.memory_bandwidth_gbs if spec else None
        status, fraction = judge(gbs, peak_gbs)
        figures["copy_gbs"], figures["memory_bandwidth_peak_gbs"] = round(gbs, 1), peak_gbs
        of_peak = f" = {fraction:.0%} of {peak_gbs:g}" if fraction is not None else ""
        rows.append((status, f"{device} copy {gbs:.0f} GB/s{of_peak}"))
        per_device[device] = figures
        torch.cuda.empty_cache()
    statuses = [s for s, _ in rows]
    references = {f["reference"] for f in per_device.values()}
    detail = "; ".join(text for _, text in rows)
    if None in references:
        detail += " (no datasheet reference for this GPU)"
    if "fail" in statuses or "warn" in statuses:
        slow = "; ".join(text for s, text in rows if s != "pass")
        remedy = ("far below the datasheet: check the health check (throttling, power cap, PCIe), other processes "
                  "on the GPU (`nvidia-smi`), and clocks (`nvidia-smi -q -d CLOCK`)")
        return (failed if "fail" in statuses else warned)(f"slow: {slow}", remedy, devices=per_device, summary=detail)
    return passed(detail, devices=per_device)
