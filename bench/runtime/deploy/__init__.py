"""Deployment runtimes (the cell's ``runtime`` axis): one module each behind :class:`~.base.DeployRuntime`, a
registry by name, and :func:`deploy`, which exports a set-up cell's model, loads the artifact back, measures what
that cost (here and in a fresh process) and checks the outputs against eager FP32."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from detbench.bench.core.schema import RUNTIMES, DeployInfo
from detbench.bench.runtime.deploy import cold, parity
from detbench.bench.runtime.deploy.base import Artifact, DeployRuntime, NotSupportedError, Runner
from detbench.bench.runtime.deploy.registry import get_runtime

__all__ = ["RUNTIMES", "Artifact", "DeployRuntime", "Deployed", "NotSupportedError", "deploy", "get_runtime"]

@dataclass
class Deployed:
    """A loaded artifact ready to serve, what deploying it cost, and its folder (removed with this object)."""

    runner: Runner
    info: DeployInfo
    artifact: Artifact
    folder: tempfile.TemporaryDirectory[str]


def deploy(model: torch.nn.Module, inputs: Any, runtime_name: str, device: torch.device, *,
           precision: str = "fp32", cold_start: bool = True, cold_timeout_s: float = 600.0) -> Deployed:
    """Export ``model`` (eval mode, its threshold calibrated) on ``runtime_name`` for ``inputs``, load it back, run
    it once against an eager FP32 forward of the same inputs (parity) and, with ``cold_start``, load and call it in a
    fresh process. Raises NotSupportedError (the exporter's first error line) when the runtime cannot take it."""
    runtime = get_runtime(runtime_name)
    missing = runtime.unavailable()
    if missing:
        raise NotSupportedError(missing)
    with torch.no_grad():
        reference = model(inputs)  # eager FP32: the runtime's outputs must match these
    folder = tempfile.TemporaryDirectory(prefix=f"detbench-{runtime_name}-")
    began = time.perf_counter()
    with torch.no_grad():
        artifact = runtime.export(model, inputs, Path(folder.name))
    export_s = time.perf_counter() - began
    began = time.perf_counter()
    runner = runtime.load(artifact, reference, device)
    load_s = time.perf_counter() - began
    with torch.no_grad():
        outputs = runner(inputs)
    info = DeployInfo(runtime=runtime_name, provider=artifact.provider, exported=artifact.exported,
                      export_s=round(export_s, 4), artifact_bytes=artifact.size_bytes, load_s=round(load_s, 4),
                      parity=parity.compare(reference, outputs, precision), notes=dict(artifact.notes))
    if cold_start:
        measured = cold.measure(artifact, inputs, reference, device, timeout_s=cold_timeout_s)
        info.cold_start_s, info.cold_import_s = measured.cold_start_s, measured.import_s
        info.cold_start_method, info.serving_peak_rss_bytes = measured.method, measured.peak_rss_bytes
    return Deployed(runner, info, artifact, folder)
