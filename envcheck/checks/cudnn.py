"""cuDNN: a real conv forward + backward on each GPU in FP32 and every supported AMP dtype, vs a CPU FP32 reference."""

from __future__ import annotations

from detbench.envcheck.check import register_check
from detbench.envcheck.probe import native_bf16_supported
from detbench.envcheck.result import Outcome, failed, passed

# Relative L2 error allowed against the CPU FP32 reference: FP32 may run as TF32 (10-bit mantissa),
# fp16 has 10 mantissa bits, bf16 only 7.
TOLERANCE = {"fp32": 5e-3, "fp16": 1e-2, "bf16": 4e-2}


def _relative_error(value, reference) -> float:
    return float((value.float() - reference).norm() / reference.norm().clamp_min(1e-12))


def conv_errors(device: str, dtype_name: str) -> dict[str, float]:
    """Max relative error of output, input grad and weight grad vs a CPU FP32 reference."""
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: N812, PLC0415

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 16, 32, 32, generator=gen)
    w = torch.randn(32, 16, 3, 3, generator=gen) * 0.1
    grad_out = torch.randn(8, 32, 32, 32, generator=gen)

    def forward_backward(dev: str, autocast_dtype):
        # detach: on the CPU .to() returns the same tensor, which must stay a leaf for the next call
        xi = x.to(dev).detach().requires_grad_(True)
        wi = w.to(dev).detach().requires_grad_(True)
        if autocast_dtype is None:
            y = F.conv2d(xi, wi, padding=1)
        else:
            with torch.autocast("cuda", dtype=autocast_dtype):
                y = F.conv2d(xi, wi, padding=1)
        y.backward(grad_out.to(dev).to(y.dtype))
        assert xi.grad is not None and wi.grad is not None  # backward() just filled them
        return y.detach().float().cpu(), xi.grad.float().cpu(), wi.grad.float().cpu()

    reference = forward_backward("cpu", None)
    autocast = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    got = forward_backward(device, autocast)
    names = ("output", "grad_input", "grad_weight")
    return {n: _relative_error(g, r) for n, g, r in zip(names, got, reference)}


@register_check("cudnn", "cuDNN conv fwd+bwd (FP32 and AMP)", needs_gpu=True)
def check_cudnn(ctx) -> Outcome:
    import torch  # noqa: PLC0415

    if not torch.backends.cudnn.is_available():
        return failed("cuDNN is not available to torch", "install a torch CUDA wheel (it bundles cuDNN); "
                      "do not put an older libcudnn first on LD_LIBRARY_PATH")
    version = torch.backends.cudnn.version()
    dtypes = ["fp32", "fp16"] + (["bf16"] if native_bf16_supported() else [])
    if ctx.options.amp and ctx.options.amp not in dtypes:
        return failed(f"cuDNN {version}; the job wants {ctx.options.amp} autocast, which this GPU does not support",
                      "use --amp fp16 (GradScaler) on this GPU, or run on Ampere or newer for bf16",
                      cudnn=version, amp_verified=[])
    errors: dict[str, dict[str, float]] = {}
    bad, bad_dtypes = [], set()
    for index in range(torch.cuda.device_count()):
        for dtype in dtypes:
            err = conv_errors(f"cuda:{index}", dtype)
            errors[f"cuda:{index}/{dtype}"] = {k: float(f"{v:.3g}") for k, v in err.items()}
            if max(err.values()) > TOLERANCE[dtype]:
                bad.append(f"cuda:{index} {dtype} rel. error {max(err.values()):.2e} > {TOLERANCE[dtype]:.0e}")
                bad_dtypes.add(dtype)
    amp_verified = [d for d in dtypes if d != "fp32" and d not in bad_dtypes]
    measured = {"cudnn": version, "dtypes": dtypes, "relative_error": errors, "tolerance": TOLERANCE,
                "amp_verified": amp_verified}
    if bad:
        return failed(f"cuDNN {version} conv results disagree with the CPU reference: {'; '.join(bad)}",
                      "a wrong-results GPU or library: run `nvidia-smi -q -d ECC`, reinstall torch, and try "
                      "torch.backends.cudnn.enabled=False to confirm", **measured)
    worst = max(max(v.values()) for v in errors.values())
    return passed(f"cuDNN {version}: conv fwd+bwd OK in {', '.join(dtypes)} (max rel. error {worst:.1e})", **measured)


