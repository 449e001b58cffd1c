"""A controlled, stated post-processing load for random-weight detectors.

Random weights put either every anchor or none above torchvision's score threshold, so NMS time would be an
accident of initialisation. :func:`calibrate_postprocess` sets the score threshold to the score quantile that
sends a stated number of candidates per image into the detection head's NMS, then measures what it got.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from detbench.bench.models.batchnorm import recalibrate_batchnorm
from detbench.bench.models.registry import ModelSpec

POLICY = "score-quantile"
# Candidates per image entering the head's NMS (see docs/models.md for why these numbers).
DEFAULT_TARGET_DENSE = 1000  # RetinaNet, FCOS, SSD: per-level/per-class top-k of anchors x classes
DEFAULT_TARGET_RCNN = 300  # R-CNN box heads: (proposal, class) pairs
TARGET_TOLERANCE = 0.1  # target_reached: measured mean within 10% of the target


@dataclass(frozen=True)
class CountStats:
    """Mean / min / max of a per-image count."""

    mean: float
    min: int
    max: int

    @classmethod
    def of(cls, counts: list[int]) -> CountStats:
        if not counts:
            raise ValueError("no counts to summarise")
        return cls(mean=sum(counts) / len(counts), min=min(counts), max=max(counts))


@dataclass(frozen=True)
class PostprocessLoad:
    """The post-processing load a detector was set to, and what one eval forward measured under it."""

    policy: str
    head: str  # where the thresholds live, e.g. "roi_heads" or "model"
    target_candidates_per_image: int
    score_thresh: float
    default_score_thresh: float  # torchvision's value, replaced by score_thresh
    nms_thresh: float
    detections_per_img: int  # the cap after NMS (torchvision default, unchanged)
    topk_candidates: int | None  # per-level (RetinaNet, FCOS) / per-class (SSD) cap before NMS; None for R-CNN
    available_candidates_per_image: CountStats  # entering NMS with no score threshold
    default_candidates_per_image: CountStats  # entering NMS at default_score_thresh, for these random weights
    candidates_per_image: CountStats  # measured entering NMS at score_thresh
    detections_per_image: CountStats  # measured after NMS and the cap
    target_reached: bool  # measured mean within TARGET_TOLERANCE of the target
    calibration_batch_size: int
    batchnorm_layers_recalibrated: int  # see detbench.bench.models.batchnorm; 0 = left as built
    # Set when a group's variants share one calibrated model: the cell that calibrated it (the candidates and
    # detections above are then re-measured at this cell's batch and precision, the threshold is that cell's).
    calibrated_by: str | None = None

    def __post_init__(self) -> None:
        if self.target_candidates_per_image < 1:
            raise ValueError(f"target_candidates_per_image must be >= 1, got {self.target_candidates_per_image}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PostprocessLoad:
        stats = {f.name for f in dataclasses.fields(cls) if f.type in ("CountStats", CountStats)}
        kwargs: dict[str, Any] = {k: CountStats(**v) if k in stats else v for k, v in data.items()}
        return cls(**kwargs)


def _torchvision_detector(model: nn.Module) -> str | None:
    """The kind of torchvision detector ``model`` is: "rcnn" (GeneralizedRCNN), "dense" (RetinaNet, FCOS, SSD), or
    None. torchvision is not imported for this: a model built from one of its detector classes has imported
    torchvision.models.detection already, and a process measuring only other models skips its 1.5 CPU-s."""
    if "torchvision.models.detection" not in sys.modules:
        return None
    from torchvision.models.detection import FCOS, RetinaNet  # noqa: PLC0415
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN  # noqa: PLC0415
    from torchvision.models.detection.ssd import SSD  # noqa: PLC0415

    if isinstance(model, GeneralizedRCNN):
        return "rcnn"
    return "dense" if isinstance(model, (RetinaNet, FCOS, SSD)) else None


def thresholds_owner(model: nn.Module) -> tuple[Any, str] | None:
    """The module holding score_thresh / nms_thresh / detections_per_img, and its name; None if unknown.

    Typed Any: those are plain attributes of torchvision's heads, which nn.Module's typing reads as Tensor | Module.
    """
    kind = _torchvision_detector(model)
    if kind == "rcnn":
        return cast(Any, model).roi_heads, "roi_heads"
    return (model, "model") if kind == "dense" else None


def default_target(model: nn.Module) -> int:
    """The default candidates-per-image target for this detector's kind."""
    return DEFAULT_TARGET_RCNN if _torchvision_detector(model) == "rcnn" else DEFAULT_TARGET_DENSE


