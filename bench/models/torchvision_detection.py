"""torchvision detectors (R-CNN family, RetinaNet, FCOS, SSD), random-initialised, registered by name.

Each builder returns a :class:`ModelSpec`; the shared parts (inputs, targets, loss, sizing) live here once.
Sizing: torchvision detectors resize every image inside ``model.transform``; :func:`set_transform_size`
pins that transform so an (H, W) input is processed at (H, W) (see ``ModelSpec.notes["transform"]``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import torch
from torch import nn

from detbench.bench.models.registry import ModelSpec, register_model

COCO_NUM_CLASSES = 91  # torchvision's COCO label space (index 0 = background)
NUM_KEYPOINTS = 17
RCNN_NATIVE_SIZE = (800, 1333)  # torchvision's default min_size=800, max_size=1333
BOXES_PER_IMAGE = (4, 8)  # synthetic targets: this many boxes per image, inclusive

_RCNN_TRANSFORM_NOTE = (
    "GeneralizedRCNNTransform: normalise, resize by min(min_size/min(H,W), max_size/max(H,W)) with "
    "min_size=(min(H,W),), max_size=max(H,W) -> scale 1.0 (a bilinear pass at the same size), then zero-pad "
    "the batch to a multiple of 32 (800x1333 -> 800x1344)"
)
_SSD_TRANSFORM_NOTE = (
    "GeneralizedRCNNTransform with fixed_size=(W,H): normalise and resize every image to exactly (H,W) "
    "(a same-size bilinear pass when the input is already (H,W)); no padding (size_divisible=1)"
)
_RANDOM_INIT_NOTE = (
    "random init (weights=None, weights_backbone=None): backbone uses nn.BatchNorm2d and every layer is "
    "trainable; torchvision's pretrained-backbone fine-tuning uses FrozenBatchNorm2d and freezes early layers"
)


# --- sizing ---------------------------------------------------------------------------------------------


def set_transform_size(model: nn.Module, image_size: tuple[int, int]) -> None:
    """Pin ``model.transform`` so (H, W) inputs are processed at (H, W), in eval and training alike.

    A single-entry ``min_size`` also turns off torchvision's multi-scale training choice (keypoint R-CNN
    defaults to min_size=(640, ..., 800), picked at random per image).
    """
    from torchvision.models.detection.ssd import SSD  # noqa: PLC0415 (torchvision on first use: see _spec_of)

    height, width = image_size
    transform: Any = model.transform  # a GeneralizedRCNNTransform, which nn.Module's typing reads as Tensor | Module
    transform.min_size = (min(height, width),)
    transform.max_size = max(height, width)
    if isinstance(model, SSD):
        transform.fixed_size = (width, height)  # torchvision's fixed_size is (W, H)


# --- inputs, targets, loss, outputs ---------------------------------------------------------------------


def make_images(
    batch_size: int, image_size: tuple[int, int], device: torch.device, generator: torch.Generator
) -> list[torch.Tensor]:
    """B float images [3, H, W] in [0, 1], uniform noise from ``generator`` (made on its device, then moved)."""
    height, width = image_size
    images = torch.rand(batch_size, 3, height, width, generator=generator, device=generator.device)
    return list(images.to(device).unbind(0))


def make_detection_targets(
    batch_size: int,
    image_size: tuple[int, int],
    device: torch.device,
    generator: torch.Generator,
    *,
    num_classes: int = COCO_NUM_CLASSES,
    with_masks: bool = False,
    num_keypoints: int = 0,
) -> list[dict[str, torch.Tensor]]:
    """Per image 4-8 valid boxes (x1<x2, y1<y2, inside the image), labels in [1, num_classes),
    plus box-filling uint8 masks [N, H, W] and/or keypoints [N, K, 3] (visibility 2) inside each box."""
    height, width = image_size
    gen_device = generator.device

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=gen_device)

    targets = []
    for _ in range(batch_size):
        n = int(torch.randint(BOXES_PER_IMAGE[0], BOXES_PER_IMAGE[1] + 1, (1,), generator=generator, device=gen_device))
        # Box sides 10%-50% of the image side, top-left corner chosen so the box stays inside.
        box_w = (0.1 + 0.4 * uniform(n)) * width
        box_h = (0.1 + 0.4 * uniform(n)) * height
        x1 = uniform(n) * (width - box_w)
        y1 = uniform(n) * (height - box_h)
        boxes = torch.stack([x1, y1, x1 + box_w, y1 + box_h], dim=1)
        labels = torch.randint(1, num_classes, (n,), generator=generator, device=gen_device)
        target = {"boxes": boxes, "labels": labels}
        if with_masks:
            ys = torch.arange(height, device=gen_device).view(1, height, 1)
            xs = torch.arange(width, device=gen_device).view(1, 1, width)
            inside = (
                (xs >= boxes[:, 0, None, None]) & (xs < boxes[:, 2, None, None])
                & (ys >= boxes[:, 1, None, None]) & (ys < boxes[:, 3, None, None])
            )
            target["masks"] = inside.to(torch.uint8)
        if num_keypoints:
            kx = boxes[:, None, 0] + uniform(n, num_keypoints) * box_w[:, None]
            ky = boxes[:, None, 1] + uniform(n, num_keypoints) * box_h[:, None]
            visibility = torch.full_like(kx, 2.0)
            target["keypoints"] = torch.stack([kx, ky, visibility], dim=2)
        targets.append({k: v.to(device) for k, v in target.items()})
    return targets


def detection_training_loss(model: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
    """Sum of the loss dict a torchvision detector returns in train mode."""
    losses = model(inputs, targets)
    if not isinstance(losses, dict):
        raise TypeError("detector returned no loss dict: call model.train() before training_loss")
    return cast(torch.Tensor, sum(losses.values()))  # a sum of tensors (typed int | Tensor for sum's start 0)


def count_detections(outputs: Any) -> list[int]:
    """Detections per image of a torchvision detector's eval output (a list of dicts with ``boxes``)."""
    if not isinstance(outputs, (list, tuple)) or not all(isinstance(o, dict) and "boxes" in o for o in outputs):
        raise TypeError("expected a list of dicts with 'boxes' (a torchvision detector's eval output)")
    return [int(o["boxes"].shape[0]) for o in outputs]


