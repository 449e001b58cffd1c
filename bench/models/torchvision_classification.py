"""torchvision classifiers as reference points (ResNet-50, EfficientNet-B3), random-initialised.

They anchor the matrix to well-known numbers: ResNet-50 at 224x224 is ~4.1 GMACs (~8.2 GFLOPs) per image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from detbench.bench.models.registry import ModelSpec, register_model
from detbench.bench.models.torchvision_detection import load_local_weights

IMAGENET_NUM_CLASSES = 1000


def make_image_batch(
    batch_size: int, image_size: tuple[int, int], device: torch.device, generator: torch.Generator
) -> torch.Tensor:
    """A [B, 3, H, W] float batch in [0, 1] from ``generator`` (made on its device, then moved)."""
    height, width = image_size
    return torch.rand(batch_size, 3, height, width, generator=generator, device=generator.device).to(device)


def make_class_targets(
    batch_size: int, image_size: tuple[int, int], device: torch.device, generator: torch.Generator
) -> torch.Tensor:
    """B class indices in [0, 1000)."""
    del image_size
    labels = torch.randint(0, IMAGENET_NUM_CLASSES, (batch_size,), generator=generator, device=generator.device)
    return labels.to(device)


def classification_loss(model: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
    """Cross entropy of one forward."""
    return nn.functional.cross_entropy(model(inputs), targets)


def _classifier_spec(name: str, family: str, native_size: tuple[int, int]) -> ModelSpec:
    """The spec of ``torchvision.models.<name>``; torchvision is imported here, when a spec is asked for, not when
    the models are listed (torchvision_detection._spec_of says why)."""
    import torchvision  # noqa: PLC0415
    from torchvision import models  # noqa: PLC0415

    builder: Callable[..., nn.Module] = getattr(models, name)

    def build(weights_path: str | None = None) -> nn.Module:
        model = builder(weights=None, num_classes=IMAGENET_NUM_CLASSES)
        return load_local_weights(model, weights_path, name)

    return ModelSpec(
        name=name,
        family=family,
        task="classification",
        native_size=native_size,
        build=build,
        make_inputs=make_image_batch,
        make_targets=make_class_targets,
        training_loss=classification_loss,
        notes={
            "source": f"torchvision.models.{builder.__name__}",
            "torchvision_version": torchvision.__version__,
            "num_classes": IMAGENET_NUM_CLASSES,
            "init": "random init (weights=None)",
            "transform": "none inside the model: the [B,3,H,W] batch is processed as given (adaptive pooling)",
        },
    )


@register_model("resnet50")
def resnet50() -> ModelSpec:
    return _classifier_spec("resnet50", "resnet", (224, 224))


@register_model("efficientnet_b3")
def efficientnet_b3() -> ModelSpec:
    return _classifier_spec("efficientnet_b3", "efficientnet", (300, 300))
