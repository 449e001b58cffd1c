"""Parts shared by the optional-extra detector adapters (DETR family, YOLO): pixel batches, score calibration.

Calibration follows detbench.bench.models.postprocess's policy for torchvision detectors: pick the score threshold that
lets a stated number of candidates per image through, then measure what one real post-processing pass produced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from detbench.bench.models.batchnorm import recalibrate_batchnorm
from detbench.bench.models.postprocess import quantile_threshold as postprocess_quantile_threshold


def quantile_threshold(scores_per_image: list[torch.Tensor], target_per_image: int) -> float:
    """The threshold t for which count(score > t) over the batch is closest to ``target_per_image`` x images.

    Scores are pooled over the batch (as detbench.bench.models.postprocess does), so per-image counts vary around the
    target. The threshold is always a value the scores' own dtype holds exactly (one of the scores, or -1 when every
    candidate should pass), since a bf16/fp16 score compared with a float rounds the float to its dtype and a
    "just below the minimum" float would round back onto the minimum (see
    detbench.bench.models.postprocess.quantile_threshold).
    """
    if target_per_image < 1:
        raise ValueError(f"target_candidates_per_image must be >= 1, got {target_per_image}")
    pooled = torch.cat([s.detach().flatten().float().cpu() for s in scores_per_image])
    return postprocess_quantile_threshold(pooled, target_per_image * len(scores_per_image))


def calibrated_pass(adapter: nn.Module, inputs: Any, target_per_image: int, recalibrate_bn: bool,
                    score: Callable[[], tuple[list[torch.Tensor], Callable[[], Any]]],
                    bounds: tuple[float, float] | None = None) -> tuple[list[torch.Tensor], float, Any, int]:
    """The adapters' one calibration: BatchNorm statistics from ``inputs`` (optional), then in eval mode without
    gradients ``score()`` gives the candidates' scores per image and the real pass to run, the threshold that lets
    ~``target_per_image`` through (clipped to ``bounds``) goes on ``adapter.score_thresh``, and the pass runs at it.
    Returns (scores, threshold, the pass's outputs, BatchNorm layers recalibrated); the training flag is restored."""
    bn_layers = recalibrate_batchnorm(adapter, inputs) if recalibrate_bn else 0
    was_training = adapter.training
    adapter.eval()
    try:
        with torch.no_grad():
            scores, real_pass = score()
            threshold = quantile_threshold(scores, target_per_image)
            if bounds is not None:
                threshold = min(max(threshold, bounds[0]), bounds[1])
            setattr(adapter, "score_thresh", threshold)  # noqa: B010 - every adapter has one; nn.Module does not say so
            outputs = real_pass()
    finally:
        adapter.train(was_training)
    return scores, threshold, outputs, bn_layers


def counts_above(scores_per_image: list[torch.Tensor], threshold: float) -> list[int]:
    """How many scores of each image are strictly above ``threshold``."""
    return [int((s.detach().float() > threshold).sum()) for s in scores_per_image]


def target_reached(counts: list[int], target_per_image: int, tolerance: float) -> bool:
    """detbench.bench.models.postprocess's criterion: the measured mean per image is within ``tolerance`` of the
    target."""
    return abs(sum(counts) / len(counts) - target_per_image) <= tolerance * target_per_image


def make_pixel_batch(
    batch_size: int, image_size: tuple[int, int], device: torch.device, generator: torch.Generator
) -> torch.Tensor:
    """[B, 3, H, W] uniform noise in [0, 1] (the same draw as torchvision_detection.make_images)."""
    height, width = image_size
    images = torch.rand(batch_size, 3, height, width, generator=generator, device=generator.device)
    return images.to(device)