def calibrate_postprocess(
    model: nn.Module,
    spec: ModelSpec,
    inputs: Any,
    target_candidates_per_image: int | None = None,
    *,
    recalibrate_bn: bool = True,
) -> PostprocessLoad | None:
    """Set ``model``'s score threshold so ~target candidates per image enter the head's NMS; measure it.

    First (``recalibrate_bn``) sets BatchNorm running statistics from ``inputs`` so random-init activations
    keep a realistic scale (see detbench.bench.models.batchnorm). Then runs two eval forwards under no_grad on
    ``inputs`` (use the batch you will time, on its device, inside the same autocast context, before
    torch.compile). Only the score threshold changes; nms_thresh, the top-k
    caps and detections_per_img stay at torchvision's defaults. Returns None where not applicable
    (classifiers, detectors without torchvision's postprocess). Deterministic for fixed weights and inputs.
    """
    if spec.task != "detection":
        return None
    if spec.calibrate is not None:  # detectors without torchvision's postprocess (DETR family, YOLO)
        return spec.calibrate(model, inputs, target_candidates_per_image, recalibrate_bn=recalibrate_bn)
    found = thresholds_owner(model)
    if found is None:
        return None
    owner, head = found
    target = default_target(model) if target_candidates_per_image is None else int(target_candidates_per_image)
    if target < 1:
        raise ValueError(f"target_candidates_per_image must be >= 1, got {target}")
    count = spec.count_detections
    if count is None:
        raise ValueError(f"{spec.name}: ModelSpec.count_detections is needed to calibrate post-processing")
    head_module = type(owner).postprocess_detections.__module__
    batch_size = len(inputs)
    default_thresh = float(owner.score_thresh)
    bn_layers = recalibrate_batchnorm(model, inputs) if recalibrate_bn else 0
    was_training = model.training
    model.eval()
    try:
        # Pass 1: no score threshold; record every candidate score that would enter the head's NMS
        # (after the top-k caps, which commute with a threshold). NMS itself is skipped: outputs are discarded.
        owner.score_thresh = -1.0
        with torch.no_grad(), _capture_head_nms(head_module, run_nms=False) as scores:
            model(inputs)
        _check_calls(scores, batch_size, spec.name)
        threshold = quantile_threshold(torch.cat(scores), target * batch_size)
        # Pass 2: the real post-processing at the chosen threshold, measured.
        owner.score_thresh = threshold
        with torch.no_grad(), _capture_head_nms(head_module, run_nms=True) as measured:
            outputs = model(inputs)
        _check_calls(measured, batch_size, spec.name)
    except BaseException:
        owner.score_thresh = default_thresh
        raise
    finally:
        model.train(was_training)
    topk = getattr(owner, "topk_candidates", None)
    return PostprocessLoad(
        policy=POLICY,
        head=head,
        target_candidates_per_image=target,
        score_thresh=threshold,
        default_score_thresh=default_thresh,
        nms_thresh=float(owner.nms_thresh),
        detections_per_img=int(owner.detections_per_img),
        topk_candidates=None if topk is None else int(topk),
        available_candidates_per_image=CountStats.of([int(s.numel()) for s in scores]),
        default_candidates_per_image=CountStats.of([int((s > default_thresh).sum()) for s in scores]),
        candidates_per_image=CountStats.of([int(s.numel()) for s in measured]),
        detections_per_image=CountStats.of(count(outputs)),
        target_reached=abs(sum(len(s) for s in measured) / batch_size - target) <= TARGET_TOLERANCE * target,
        calibration_batch_size=batch_size,
        batchnorm_layers_recalibrated=bn_layers,
    )


