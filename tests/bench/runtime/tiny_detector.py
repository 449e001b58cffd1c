"""Test-only detectors (``--model-modules tests.bench.runtime.tiny_detector``): a torchvision RetinaNet small enough
to export on every deployment runtime in seconds on one CPU core, and a twin torch.jit.script refuses."""

from __future__ import annotations

from typing import Any

from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator

from detbench.bench.models import ModelSpec, register_model
from detbench.bench.models.torchvision_detection import _detector_spec

SIZE = (64, 64)


def _backbone() -> nn.Module:
    body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1))
    body.out_channels = 8  # type: ignore[assignment]
    return body


def tiny_retinanet_model(num_classes: int = 4, **_: Any) -> RetinaNet:
    """RetinaNet on a 3-convolution backbone (one 8x8 feature map at 64x64), 6 anchors a location. The
    classification head's weights are drawn wider than torchvision's (std 0.3, not 0.01) and its bias is 0 (not the
    0.01 prior), so random weights give spread scores: no ties for the top-k to break arbitrarily."""
    anchors = AnchorGenerator(sizes=((16, 32),), aspect_ratios=((0.5, 1.0, 2.0),))
    model = RetinaNet(_backbone(), num_classes, min_size=SIZE[0], max_size=SIZE[1], anchor_generator=anchors,
                      detections_per_img=30, topk_candidates=200)
    for layer in model.head.classification_head.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, std=0.3)
    nn.init.zeros_(model.head.classification_head.cls_logits.bias)
    return model


class _VarargsRetinaNet(RetinaNet):
    """Takes ``*extra`` arguments: torch.jit.script cannot compile a variadic forward."""

    def forward(self, images, *extra):  # type: ignore[no-untyped-def, override]
        return super().forward(images)


def tiny_varargs_model(num_classes: int = 4, **_: Any) -> RetinaNet:
    model = tiny_retinanet_model(num_classes)
    model.__class__ = _VarargsRetinaNet
    return model


@register_model("tiny_retinanet")
def tiny_retinanet() -> ModelSpec:
    return _detector_spec("tiny_retinanet", "retinanet", tiny_retinanet_model, SIZE, num_classes=4)


@register_model("tiny_retinanet_varargs")
def tiny_retinanet_varargs() -> ModelSpec:
    return _detector_spec("tiny_retinanet_varargs", "retinanet", tiny_varargs_model, SIZE, num_classes=4)
