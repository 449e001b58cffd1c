"""torchvision CUDA ops: nms, batched_nms and roi_align on each GPU agree with the CPU."""

from __future__ import annotations

from detbench.envcheck.check import register_check
from detbench.envcheck.result import Outcome, failed, passed

ROI_ALIGN_ATOL = 1e-4


def compare_ops(device: str) -> list[str]:
    """Mismatches between `device` and the CPU (empty when they agree)."""
    import torch  # noqa: PLC0415
    from torchvision import ops  # noqa: PLC0415

    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=gen) * 200
    wh = torch.rand(200, 2, generator=gen) * 50 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(200, generator=gen)
    labels = torch.randint(0, 5, (200,), generator=gen)
    features = torch.randn(2, 8, 32, 32, generator=gen)
    rois = torch.cat([torch.randint(0, 2, (20, 1), generator=gen).float(), boxes[:20] / 8], dim=1)

    problems = []
    if not torch.equal(ops.nms(boxes, scores, 0.5), ops.nms(boxes.to(device), scores.to(device), 0.5).cpu()):
        problems.append("nms")
    cpu_b = ops.batched_nms(boxes, scores, labels, 0.5)
    gpu_b = ops.batched_nms(boxes.to(device), scores.to(device), labels.to(device), 0.5).cpu()
    if not torch.equal(cpu_b, gpu_b):
        problems.append("batched_nms")
    cpu_r = ops.roi_align(features, rois, output_size=(7, 7), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    gpu_r = ops.roi_align(features.to(device), rois.to(device), output_size=(7, 7), spatial_scale=1.0,
                          sampling_ratio=2, aligned=True).cpu()
    diff = float((cpu_r - gpu_r).abs().max())
    if diff > ROI_ALIGN_ATOL:
        problems.append(f"roi_align (max abs diff {diff:.1e})")
    return problems


@register_check("tv_ops", "torchvision CUDA ops", needs_gpu=True)
def check_tv_ops(ctx) -> Outcome:
    import torch  # noqa: PLC0415

    per_device = {}
    for index in range(torch.cuda.device_count()):
        try:
            per_device[f"cuda:{index}"] = compare_ops(f"cuda:{index}")
        except (RuntimeError, NotImplementedError) as exc:  # "Could not run 'torchvision::nms' with ... 'CUDA' backend"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return failed(f"torchvision CUDA ops do not run on cuda:{index}: {first}",
                          "torchvision was built without CUDA or for another torch: reinstall torch and torchvision "
                          "from the same CUDA index (see the torch_pairing check)", error=first)
    bad = {dev: p for dev, p in per_device.items() if p}
    if bad:
        return failed(f"GPU results differ from CPU: {bad}", "reinstall torchvision matching torch; if it persists, "
                      "suspect the GPU (health check, `nvidia-smi -q -d ECC`)", mismatches=bad)
    return passed(f"nms, batched_nms, roi_align agree with CPU on {len(per_device)} GPU(s)", devices=list(per_device))
