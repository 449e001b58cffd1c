"""Imports every module that registers models (each one's @register_model runs on import)."""

from bench.models import torchvision_classification  # noqa: F401
from bench.models import torchvision_detection  # noqa: F401
from bench.models import hf_detr  # noqa: F401  (optional extra 'detr': transformers imported in build)
from bench.models import yolo  # noqa: F401  (optional extra 'yolo': ultralytics imported in build)