def restate_postprocess(model: nn.Module, spec: ModelSpec, inputs: Any, calibrated: PostprocessLoad,
                        calibrated_by: str) -> PostprocessLoad:
    """The load of an already calibrated ``model`` on other ``inputs`` (another batch size or autocast).

    One eval forward at the calibrated threshold measures what enters NMS and what comes out; the threshold
    and BatchNorm statistics stay as calibrated, so every variant of a group runs the same post-processing
    setting. Detectors with their own ``spec.calibrate`` (DETR family, YOLO) keep the calibrated figures."""
    found = thresholds_owner(model)
    if spec.calibrate is not None or found is None or spec.count_detections is None:
        return dataclasses.replace(calibrated, calibrated_by=calibrated_by)
    owner, _ = found
    head_module = type(owner).postprocess_detections.__module__
    batch_size = len(inputs)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _capture_head_nms(head_module, run_nms=True) as measured:
            outputs = model(inputs)
    finally:
        model.train(was_training)
    _check_calls(measured, batch_size, spec.name)
    target = calibrated.target_candidates_per_image
    return dataclasses.replace(
        calibrated,
        candidates_per_image=CountStats.of([int(s.numel()) for s in measured]),
        detections_per_image=CountStats.of(spec.count_detections(outputs)),
        target_reached=abs(sum(len(s) for s in measured) / batch_size - target) <= TARGET_TOLERANCE * target,
        calibrated_by=calibrated_by,
    )


def apply_score_thresh(model: nn.Module, load: PostprocessLoad) -> None:
    """Set a calibrated threshold on another instance of the same detector (e.g. one rebuilt per cell)."""
    found = thresholds_owner(model)
    if found is None:
        raise ValueError(f"{type(model).__name__} has no torchvision post-processing thresholds")
    found[0].score_thresh = load.score_thresh


def quantile_threshold(scores: torch.Tensor, wanted: int) -> float:
    """The threshold t for which count(scores > t) is closest to ``wanted`` (ties make some counts unreachable).

    t is always one of the scores themselves (or below all of them), so it survives the cast to the model's
    score dtype (bf16 under autocast) unchanged.
    """
    if scores.numel() == 0 or scores.numel() <= wanted:  # fewer candidates than the target: let all through
        return _below_all(scores)
    kth = torch.sort(scores, descending=True).values[wanted]
    above = int((scores > kth).sum())  # <= wanted
    at_or_above = int((scores >= kth).sum())  # > wanted
    if wanted - above <= at_or_above - wanted:
        return float(kth)
    below = scores[scores < kth]
    return float(below.max()) if below.numel() else _below_all(scores)


def _below_all(scores: torch.Tensor) -> float:
    # Detector scores are probabilities (>= 0); -1 lets every candidate through, exactly.
    lowest = float(scores.min()) if scores.numel() else 0.0
    return min(-1.0, lowest - 1.0)


