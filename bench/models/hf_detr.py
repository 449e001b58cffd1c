"""DETR-family detectors (DETR, Deformable DETR, RT-DETR) from Hugging Face transformers: optional extra ``detr``.

Built from a config with random weights (no ``from_pretrained``, nothing downloaded); the backbone is
transformers' own ResNet (no timm). :class:`HFDetrDetector` wraps a model so it fits the suite like a
torchvision detector: eval forward -> per-image dicts after the library's post-processing, train forward
(with targets) -> the scalar loss. transformers is imported inside ``build`` only, so ``list_models()``
lists these names without the extra, and building one without it raises :class:`MissingExtraError`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from detbench.bench.models.extra_common import calibrated_pass, counts_above, make_pixel_batch, target_reached
from detbench.bench.models.registry import MissingExtraError, ModelSpec, register_model
from detbench.bench.models.torchvision_detection import count_detections, load_local_weights, make_detection_targets

EXTRA = "detr"
INSTALL_COMMAND = "pip install 'detbench[detr]'"
NATIVE_SIZE = (800, 1333)  # DETR / Deformable DETR: the (shortest, longest) edge their papers evaluate at
NUM_LABELS = 91  # COCO label ids, as torchvision's detectors
DEFAULT_SCORE_THRESH = 0.5  # post_process_object_detection's default threshold
DEFAULT_TARGET_DETECTIONS = 100  # = torchvision's detections_per_img, so outputs per image are comparable
NO_NMS_IOU = 1.0  # DETR-family post-processing has no NMS: an IoU threshold of 1.0 suppresses nothing
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class _Variant:
    """One registered DETR-family model: which transformers classes, and how its post-processing scores."""

    name: str
    family: str
    config_class: str
    model_class: str
    processor_class: str
    scoring: str  # "sigmoid-topk" (focal-loss heads) | "softmax" (DETR: best non-"no object" class per query)
    top_k: int | None  # post_process_object_detection's top_k argument; None = the processor has none
    backbone_out_features: tuple[str, ...] | None  # HF ResNet stages; None = the model's own default backbone
    native_size: tuple[int, int] = NATIVE_SIZE
    size_multiple: int = 1  # image sides must be multiples of this (RT-DETR's FPN concatenates strided maps)
    # RT-DETR takes its decoder queries as the top-k of the encoder's tokens, so an image needs at least
    # num_queries tokens over these strides; None = queries are learned embeddings (any size works).
    query_token_strides: tuple[int, ...] | None = None
    num_queries: int = 300  # the transformers configs' default for every family here


VARIANTS = {
    v.name: v
    for v in (
        _Variant("detr_resnet50", "detr", "DetrConfig", "DetrForObjectDetection", "DetrImageProcessor",
                 "softmax", None, ("stage4",)),
        _Variant("deformable_detr_resnet50", "deformable-detr", "DeformableDetrConfig",
                 "DeformableDetrForObjectDetection", "DeformableDetrImageProcessor", "sigmoid-topk", 100,
                 ("stage2", "stage3", "stage4")),
        _Variant("rtdetr_resnet50", "rt-detr", "RTDetrConfig", "RTDetrForObjectDetection",
                 "RTDetrImageProcessor", "sigmoid-topk", None, None, native_size=(640, 640), size_multiple=32,
                 query_token_strides=(8, 16, 32)),
    )
}


# --- the library, imported lazily ---------------------------------------------------------------------------


def import_transformers(model_name: str) -> Any:
    """transformers (and scipy, which its Hungarian matcher needs); MissingExtraError with the install command."""
    try:
        import scipy.optimize  # noqa: F401, PLC0415
        import transformers  # noqa: PLC0415
    except ImportError as exc:
        raise MissingExtraError(
            f"{model_name} needs the optional extra '{EXTRA}' (transformers, scipy): {INSTALL_COMMAND} ({exc})"
        ) from exc
    return transformers


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def deformable_attention_impl(model: nn.Module) -> str:
    """Which multi-scale deformable attention the built model runs: "none", "pytorch-grid_sample" or a kernel.

    transformers 5.x has no built-in CUDA kernel: MultiScaleDeformableAttention.forward is the pure-PyTorch
    grid_sample path unless the ``kernels`` hub library replaced it (``kernelize``/``use_kernels=True``,
    which downloads and which detbench never does); a replaced forward is named by its module.
    """
    found = set()
    for module in model.modules():
        if type(module).__name__ != "MultiScaleDeformableAttention":
            continue
        forward = getattr(module.forward, "__func__", module.forward)
        origin = getattr(forward, "__module__", None) or "unknown"
        if origin.startswith("transformers.models."):
            found.add("pytorch-grid_sample")
        else:
            found.add(f"kernel:{origin}.{getattr(forward, '__qualname__', '?')}")
    return ",".join(sorted(found)) if found else "none"


# --- the adapter ----------------------------------------------------------------------------------------------


class HFDetrDetector(nn.Module):
    """A transformers DETR-family detector behind a torchvision-like interface.

    forward(images) in eval: images ([B, 3, H, W] in [0, 1], or a list of [3, H, W]) -> list of
    {"boxes" (xyxy pixels), "scores", "labels"} after ``post_process_object_detection`` at ``score_thresh``.
    forward(images, targets) in train: the model's loss (targets: list of {"class_labels", "boxes" cxcywh in 0-1}).
    ImageNet normalisation happens here, as transformers' image processor would do it.
    """

    pixel_mean: torch.Tensor  # buffers, registered in __init__
    pixel_std: torch.Tensor

    def __init__(self, detector: nn.Module, processor: Any, variant: _Variant, score_thresh: float) -> None:
        super().__init__()
        self.detector = detector
        self.processor = processor
        self.variant = variant
        self.score_thresh = float(score_thresh)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def pixel_values(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        batch = torch.stack(list(images)) if isinstance(images, (list, tuple)) else images
        return (batch - self.pixel_mean) / self.pixel_std

    def forward(self, images: torch.Tensor | list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None):
        pixel_values = self.pixel_values(images)
        if self.training:
            if targets is None:
                raise ValueError(f"{self.variant.name}: a training forward needs targets")
            return self.detector(pixel_values=pixel_values, labels=targets).loss
        return self.postprocess(self.detector(pixel_values=pixel_values), pixel_values.shape[-2:])

    def postprocess(self, outputs: Any, image_size: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """(H, W) ``image_size``: the pixel size every image's boxes are scaled to."""
        batch_size = outputs.logits.shape[0]
        sizes = torch.tensor([list(image_size)], device=outputs.logits.device).expand(batch_size, 2)
        kwargs = {} if self.variant.top_k is None else {"top_k": self.variant.top_k}
        return self.processor.post_process_object_detection(
            outputs, threshold=self.score_thresh, target_sizes=sizes, **kwargs
        )

    def candidate_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """[B, K] scores the post-processing thresholds, computed as the library's post-processing does."""
        if self.variant.scoring == "softmax":
            return logits.softmax(-1)[..., :-1].max(-1).values
        scores = logits.sigmoid().flatten(1)
        top_k = logits.shape[1] if self.variant.top_k is None else min(self.variant.top_k, scores.shape[1])
        return scores.topk(top_k, dim=1).values

    @property
    def runtime_notes(self) -> dict[str, Any]:
        """Facts only the built model knows (for the result's config)."""
        return {
            "deformable_attention": deformable_attention_impl(self.detector),
            "transformers_version": _package_version("transformers"),
            "score_thresh": self.score_thresh,
        }


