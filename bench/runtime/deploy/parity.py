"""Output parity: a deployed model's detections against eager FP32 of the same weights on the same calibrated input.

Per image, detections are matched one to one (scipy's assignment over IoU, the same label preferred); a matched pair
is compared by box IoU and corner distance, score and label, and mask IoU where both have masks. A detection on one
side only is excused when it sits at the cut (its score within the score tolerance of the lowest score either side
kept: the threshold or the top-k cut, where a last-digit difference decides), and counts as a disagreement otherwise.
"""

from __future__ import annotations

from typing import Any

import torch

from detbench.bench.core.schema import Parity

MATCH_IOU = 0.5  # a pair below this is no match: both count as unmatched
# limits per precision: FP32 differs from eager by reassociated sums only; AMP by a rounding of every layer
TOLERANCE: dict[str, dict[str, float]] = {
    "fp32": {"min_box_iou": 0.99, "max_box_error_px": 0.5, "max_score_diff": 2e-3, "min_label_agreement": 0.99,
             "min_mask_iou": 0.95},
    "amp-fp16": {"min_box_iou": 0.9, "max_box_error_px": 4.0, "max_score_diff": 0.05, "min_label_agreement": 0.95,
                 "min_mask_iou": 0.8},
    "amp-bf16": {"min_box_iou": 0.85, "max_box_error_px": 8.0, "max_score_diff": 0.08, "min_label_agreement": 0.9,
                 "min_mask_iou": 0.75},
}


def compare(reference: Any, outputs: Any, precision: str = "fp32") -> Parity:
    """Parity of ``outputs`` with ``reference`` (lists of per-image dicts with boxes, scores, labels[, masks])."""
    tol = TOLERANCE[precision]
    if not (isinstance(reference, list) and isinstance(outputs, list) and len(reference) == len(outputs)):
        return Parity("disagree", tol, failures=[f"output structure differs: {_shape(reference)} vs {_shape(outputs)}"])
    parity = Parity("agree", dict(tol))
    ious: list[float] = []
    errors: list[float] = []
    score_diffs: list[float] = []
    same_label: list[bool] = []
    mask_ious: list[float] = []
    for ref, out in zip(reference, outputs, strict=True):
        ref, out = _cpu(ref), _cpu(out)
        parity.reference_detections += len(ref["boxes"])
        parity.detections += len(out["boxes"])
        pairs, only = _match(ref, out)
        parity.matched += len(pairs)
        for i, j in pairs:
            ious.append(float(_iou(ref["boxes"][i:i + 1], out["boxes"][j:j + 1])[0, 0]))
            errors.append(float((ref["boxes"][i] - out["boxes"][j]).abs().max()))
            score_diffs.append(abs(float(ref["scores"][i] - out["scores"][j])))
            same_label.append(bool(ref["labels"][i] == out["labels"][j]))
            if "masks" in ref and "masks" in out:
                mask_ious.append(_mask_iou(ref["masks"][i], out["masks"][j]))
        cut = min([float(s.min()) for s in (ref["scores"], out["scores"]) if len(s)], default=0.0)
        for score in only:
            if score - cut <= tol["max_score_diff"]:
                parity.unmatched_excused += 1
            else:
                parity.unmatched += 1
    parity.min_box_iou = min(ious) if ious else None
    parity.max_box_error_px = max(errors) if errors else None
    parity.max_score_diff = max(score_diffs) if score_diffs else None
    parity.label_agreement = sum(same_label) / len(same_label) if same_label else None
    parity.min_mask_iou = min(mask_ious) if mask_ious else None
    parity.failures = _failures(parity, tol)
    parity.verdict = "disagree" if parity.failures else "agree"
    return parity


def _failures(p: Parity, tol: dict[str, float]) -> list[str]:
    found = []
    if p.unmatched:
        found.append(f"{p.unmatched} detection(s) on one side only, above the cut "
                     f"(count {p.detections} vs eager {p.reference_detections})")
    if p.min_box_iou is not None and p.min_box_iou < tol["min_box_iou"]:
        found.append(f"box IoU {p.min_box_iou:.4f} < {tol['min_box_iou']}")
    if p.max_box_error_px is not None and p.max_box_error_px > tol["max_box_error_px"]:
        found.append(f"box corner off by {p.max_box_error_px:.3g} px > {tol['max_box_error_px']}")
    if p.max_score_diff is not None and p.max_score_diff > tol["max_score_diff"]:
        found.append(f"score differs by {p.max_score_diff:.3g} > {tol['max_score_diff']}")
    if p.label_agreement is not None and p.label_agreement < tol["min_label_agreement"]:
        found.append(f"labels agree on {p.label_agreement:.1%} < {tol['min_label_agreement']:.0%}")
    if p.min_mask_iou is not None and p.min_mask_iou < tol["min_mask_iou"]:
        found.append(f"mask IoU {p.min_mask_iou:.4f} < {tol['min_mask_iou']}")
    return found


def _match(ref: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> tuple[list[tuple[int, int]], list[float]]:
    """One-to-one pairs (IoU >= MATCH_IOU, the same label preferred) and the scores of detections left alone."""
    n, m = len(ref["boxes"]), len(out["boxes"])
    pairs: list[tuple[int, int]] = []
    if n and m:
        iou = _iou(ref["boxes"], out["boxes"])
        gain = iou + (ref["labels"][:, None] == out["labels"][None, :]).float() * (iou >= MATCH_IOU).float()
        # imported here: every worker imports this module (through the runtimes) and most never compare outputs
        from scipy.optimize import linear_sum_assignment  # noqa: PLC0415

        rows, cols = linear_sum_assignment(gain.numpy(), maximize=True)
        pairs = [(int(i), int(j)) for i, j in zip(rows, cols, strict=True) if iou[i, j] >= MATCH_IOU]
    left_ref = set(range(n)) - {i for i, _ in pairs}
    left_out = set(range(m)) - {j for _, j in pairs}
    return pairs, [float(ref["scores"][i]) for i in left_ref] + [float(out["scores"][j]) for j in left_out]


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Box IoU where boxes clipped to zero area (0/0) count as 1 with an identical box, else 0."""
    from torchvision.ops import box_iou  # noqa: PLC0415 (only where detections are compared)

    iou = box_iou(a.float(), b.float())
    same = (a[:, None, :] == b[None, :, :]).all(dim=2)
    return torch.where(torch.isnan(iou), same.float(), iou)


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0.5, b > 0.5
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def _cpu(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in d.items() if isinstance(v, torch.Tensor)}


def _shape(x: Any) -> str:
    return f"list of {len(x)}" if isinstance(x, list) else type(x).__name__
