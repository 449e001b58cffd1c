"""Skip a test whose optional extra is missing, except in CI, where a missing extra must fail, not skip."""

from __future__ import annotations

import importlib
import os

import pytest

EXTRA_MODULES = {"detr": ("transformers", "scipy"), "yolo": ("ultralytics",), "onnxruntime": ("onnx", "onnxruntime"),
                 "serve": ("mlperf_loadgen", "hdrh")}


def require_extra(extra: str) -> None:
    """Import the extra's modules; skip if absent, or raise if DETBENCH_REQUIRE_EXTRAS=1 (CI installs them)."""
    for module in EXTRA_MODULES[extra]:
        if os.environ.get("DETBENCH_REQUIRE_EXTRAS") == "1":
            importlib.import_module(module)  # an ImportError here is a broken install: fail loudly
        else:
            pytest.importorskip(module, reason=f"extra '{extra}' not installed (pip install 'detbench[{extra}]')")