# --- weights ---------------------------------------------------------------------------------------------


def load_local_weights(model: nn.Module, weights_path: str | None, name: str) -> nn.Module:
    """Load a local state dict (never downloads); a clear error if the file is missing or does not fit."""
    if weights_path is None:
        return model
    if not os.path.isfile(weights_path):
        raise FileNotFoundError(f"{name}: weights file not found: {weights_path}")
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except TypeError:  # torch without weights_only
        state = torch.load(weights_path, map_location="cpu")
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # torchvision reference-training checkpoints wrap the state dict
    if not isinstance(state, dict):
        raise ValueError(f"{name}: {weights_path} holds a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ValueError(f"{name}: {weights_path} does not match the model: {' '.join(first[:3])}") from exc
    return model


# --- the spec factory ------------------------------------------------------------------------------------


def _detector_spec(
    name: str,
    family: str,
    builder: Callable[..., nn.Module],
    native_size: tuple[int, int],
    *,
    num_classes: int = COCO_NUM_CLASSES,
    with_masks: bool = False,
    num_keypoints: int = 0,
    builder_kwargs: dict[str, Any] | None = None,
    extra_notes: dict[str, Any] | None = None,
    min_image_side: int = 32,
) -> ModelSpec:
    import torchvision  # noqa: PLC0415 (on first use: see _spec_of)

    kwargs = {"weights": None, "weights_backbone": None, "num_classes": num_classes, **(builder_kwargs or {})}

    def set_size(model: nn.Module, image_size: tuple[int, int]) -> None:
        if min(image_size) < min_image_side:
            raise ValueError(f"{name} needs image sides >= {min_image_side} (its last feature maps vanish), "
                             f"got {image_size[0]}x{image_size[1]}")
        set_transform_size(model, image_size)

    def build(weights_path: str | None = None) -> nn.Module:
        model = builder(**kwargs)
        set_size(model, native_size)
        return load_local_weights(model, weights_path, name)

    is_ssd = family == "ssd"
    notes = {
        "source": f"torchvision.models.detection.{builder.__name__}",
        "torchvision_version": torchvision.__version__,
        "num_classes": num_classes,
        "min_image_side": min_image_side,
        "init": _RANDOM_INIT_NOTE if not is_ssd else "random init (weights=None, weights_backbone=None)",
        "transform": _SSD_TRANSFORM_NOTE if is_ssd else _RCNN_TRANSFORM_NOTE,
        "targets": f"{BOXES_PER_IMAGE[0]}-{BOXES_PER_IMAGE[1]} random boxes per image"
        + (", box-filling masks" if with_masks else "")
        + (f", {num_keypoints} keypoints per box (visibility 2)" if num_keypoints else ""),
        **(extra_notes or {}),
    }
    return ModelSpec(
        name=name,
        family=family,
        task="detection",
        native_size=native_size,
        build=build,
        make_inputs=make_images,
        make_targets=partial(
            make_detection_targets, num_classes=num_classes, with_masks=with_masks, num_keypoints=num_keypoints
        ),
        training_loss=detection_training_loss,
        notes=notes,
        set_image_size=set_size,
        count_detections=count_detections,
    )


# --- the registry entries: one row per torchvision detector (its builder has the same name) -----------------


@dataclass(frozen=True)
class Detector:
    """A torchvision detector as the registry builds it: ``torchvision.models.detection.<name>``, random init."""

    family: str
    native_size: tuple[int, int] = RCNN_NATIVE_SIZE
    options: dict[str, Any] = field(default_factory=dict)  # _detector_spec's keywords


_MOBILENET_SSD_NOTE = ("MobileNetV3-Large with reduced tail (torchvision's choice without a pretrained backbone, the "
                       "same architecture as its COCO_V1 weights)")
DETECTORS: dict[str, Detector] = {
    "fasterrcnn_resnet50_fpn": Detector("faster-rcnn"),
    "fasterrcnn_resnet50_fpn_v2": Detector("faster-rcnn"),
    "fasterrcnn_mobilenet_v3_large_fpn": Detector(
        "faster-rcnn", options={"extra_notes": {"rpn": "torchvision's mobilenet default rpn_score_thresh=0.05"}}),
    "retinanet_resnet50_fpn": Detector("retinanet"),
    "retinanet_resnet50_fpn_v2": Detector("retinanet"),
    "maskrcnn_resnet50_fpn": Detector("mask-rcnn", options={"with_masks": True}),
    "maskrcnn_resnet50_fpn_v2": Detector("mask-rcnn", options={"with_masks": True}),
    "fcos_resnet50_fpn": Detector("fcos"),
    "ssd300_vgg16": Detector("ssd", (300, 300), {"min_image_side": 268}),
    "ssdlite320_mobilenet_v3_large": Detector("ssd", (320, 320), {"extra_notes": {"backbone": _MOBILENET_SSD_NOTE}}),
    "keypointrcnn_resnet50_fpn": Detector("keypoint-rcnn", options={
        "num_classes": 2, "num_keypoints": NUM_KEYPOINTS, "builder_kwargs": {"num_keypoints": NUM_KEYPOINTS},
        "extra_notes": {"training_scales": "single scale: torchvision's multi-scale min_size choice is pinned off"}}),
}


def _spec_of(name: str, detector: Detector) -> Callable[[], ModelSpec]:
    """The registry's factory for one detector. torchvision is imported when a spec is first asked for, not when the
    models are listed: `pytest bench/` checks `--models` against every registered name, and a run of other models
    (`--model-modules`) or a usage error is spared torchvision's import (~1.4 CPU-s a process)."""

    def spec() -> ModelSpec:
        from torchvision.models import detection  # noqa: PLC0415

        return _detector_spec(name, detector.family, getattr(detection, name), detector.native_size,
                              **detector.options)
    return spec


for _name, _detector in DETECTORS.items():
    register_model(_name)(_spec_of(_name, _detector))
