"""The model registry: name -> ModelSpec (a small builder plus input/target makers).

Adding a model is one decorated function returning a :class:`ModelSpec`; see torchvision_detection.py.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn


class UnknownModelError(ValueError):
    """Raised for a model name the registry does not know; the message lists the known ones."""


class MissingExtraError(RuntimeError):
    """A model whose optional dependency is not installed; the message says how to install it."""


class Calibrate(Protocol):
    """A ModelSpec's ``calibrate``: sets and measures a detector's post-processing load (see ModelSpec)."""

    def __call__(self, model: nn.Module, inputs: Any, target_candidates_per_image: int | None, /, *,
                 recalibrate_bn: bool = ...) -> Any: ...


@dataclass(frozen=True)
class ModelSpec:
    """How to build, feed and train one model. Callables take plain arguments, no global state.

    build(weights_path) -> nn.Module, random-initialised unless a local weights file is given (never downloads).
    make_inputs(batch_size, (H, W), device, generator) -> what model(...) takes in eval mode
        (a list of [3, H, W] tensors for torchvision detectors, a [B, 3, H, W] tensor for classifiers).
    make_targets(batch_size, (H, W), device, generator) -> synthetic training targets.
    training_loss(model, inputs, targets) -> scalar loss tensor of one training forward (model in train mode).
    set_image_size(model, (H, W)) -> None: makes the model process exactly (H, W) images (torchvision
        detectors resize inside their ``transform``); None = the model takes any size as given.
        ``build`` already applies ``native_size``; use :func:`configure_size` for another size.
    count_detections(outputs) -> detections per image of one eval forward; None for non-detectors.
    notes: plain facts about the configuration (transform, thresholds, norm layers), recorded with results.
    calibrate(model, inputs, target_candidates_per_image | None, *, recalibrate_bn) ->
        detbench.bench.models.postprocess.PostprocessLoad: sets and measures the post-processing load of a detector
        whose post-processing detbench.bench.models.postprocess does not know (DETR family, YOLO); None =
        detbench.bench.models.postprocess.calibrate_postprocess handles it.
    """

    name: str
    family: str
    task: str  # "detection" | "classification"
    native_size: tuple[int, int]  # (height, width)
    build: Callable[[str | None], nn.Module]
    make_inputs: Callable[[int, tuple[int, int], torch.device, torch.Generator], Any]
    make_targets: Callable[[int, tuple[int, int], torch.device, torch.Generator], Any]
    training_loss: Callable[[nn.Module, Any, Any], torch.Tensor]
    extra: str | None = None  # optional-dependency extra, e.g. "detr"; None = core
    notes: dict[str, Any] = field(default_factory=dict)
    set_image_size: Callable[[nn.Module, tuple[int, int]], None] | None = None
    count_detections: Callable[[Any], list[int]] | None = None
    calibrate: Calibrate | None = None

    @property
    def is_detector(self) -> bool:
        return self.task == "detection"


def configure_size(model: nn.Module, spec: ModelSpec, image_size: tuple[int, int] | None) -> tuple[int, int]:
    """Make ``model`` process ``image_size`` (H, W) as given (None = native); returns the size in effect."""
    size = spec.native_size if image_size is None else (int(image_size[0]), int(image_size[1]))
    if len(size) != 2 or min(size) < 32:
        raise ValueError(f"image_size must be (height, width) with both >= 32, got {image_size!r}")
    if spec.set_image_size is not None:
        spec.set_image_size(model, size)
    return size


_REGISTRY: dict[str, Callable[[], ModelSpec]] = {}


def register_model(name: str) -> Callable[[Callable[[], ModelSpec]], Callable[[], ModelSpec]]:
    """Decorator: register a zero-argument function that returns the ModelSpec for ``name``."""

    def decorate(fn: Callable[[], ModelSpec]) -> Callable[[], ModelSpec]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return decorate


def list_models() -> list[str]:
    """Every registered model name, sorted."""
    _load_builtin_models()
    return sorted(_REGISTRY)


def get_model(name: str) -> ModelSpec:
    """The ModelSpec for ``name``; UnknownModelError names the valid choices. A name a model module registered
    (``--model-modules``) does not load the built-in models (and torchvision with them)."""
    if name not in _REGISTRY:
        _load_builtin_models()
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; valid: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]()


# The built-in models register themselves like any plugin module (--model-modules): importing a module runs its
# @register_model decorators. Named here, imported on first use: the registry knows no builder module, so builders
# can import the registry, and listing the models costs nothing until it is asked for.
BUILTIN_MODULES = ("detbench.bench.models.builtin",)


def _load_builtin_models() -> None:
    for name in BUILTIN_MODULES:
        importlib.import_module(name)
