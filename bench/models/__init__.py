"""Models the suite can benchmark, found by name: ``get_model("retinanet_resnet50_fpn")``."""

from detbench.bench.models.registry import (
    MissingExtraError,
    ModelSpec,
    UnknownModelError,
    get_model,
    list_models,
    register_model,
)

__all__ = ["MissingExtraError", "ModelSpec", "UnknownModelError", "get_model", "list_models", "register_model"]
