"""The deployment-runtime interface: export a model to an artifact, load it back as a serving process would, run it.

One small module per runtime implements :class:`DeployRuntime` and registers itself in detbench.bench.runtime.deploy;
adding TensorRT or another is one file. Outputs keep the eager model's structure (a list of per-image dicts for
detectors), so post-processing, parity and detection counts read every runtime's outputs the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

Runner = Callable[[Any], Any]  # inputs (as the eager model takes them) -> outputs (as the eager model gives them)


class NotSupportedError(RuntimeError):
    """This runtime cannot take this model (or is missing here); the message is the exporter's first error line."""


@dataclass
class Artifact:
    """What an export left on disk, and how to read it back."""

    runtime: str
    path: Path  # the file (or folder) a deployment ships
    exported: str = "whole model"  # or the split: what was exported and what runs eagerly around it
    provider: str | None = None
    notes: dict[str, str] = field(default_factory=dict)
    # the pickled eager module (torch.save(model)): the eager runtime's artifact, and a split export's parts around
    # its exported pieces
    eager_path: Path | None = None
    pieces: dict[str, str] = field(default_factory=dict)  # submodule path -> its artifact's file name, in ``path``

    @property
    def size_bytes(self) -> int:
        """Bytes on disk: the artifact (a folder: every file in it)."""
        return _bytes(self.path)

    def to_dict(self) -> dict[str, Any]:
        """What a fresh process needs to load it (detbench.bench.runtime.deploy.cold)."""
        return {"runtime": self.runtime, "path": str(self.path), "exported": self.exported,
                "eager_path": str(self.eager_path) if self.eager_path else None, "pieces": dict(self.pieces)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Artifact:
        return cls(data["runtime"], Path(data["path"]), data["exported"],
                   eager_path=Path(data["eager_path"]) if data.get("eager_path") else None, pieces=data["pieces"])


def save_eager(model: torch.nn.Module, path: Path) -> Path:
    """Pickle the whole eager module (weights, BatchNorm statistics, the calibrated thresholds)."""
    torch.save(model, path)
    return path


def load_eager(artifact: Artifact, device: torch.device) -> torch.nn.Module:
    """The pickled eager module of ``artifact``, on ``device``, in eval mode."""
    if artifact.eager_path is None:
        raise ValueError(f"{artifact.runtime} artifact at {artifact.path} holds no eager module")
    model = torch.load(artifact.eager_path, map_location=device, weights_only=False)
    return model.eval()


class DeployRuntime(Protocol):
    """One way of shipping a model."""

    name: str
    imports: tuple[str, ...]  # modules a serving process imports before it loads the artifact (cold start)

    def unavailable(self) -> str | None:
        """Why this runtime cannot run here (a missing extra, a torch too old), or None."""

    def export(self, model: torch.nn.Module, inputs: Any, folder: Path) -> Artifact:
        """Write ``model``'s artifact into ``folder`` for these example ``inputs``; NotSupportedError when it cannot."""

    def load(self, artifact: Artifact, reference: Any, device: torch.device) -> Runner:
        """A runner over the loaded artifact whose outputs have the structure of ``reference`` (an eager output)."""


def first_line(exc: BaseException) -> str:
    """The exporter's first non-empty error line, prefixed by the exception's type (cut at 240 characters: symbolic
    shapes' expressions run to thousands)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= 240 else text[:239] + "…"


def _bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0