# --- build, inputs, targets, loss, calibration ------------------------------------------------------------


def build_detector(variant: _Variant, weights_path: str | None = None) -> HFDetrDetector:
    """Random-initialised ``variant`` from its config; nothing is downloaded (explicit HF ResNet backbone)."""
    transformers = import_transformers(variant.name)
    kwargs: dict[str, Any] = {"num_labels": NUM_LABELS, "use_pretrained_backbone": False}
    if variant.backbone_out_features is not None:
        # An explicit backbone_config keeps transformers from resolving a backbone name (timm or the Hub).
        kwargs["backbone_config"] = transformers.ResNetConfig(out_features=list(variant.backbone_out_features))
    config = getattr(transformers, variant.config_class)(**kwargs)
    detector = getattr(transformers, variant.model_class)(config)
    load_local_weights(detector, weights_path, variant.name)
    processor = getattr(transformers, variant.processor_class)()
    return HFDetrDetector(detector, processor, variant, DEFAULT_SCORE_THRESH)


def check_image_size(variant: _Variant, model: nn.Module | None, image_size: tuple[int, int]) -> None:
    """The DETR family runs any size as given; RT-DETR needs multiples of 32 and at least ``num_queries``
    encoder tokens (a clear one-line error otherwise, not an index error deep inside the model)."""
    if any(side % variant.size_multiple for side in image_size):
        raise ValueError(
            f"{variant.name} image sides must be multiples of {variant.size_multiple}, got {tuple(image_size)}"
        )
    if variant.query_token_strides is None:
        return
    config = getattr(getattr(model, "detector", None), "config", None)  # the built model's, where there is one
    strides = tuple(getattr(config, "feat_strides", variant.query_token_strides))
    queries = int(getattr(config, "num_queries", variant.num_queries))
    tokens = encoder_tokens(image_size, strides)
    if tokens < queries:
        side = variant.size_multiple
        while encoder_tokens((side, side), strides) < queries:
            side += variant.size_multiple
        raise ValueError(
            f"{variant.name} selects its {queries} queries from the encoder's tokens, and "
            f"{image_size[0]}x{image_size[1]} gives only {tokens} (strides {'/'.join(map(str, strides))}); "
            f"use at least {side}x{side}"
        )


