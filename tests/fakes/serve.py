"""A fake detector for the serving study's end-to-end test (``--model-modules tests.fakes.serve``): every call spins
2 ms (detbench.bench.runtime.serve_loop.busy_wait, no sleep) and returns no detections. With
``DETBENCH_TEST_SERVE_HANG`` naming a file that does not exist yet, the first server process to make its 15th call
creates the file and spins for an hour there: a server that hangs once (the next process finds the file and serves)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detbench.bench.models import ModelSpec, register_model
from detbench.bench.runtime.serve_loop import busy_wait

STEP_S = 0.002
HANG_AT_CALL = 15  # after the server's set-up calls (warm-up and the step's median: 11)


class BusyDetector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.calls += 1
        marker = os.environ.get("DETBENCH_TEST_SERVE_HANG")
        if marker and self.calls == HANG_AT_CALL and not Path(marker).exists():
            Path(marker).touch()
            busy_wait(3600.0)
        busy_wait(STEP_S)
        return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
                for _ in images]


def _inputs(batch: int, size: tuple[int, int], device: torch.device, generator: torch.Generator) -> list[torch.Tensor]:
    return [torch.rand(3, *size, generator=generator) for _ in range(batch)]


def _unused(*args: Any) -> Any:
    raise NotImplementedError("the serving study's fake detector only serves")


@register_model("serve_busy_detector")
def serve_busy_detector() -> ModelSpec:
    return ModelSpec("serve_busy_detector", "test", "detection", (32, 32), lambda weights: BusyDetector(), _inputs,
                     _unused, _unused, count_detections=lambda outputs: [len(o["boxes"]) for o in outputs])
