"""envcheck test helpers: a Context whose CUDA probe is a canned answer (no child process)."""

from __future__ import annotations

from typing import Any

import pytest

from detbench.envcheck.context import Context
from detbench.envcheck.options import Options

NO_GPU = {"torch_cuda": "13.0", "cuda_available": False, "device_count": 0, "devices": [], "arch_list": [],
          "bf16_supported": False, "mps_available": False, "error": None, "timed_out": False}


def one_gpu(capability: tuple[int, int] = (9, 0), bf16: bool = True) -> dict[str, Any]:
    return {**NO_GPU, "cuda_available": True, "device_count": 1, "bf16_supported": bf16,
            "devices": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "capability": list(capability),
                         "memory_bytes": 80 * 2**30, "uuid": "", "launch_error": None}]}


@pytest.fixture
def make_ctx():
    """``make_ctx(facts=None, **options)``: a Context with a canned probe answer."""

    def make(facts: dict[str, Any] | None = None, **options: Any) -> Context:
        answer = dict(NO_GPU if facts is None else facts)
        return Context(Options(**options), probe=lambda timeout_s: answer)

    return make
