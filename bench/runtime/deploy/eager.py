"""``eager``: the model as built, pickled whole (``torch.save(model)``), loaded back with ``torch.load``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from detbench.bench.runtime.deploy.base import Artifact, Runner, load_eager, save_eager


class Eager:
    name = "eager"
    imports: tuple[str, ...] = ()  # what a serving process imports before loading

    def unavailable(self) -> str | None:
        return None

    def export(self, model: torch.nn.Module, inputs: Any, folder: Path) -> Artifact:
        path = save_eager(model, folder / "model.pt")
        return Artifact(self.name, path, exported="whole model (pickled nn.Module, torch.save)", eager_path=path)

    def load(self, artifact: Artifact, reference: Any, device: torch.device) -> Runner:
        return load_eager(artifact, device)
