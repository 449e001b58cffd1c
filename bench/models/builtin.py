"""Imports every module that registers models (each one's @register_model runs on import)."""

# imported for registration; the order here is list_models()' order, so it is not sorted (I001).
# hf_detr and yolo need the optional extras 'detr' / 'yolo' only in build (transformers / ultralytics).
from detbench.bench.models import (  # noqa: F401, I001
    torchvision_classification,
    torchvision_detection,
    hf_detr,
    yolo,
)
