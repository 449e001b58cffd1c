"""YOLO detectors (YOLOv8, YOLO11) from ultralytics: optional extra ``yolo``. ultralytics is AGPL-3.0.

Built with ``DetectionModel(<bundled yaml>)``: random weights, nothing downloaded. :class:`YoloDetector` wraps
it like a torchvision detector: eval forward -> raw head output + ultralytics' ``non_max_suppression`` at a
calibrated confidence threshold -> per-image dicts; train forward (with targets) -> the v8 detection loss.
ultralytics is imported inside ``build`` only (with ``YOLO_OFFLINE=1`` so its import-time connectivity probe
stays off), so ``list_models()`` lists these names without the extra.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from detbench.bench.models.extra_common import calibrated_pass, counts_above, make_pixel_batch, target_reached
from detbench.bench.models.registry import MissingExtraError, ModelSpec, register_model
from detbench.bench.models.torchvision_detection import count_detections, load_local_weights, make_detection_targets

EXTRA = "yolo"
INSTALL_COMMAND = "pip install 'detbench[yolo]'"
LICENSE = "AGPL-3.0"
NATIVE_SIZE = (640, 640)  # ultralytics' default imgsz
NUM_CLASSES = 80  # COCO's 80 classes, as the bundled configs
DEFAULT_CONF = 0.25  # ultralytics' predict default, replaced by the calibrated threshold
NMS_IOU = 0.7  # ultralytics' cfg default that its predictors pass (non_max_suppression's own default is 0.45)
DETECTIONS_PER_IMG = 100  # = torchvision's detections_per_img (ultralytics' predict default max_det is 300)
MAX_NMS = 30000  # ultralytics' cap on boxes entering NMS
# = detbench.bench.models.postprocess's dense-detector target: boxes entering NMS per image
DEFAULT_TARGET_CANDIDATES = 1000
NO_TIME_LIMIT_S = 1e9  # non_max_suppression stops early after 2 s + 0.05 s/image by default: never let it cut work


@dataclass(frozen=True)
class _Variant:
    name: str
    family: str
    config_yaml: str  # bundled in ultralytics/cfg/models/


VARIANTS = {
    v.name: v
    for v in (
        _Variant("yolov8n", "yolov8", "yolov8n.yaml"),
        _Variant("yolov8s", "yolov8", "yolov8s.yaml"),
        _Variant("yolo11n", "yolo11", "yolo11n.yaml"),
    )
}


def import_ultralytics(model_name: str) -> Any:
    """ultralytics, imported offline; MissingExtraError with the install command when it is not installed."""
    # Its import resolves DNS names to decide ONLINE unless YOLO_OFFLINE is set; the suite never goes online.
    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        import ultralytics  # noqa: PLC0415
        from ultralytics.nn import tasks  # noqa: F401, PLC0415
        from ultralytics.utils import nms  # noqa: F401, PLC0415
    except ImportError as exc:
        raise MissingExtraError(
            f"{model_name} needs the optional extra '{EXTRA}' (ultralytics, {LICENSE}): {INSTALL_COMMAND} ({exc})"
        ) from exc
    return ultralytics


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class YoloDetector(nn.Module):
    """An ultralytics DetectionModel behind a torchvision-like interface.

    forward(images) in eval: [B, 3, H, W] in [0, 1] (or a list of [3, H, W]) -> list of {"boxes" (xyxy pixels),
    "scores", "labels"} from ``non_max_suppression(conf_thres=score_thresh, iou_thres=nms_thresh, max_det)``.
    forward(images, targets) in train: the summed v8 detection loss (box + cls + dfl, times the batch size, as
    ultralytics' trainer backpropagates it); targets: {"cls" [N, 1], "bboxes" [N, 4] cxcywh 0-1, "batch_idx" [N]}.
    """

    def __init__(self, detector: nn.Module, name: str) -> None:
        super().__init__()
        # an ultralytics DetectionModel: its loss, stride and args are attributes nn.Module's typing does not know
        self.detector: Any = detector
        self.name = name
        self.score_thresh = DEFAULT_CONF
        self.nms_thresh = NMS_IOU
        self.detections_per_img = DETECTIONS_PER_IMG
        _eager_loss()  # made here, before any torch.compile traces `loss`

    @staticmethod
    def batch(images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(images)) if isinstance(images, (list, tuple)) else images

    def forward(self, images: torch.Tensor | list[torch.Tensor], targets: dict[str, torch.Tensor] | None = None):
        pixels = self.batch(images)
        if self.training:
            if targets is None:
                raise ValueError(f"{self.name}: a training forward needs targets")
            return self.loss(targets, self.detector(pixels))
        return self.postprocess(self.raw_predictions(pixels))

    def loss(self, targets: dict[str, torch.Tensor], predictions: Any) -> torch.Tensor:
        """v8DetectionLoss, always eager: inductor (torch 2.11) cannot compile its TaskAlignedAssigner (an
        int8 scatter_add becomes a Triton atomic_add on int8), so torch.compile covers the network only."""
        return _eager_loss()(self.detector, targets, predictions)

    def raw_predictions(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 4 + classes, anchors]: decoded xywh boxes and per-class scores, before NMS."""
        out = self.detector(pixels)
        return out[0] if isinstance(out, (list, tuple)) else out

    def postprocess(self, predictions: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        from ultralytics.utils.nms import non_max_suppression  # noqa: PLC0415

        kept = non_max_suppression(
            predictions,
            conf_thres=min(max(self.score_thresh, 0.0), 1.0),
            iou_thres=self.nms_thresh,
            max_det=self.detections_per_img,
            max_nms=MAX_NMS,
            max_time_img=NO_TIME_LIMIT_S,
        )
        return [{"boxes": k[:, :4], "scores": k[:, 4], "labels": k[:, 5].long()} for k in kept]

    def candidate_scores(self, predictions: torch.Tensor) -> list[torch.Tensor]:
        """Per image, the best class score of every anchor: what non_max_suppression thresholds."""
        num_classes = predictions.shape[1] - 4
        return list(predictions[:, 4 : 4 + num_classes].amax(1).unbind(0))

    @property
    def runtime_notes(self) -> dict[str, Any]:
        return {"ultralytics_version": _package_version("ultralytics"), "score_thresh": self.score_thresh}


def _summed_loss(detector: Any, targets: dict[str, torch.Tensor], predictions: Any) -> torch.Tensor:
    value, _ = detector.loss(targets, predictions)
    return value.sum()


_EAGER_LOSS: list[Callable[..., torch.Tensor]] = []


def _eager_loss() -> Callable[..., torch.Tensor]:
    """``_summed_loss`` under ``torch.compiler.disable``, made when the first detector is built (outside any compiled
    region) rather than at import: the call imports torch._dynamo (~1.1 CPU-s), which importing this module to list
    the models never needs."""
    if not _EAGER_LOSS:
        _EAGER_LOSS.append(torch.compiler.disable(_summed_loss))
    return _EAGER_LOSS[0]


def build_detector(variant: _Variant, weights_path: str | None = None) -> YoloDetector:
    """Random-initialised ``variant`` from its bundled yaml; loss hyper-parameters from ultralytics' defaults."""
    import_ultralytics(variant.name)
    from ultralytics.cfg import get_cfg  # noqa: PLC0415
    from ultralytics.nn.tasks import DetectionModel  # noqa: PLC0415

    detector: Any = DetectionModel(variant.config_yaml, ch=3, nc=NUM_CLASSES, verbose=False)  # .args: see below
    detector.args = get_cfg()  # box/cls/dfl gains that v8DetectionLoss reads (7.5 / 0.5 / 1.5)
    load_local_weights(detector, weights_path, variant.name)
    return YoloDetector(detector, variant.name)


def check_image_size(model: nn.Module, image_size: tuple[int, int]) -> None:
    """YOLO takes any size that is a multiple of its largest stride (32); a clear error otherwise."""
    adapter = getattr(model, "_orig_mod", model)
    stride = int(adapter.detector.stride.max()) if isinstance(adapter, YoloDetector) else 32
    if any(side % stride for side in image_size):
        raise ValueError(f"YOLO image sides must be multiples of {stride}, got {tuple(image_size)}")


def make_yolo_targets(
    batch_size: int, image_size: tuple[int, int], device: torch.device, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """The torchvision detectors' synthetic boxes in ultralytics' batch layout (cls, cxcywh 0-1, batch_idx)."""
    height, width = image_size
    scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=device)
    cls, boxes, index = [], [], []
    synthetic = make_detection_targets(batch_size, image_size, device, generator, num_classes=NUM_CLASSES)
    for i, target in enumerate(synthetic):
        x1, y1, x2, y2 = (target["boxes"] / scale).unbind(1)
        boxes.append(torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=1))
        cls.append(target["labels"].float().unsqueeze(1))
        index.append(torch.full((len(target["labels"]),), float(i), device=device))
    return {"cls": torch.cat(cls), "bboxes": torch.cat(boxes), "batch_idx": torch.cat(index)}


def yolo_training_loss(model: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
    loss = model(inputs, targets)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise TypeError("expected a scalar loss: call model.train() before training_loss")
    return loss


def calibrate_yolo(
    model: nn.Module, inputs: Any, target_candidates_per_image: int | None = None, *, recalibrate_bn: bool = True
) -> Any:
    """Set the confidence threshold so ~target boxes per image enter NMS (detbench.bench.models.postprocess's policy);
    measure.

    BatchNorm running statistics are first set from ``inputs`` (see detbench.bench.models.batchnorm), as for
    torchvision.
    """
    from detbench.bench.models.postprocess import POLICY, TARGET_TOLERANCE, CountStats, PostprocessLoad  # noqa: PLC0415

    adapter = getattr(model, "_orig_mod", model)
    if not isinstance(adapter, YoloDetector):
        raise TypeError(f"calibrate_yolo needs a YoloDetector, got {type(adapter).__name__}")
    target = DEFAULT_TARGET_CANDIDATES if target_candidates_per_image is None else int(target_candidates_per_image)

    def score() -> tuple[list[torch.Tensor], Any]:
        predictions = adapter.raw_predictions(adapter.batch(inputs))
        return adapter.candidate_scores(predictions), lambda: adapter.postprocess(predictions)

    scores, threshold, outputs, bn_layers = calibrated_pass(adapter, inputs, target, recalibrate_bn, score,
                                                            bounds=(0.0, 1.0))
    passed = [min(n, MAX_NMS) for n in counts_above(scores, threshold)]
    return PostprocessLoad(
        policy=POLICY,
        head="ultralytics.utils.nms.non_max_suppression",
        target_candidates_per_image=target,
        score_thresh=threshold,
        default_score_thresh=DEFAULT_CONF,
        nms_thresh=NMS_IOU,
        detections_per_img=DETECTIONS_PER_IMG,
        topk_candidates=MAX_NMS,
        available_candidates_per_image=CountStats.of([int(s.numel()) for s in scores]),
        default_candidates_per_image=CountStats.of(counts_above(scores, DEFAULT_CONF)),
        candidates_per_image=CountStats.of(passed),
        detections_per_image=CountStats.of(count_detections(outputs)),
        target_reached=target_reached(passed, target, TARGET_TOLERANCE),
        calibration_batch_size=len(scores),
        batchnorm_layers_recalibrated=bn_layers,
    )


def _yolo_spec(variant: _Variant) -> ModelSpec:
    def build(weights_path: str | None = None) -> nn.Module:
        return build_detector(variant, weights_path)

    notes = {
        "source": f"ultralytics.nn.tasks.DetectionModel('{variant.config_yaml}', nc={NUM_CLASSES})",
        "ultralytics_version": _package_version("ultralytics"),
        "license": f"ultralytics is {LICENSE}",
        "init": "random init from the bundled yaml (ultralytics' own init), no weights; Conv+BN not fused "
        "(ultralytics' predictor fuses them for inference)",
        "transform": "none: [0, 1] pixels at the given size (sides must be multiples of 32), no letterbox",
        "postprocess": f"non_max_suppression(iou_thres={NMS_IOU}, max_det={DETECTIONS_PER_IMG}, max_nms={MAX_NMS}, "
        "no time limit), single best class per box; conf threshold calibrated by ModelSpec.calibrate",
        "loss": "v8DetectionLoss (TaskAlignedAssigner; box 7.5, cls 0.5, dfl 1.5), summed x batch size; "
        "excluded from torch.compile (torch.compiler.disable): inductor fails on its int8 scatter_add",
        "targets": "4-8 random boxes per image as cls + normalised cxcywh + batch_idx",
        "offline": "YOLO_OFFLINE=1 set before import (no connectivity probe); nothing downloaded",
    }
    return ModelSpec(
        name=variant.name,
        family=variant.family,
        task="detection",
        native_size=NATIVE_SIZE,
        build=build,
        make_inputs=make_pixel_batch,
        make_targets=make_yolo_targets,
        training_loss=yolo_training_loss,
        extra=EXTRA,
        notes=notes,
        set_image_size=check_image_size,
        count_detections=count_detections,
        calibrate=calibrate_yolo,
    )


# --- the registry entries: one per variant ------------------------------------------------------------------

for _name, _variant in VARIANTS.items():
    register_model(_name)(partial(_yolo_spec, _variant))