def encoder_tokens(image_size: tuple[int, int], strides: tuple[int, ...]) -> int:
    """Tokens of the flattened feature maps at these strides (ceil, as strided convolutions with padding)."""
    height, width = image_size
    return sum(math.ceil(height / s) * math.ceil(width / s) for s in strides)


def make_detr_targets(
    batch_size: int, image_size: tuple[int, int], device: torch.device, generator: torch.Generator
) -> list[dict[str, torch.Tensor]]:
    """The torchvision detectors' synthetic boxes as transformers wants them: class_labels, cxcywh in [0, 1]."""
    height, width = image_size
    scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=device)
    targets = []
    for target in make_detection_targets(batch_size, image_size, device, generator, num_classes=NUM_LABELS):
        x1, y1, x2, y2 = (target["boxes"] / scale).unbind(1)
        boxes = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=1)
        targets.append({"class_labels": target["labels"], "boxes": boxes})
    return targets


def detr_training_loss(model: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
    """The transformers model's loss (Hungarian matching + CE/focal, L1 and GIoU terms) of one train forward."""
    loss = model(inputs, targets)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise TypeError("expected a scalar loss: call model.train() before training_loss")
    return loss


def calibrate_detr(
    model: nn.Module, inputs: Any, target_candidates_per_image: int | None = None, *, recalibrate_bn: bool = True
) -> Any:
    """Set the adapter's score threshold so ~target detections per image pass; measure one real pass.

    Same policy as detbench.bench.models.postprocess (score quantile pooled over the batch). There is no NMS: the
    candidates are the post-processing's top-k (Deformable DETR: 100 of queries x classes; RT-DETR: as many
    as queries; DETR: one per query), so candidates and detections are the same count. BatchNorm layers
    (RT-DETR's encoder; DETR/Deformable DETR backbones use FrozenBatchNorm2d) get the inputs' statistics first.
    """
    from detbench.bench.models.postprocess import POLICY, TARGET_TOLERANCE, CountStats, PostprocessLoad  # noqa: PLC0415

    adapter = getattr(model, "_orig_mod", model)
    if not isinstance(adapter, HFDetrDetector):
        raise TypeError(f"calibrate_detr needs an HFDetrDetector, got {type(adapter).__name__}")
    target = DEFAULT_TARGET_DETECTIONS if target_candidates_per_image is None else int(target_candidates_per_image)

    def score() -> tuple[list[torch.Tensor], Any]:
        raw = adapter.detector(pixel_values=adapter.pixel_values(inputs))
        return list(adapter.candidate_scores(raw.logits).unbind(0)), lambda: adapter(inputs)

    scores, threshold, outputs, bn_layers = calibrated_pass(adapter, inputs, target, recalibrate_bn, score)
    available = [int(s.numel()) for s in scores]
    passed = counts_above(scores, threshold)
    return PostprocessLoad(
        policy=POLICY,
        head=f"transformers {adapter.variant.processor_class}.post_process_object_detection (no NMS)",
        target_candidates_per_image=target,
        score_thresh=threshold,
        default_score_thresh=DEFAULT_SCORE_THRESH,
        nms_thresh=NO_NMS_IOU,
        detections_per_img=max(available),
        topk_candidates=adapter.variant.top_k,
        available_candidates_per_image=CountStats.of(available),
        default_candidates_per_image=CountStats.of(counts_above(scores, DEFAULT_SCORE_THRESH)),
        candidates_per_image=CountStats.of(passed),
        detections_per_image=CountStats.of(count_detections(outputs)),
        target_reached=target_reached(passed, target, TARGET_TOLERANCE),
        calibration_batch_size=len(scores),
        batchnorm_layers_recalibrated=bn_layers,
    )


def _detr_spec(variant: _Variant) -> ModelSpec:
    def build(weights_path: str | None = None) -> nn.Module:
        return build_detector(variant, weights_path)

    notes = {
        "source": f"transformers.{variant.model_class}({variant.config_class}(num_labels={NUM_LABELS}, ...))",
        "transformers_version": _package_version("transformers"),
        "init": "random init from the config, no from_pretrained; backbone: transformers ResNet-50 "
        + ("(RT-DETR's ResNet-50-vd)" if variant.backbone_out_features is None else
           f"out_features={list(variant.backbone_out_features)}")
        + ", FrozenBatchNorm2d, stem and first stage frozen as transformers builds it",
        "transform": "ImageNet mean/std normalisation in the adapter; no resize or padding (images run at the "
        "given size, no pixel_mask: all pixels valid)",
        "postprocess": f"{variant.processor_class}.post_process_object_detection: "
        + ("softmax, best non-'no object' class per query" if variant.scoring == "softmax" else
           f"sigmoid, top-{variant.top_k or 'num_queries'} of queries x classes")
        + "; score threshold calibrated by ModelSpec.calibrate; no NMS",
        "deformable_attention": "none" if variant.family == "detr" else (
            "pure-PyTorch grid_sample (transformers 5.x MultiScaleDeformableAttention; its CUDA kernel comes only "
            "from the `kernels` hub library, never loaded here); the built adapter's runtime_notes says what ran"),
        "flops": "FlopCounterMode has no formula for grid_sample: deformable sampling is not counted"
        if variant.family != "detr" else "all matmuls and convolutions counted",
        "targets": "4-8 random boxes per image as class_labels + normalised cxcywh",
        "use_hub_kernels_env": os.environ.get("USE_HUB_KERNELS", "unset"),
        "kernels_library": "installed" if importlib.util.find_spec("kernels") else "not installed",
    }
    return ModelSpec(
        name=variant.name,
        family=variant.family,
        task="detection",
        native_size=variant.native_size,
        build=build,
        make_inputs=make_pixel_batch,
        make_targets=make_detr_targets,
        training_loss=detr_training_loss,
        extra=EXTRA,
        notes=notes,
        set_image_size=partial(check_image_size, variant),
        count_detections=count_detections,
        calibrate=calibrate_detr,
    )


# --- the registry entries: one per variant ------------------------------------------------------------------

for _name, _variant in VARIANTS.items():
    register_model(_name)(partial(_detr_spec, _variant))
