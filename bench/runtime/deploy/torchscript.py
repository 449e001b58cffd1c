"""``torchscript``: ``torch.jit.script`` (not trace: detectors branch on data), saved and loaded with torch.jit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from detbench.bench.runtime.deploy.base import Artifact, NotSupportedError, Runner, first_line


class TorchScript:
    name = "torchscript"
    imports: tuple[str, ...] = ()  # what a serving process imports before loading

    def unavailable(self) -> str | None:
        return None if hasattr(torch.jit, "script") else "torch.jit.script is not in this torch"

    def export(self, model: torch.nn.Module, inputs: Any, folder: Path) -> Artifact:
        try:
            scripted = torch.jit.script(model)
        except Exception as exc:  # any scripting failure means this model is not scriptable: recorded, not raised
            raise NotSupportedError(first_line(exc)) from exc
        path = folder / "model.torchscript.pt"
        torch.jit.save(scripted, str(path))
        return Artifact(self.name, path, exported="whole model (torch.jit.script)")

    def load(self, artifact: Artifact, reference: Any, device: torch.device) -> Runner:
        module = torch.jit.load(str(artifact.path), map_location=device)
        module.eval()

        def run(inputs: Any) -> Any:
            out = module(inputs)
            # scripted torchvision detectors return (losses, detections) in eval mode too
            if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], dict) and isinstance(reference, list):
                return out[1]
            return out

        return run
