"""The job's stated needs (--require-gpu, --gpus, --require-nccl, --min-compute-capability, --amp),
checked against what was measured. An unmet requirement fails the preflight (exit 1)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from detbench.envcheck.context import Context
from detbench.envcheck.options import parse_capability
from detbench.envcheck.result import CheckResult


@dataclass
class RequirementResult:
    option: str
    wanted: Any
    measured: Any
    met: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _by_id(results: list[CheckResult], check_id: str) -> CheckResult | None:
    return next((r for r in results if r.id == check_id), None)


def evaluate(ctx: Context, results: list[CheckResult]) -> list[RequirementResult]:
    opts = ctx.options
    out: list[RequirementResult] = []
    if not opts.wants_gpu:
        return out
    reason = ctx.gpu_unavailable_reason()
    count = ctx.device_count
    devices = ctx.gpu_facts().get("devices") or [] if reason is None else []
    if opts.require_gpu:
        out.append(RequirementResult("--require-gpu", True, count, count >= 1,
                                     f"{count} CUDA GPU(s)" if count else (reason or "no CUDA GPU")))
    if opts.gpus:
        out.append(RequirementResult("--gpus", opts.gpus, count, count >= opts.gpus,
                                     f"{count} visible CUDA GPU(s), job needs {opts.gpus}"))
    if opts.min_compute_capability:
        wanted = parse_capability(opts.min_compute_capability)
        caps = [tuple(d["capability"]) for d in devices]
        low = min(caps) if caps else None
        out.append(RequirementResult(
            "--min-compute-capability", opts.min_compute_capability,
            f"{low[0]}.{low[1]}" if low else None, low is not None and low >= wanted,
            f"lowest visible compute capability {low[0]}.{low[1]}" if low else (reason or "no CUDA GPU"),
        ))
    if opts.require_nccl:
        nccl = _by_id(results, "nccl")
        ok = nccl is not None and nccl.status in ("pass", "warn")
        out.append(RequirementResult("--require-nccl", True, nccl.status if nccl else None, ok,
                                     f"nccl check: {nccl.status}: {nccl.detail}" if nccl else "nccl check not run"))
    if opts.amp:
        cudnn = _by_id(results, "cudnn")
        verified = (cudnn.measured.get("amp_verified") or []) if cudnn else []
        supported = count >= 1 and (opts.amp == "fp16" or bool(ctx.gpu_facts().get("bf16_supported")))
        ok = supported and (opts.amp in verified or cudnn is None or cudnn.status == "skip")
        detail = (f"{opts.amp} autocast verified by the cudnn check" if opts.amp in verified
                  else f"{opts.amp} supported by the GPU "
                       f"(not verified: cudnn check {cudnn.status if cudnn else 'absent'})"
                  if ok else reason or f"{opts.amp} not supported or failed on this GPU")
        out.append(RequirementResult("--amp", opts.amp, verified, ok, detail))
    return out
