"""Test-only models, registered when this module is imported (``--model-modules tests.bench.tiny_models``).

``tiny_convnet`` is a classifier small enough that a cell runs in well under a second on one CPU core;
the launcher, journal and pytest-face tests use it so they test the machinery, not torchvision's speed.
"""

from __future__ import annotations

import torch
from torch import nn

from detbench.bench.models import ModelSpec, register_model
from detbench.bench.models.registry import MissingExtraError


def _build(weights_path: str | None = None) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10))


def _inputs(batch: int, size: tuple[int, int], device: torch.device, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(batch, 3, *size, generator=generator, device=generator.device).to(device)


def _targets(batch: int, size: tuple[int, int], device: torch.device, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 10, (batch,), generator=generator, device=generator.device).to(device)


def _loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(inputs), targets)


@register_model("tiny_convnet")
def tiny_convnet() -> ModelSpec:
    return ModelSpec("tiny_convnet", "test", "classification", (32, 32), _build, _inputs, _targets, _loss)


@register_model("tiny_needs_extra")
def tiny_needs_extra() -> ModelSpec:
    def build(weights_path: str | None = None) -> nn.Module:
        raise MissingExtraError("tiny_needs_extra needs the 'fake' extra: pip install 'detbench[fake]'")

    return ModelSpec("tiny_needs_extra", "test", "classification", (32, 32), build, _inputs, _targets, _loss,
                     extra="fake")


@register_model("tiny_mlp")
def tiny_mlp() -> ModelSpec:
    """No convolution at all: channels_last does not apply to it."""

    def build(weights_path: str | None = None) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))

    return ModelSpec("tiny_mlp", "test", "classification", (32, 32), build, _inputs, _targets, _loss)