@contextmanager
def _capture_head_nms(head_module: str, *, run_nms: bool) -> Iterator[list[torch.Tensor]]:
    """Record the scores of every batched_nms call made from ``head_module`` (the RPN's calls pass through).

    Patches torchvision.ops.boxes.batched_nms for the duration only: never use around a timed region.
    """
    from torchvision.ops import boxes as box_ops  # noqa: PLC0415 (a torchvision detector has imported it)

    real = box_ops.batched_nms
    scores_seen: list[torch.Tensor] = []

    def hooked(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
        if sys._getframe(1).f_globals.get("__name__") != head_module:
            return real(boxes, scores, idxs, iou_threshold)
        scores_seen.append(scores.detach().float().cpu())
        if run_nms:
            return real(boxes, scores, idxs, iou_threshold)
        return torch.argsort(scores, descending=True)

    box_ops.batched_nms = hooked
    try:
        yield scores_seen
    finally:
        box_ops.batched_nms = real


def _check_calls(calls: list[torch.Tensor], batch_size: int, name: str) -> None:
    # torchvision's heads run NMS once per image; anything else means the hook watched the wrong caller.
    if len(calls) != batch_size:
        raise RuntimeError(
            f"{name}: expected {batch_size} head NMS calls (one per image), saw {len(calls)}; "
            "this torchvision's post-processing is not the one calibrate_postprocess knows"
        )


# --- the calibration cache --------------------------------------------------------------------------------

CACHE_ENV = "DETBENCH_CALIBRATION_CACHE"  # a folder; set by a run for its workers (bench/plugin/plugin.py)
CACHE_FORMAT = 1  # bump when what a calibration depends on changes (its policy, targets, images, stored fields)


@dataclass(frozen=True)
class CalibrationKey:
    """What a seeded random-weight detector's calibration depends on: the same key gives the same BatchNorm
    statistics and threshold (the build, the images and the forwards are all seeded)."""

    model: str
    image_size: tuple[int, int]
    seed: int
    weights: str | None  # a local state-dict path, else the seeded random weights
    device: str  # cpu, or the GPU's name: kernels differ in their last bits
    images: int  # the images the BatchNorm statistics are set from (detbench.bench.runtime.build.CALIBRATION_IMAGES)
    batch_size: int | None = None  # None: the group's BatchNorm statistics; else that batch's FP32 threshold

    def file_name(self) -> str:
        import torchvision  # noqa: PLC0415 (not at start: see _torchvision_detector)

        fields = {**dataclasses.asdict(self), "torch": torch.__version__, "torchvision": torchvision.__version__,
                  "format": CACHE_FORMAT, "policy": POLICY, "targets": [DEFAULT_TARGET_DENSE, DEFAULT_TARGET_RCNN]}
        digest = hashlib.sha256(repr(sorted(fields.items())).encode()).hexdigest()[:20]
        what = "batchnorm" if self.batch_size is None else f"bs{self.batch_size}"
        return f"{self.model}-{self.image_size[0]}x{self.image_size[1]}-{what}-{digest}.pt"


class CalibrationCache:
    """Calibrations kept in a folder, shared by the workers of a run, its repeats and its resume: a group's
    BatchNorm statistics and each batch size's FP32 post-processing load, by :class:`CalibrationKey`.

    ``CalibrationCache.from_env()`` is None unless the run set :data:`CACHE_ENV`. Files are written atomically
    (two workers may write the same key; both write the same thing); an unreadable file is a miss."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    @classmethod
    def from_env(cls) -> CalibrationCache | None:
        folder = os.environ.get(CACHE_ENV)
        return cls(folder) if folder else None

    def _read(self, key: CalibrationKey) -> dict[str, Any] | None:
        path = self.folder / key.file_name()
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError):
            return None
        return data if isinstance(data, dict) else None

    def _write(self, key: CalibrationKey, data: dict[str, Any]) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            descriptor, partial = tempfile.mkstemp(prefix=".calibration-", suffix=".partial", dir=self.folder)
            with os.fdopen(descriptor, "wb") as handle:
                torch.save(data, handle)
            os.replace(partial, self.folder / key.file_name())
        except OSError as exc:  # a cache that cannot be written costs time, never a result
            print(f"detbench: calibration cache {self.folder} not written ({exc.strerror or exc})", file=sys.stderr)

    def load(self, key: CalibrationKey) -> PostprocessLoad | None:
        data = self._read(key)
        try:
            return PostprocessLoad.from_dict(json.loads(data["load"])) if data else None
        except (KeyError, TypeError, ValueError):
            return None

    def store(self, key: CalibrationKey, load: PostprocessLoad) -> None:
        self._write(key, {"load": json.dumps(load.to_dict())})

    def load_batchnorm(self, key: CalibrationKey, model: nn.Module) -> int | None:
        """Put the cached BatchNorm statistics into ``model``; the number of layers set, None on a miss."""
        data = self._read(key)
        stats = data.get("batchnorm") if data else None
        layers = {name: m for name, m in model.named_modules() if isinstance(m, _BatchNorm)}
        if not isinstance(stats, dict) or set(stats) != set(layers):
            return None
        for name, layer in layers.items():
            for buffer, value in stats[name].items():
                getattr(layer, buffer).copy_(value)
        return len(layers)

    def store_batchnorm(self, key: CalibrationKey, model: nn.Module) -> None:
        stats = {name: {b: getattr(m, b).detach().cpu().clone() for b in BATCHNORM_BUFFERS if getattr(m, b, None)
                        is not None}
                 for name, m in model.named_modules() if isinstance(m, _BatchNorm)}
        self._write(key, {"batchnorm": stats})


BATCHNORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
