"""``onnxruntime``: ``torch.onnx.export(dynamo=False)`` (the TorchScript-based exporter; the dynamo one needs
onnxscript), run by ONNX Runtime under its CUDA execution provider where that build is installed and the cell is on a
GPU, else the CPU provider. The optional extras ``onnx`` and ``onnxruntime`` bring them."""

from __future__ import annotations

import importlib.util
import inspect
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils import _pytree

from detbench.bench.runtime.deploy.base import Artifact, NotSupportedError, Runner, first_line

OPSET = 17  # torchvision's detectors export from opset 11; 17 is what current ONNX Runtime releases all run


def _torchscript_exporter() -> dict[str, Any]:
    """``dynamo=False`` where torch.onnx.export has the switch (newer torch defaults to the dynamo exporter)."""
    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


class OnnxRuntime:
    name = "onnxruntime"
    imports: tuple[str, ...] = ("onnxruntime",)  # what a serving process imports before loading

    def unavailable(self) -> str | None:
        missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
        if missing:
            return (f"{' and '.join(missing)} not installed (pip install 'detbench[onnx,onnxruntime]')")
        return None

    def export(self, model: torch.nn.Module, inputs: Any, folder: Path) -> Artifact:
        path = folder / "model.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's TracerWarnings: one per data-dependent Python branch
                torch.onnx.export(model, (inputs,), str(path), opset_version=OPSET, do_constant_folding=True,
                                  **_torchscript_exporter())
        except Exception as exc:  # any exporter failure means this model does not export: recorded, not raised
            raise NotSupportedError(first_line(exc)) from exc
        return Artifact(self.name, path, exported=f"whole model (torch.onnx.export, TorchScript exporter, "
                                                  f"opset {OPSET})")

    def load(self, artifact: Artifact, reference: Any, device: torch.device) -> Runner:
        import onnxruntime as ort  # noqa: PLC0415 - an optional extra

        available = ort.get_available_providers()
        cuda = device.type == "cuda" and "CUDAExecutionProvider" in available
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        # idle intra-op threads sleep instead of spinning: other variants are timed in this process between its calls
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(artifact.path), options, providers=providers)
        artifact.provider = session.get_providers()[0]
        names = [i.name for i in session.get_inputs()]
        leaves, spec = _pytree.tree_flatten(reference)
        outputs = len(session.get_outputs())
        if outputs != len(leaves):
            raise NotSupportedError(f"the ONNX graph gives {outputs} outputs where the model gives {len(leaves)}")

        def run(inputs: Any) -> Any:
            tensors = _pytree.tree_leaves(inputs)
            feed = {name: t.detach().cpu().numpy() for name, t in zip(names, tensors, strict=False)}
            out = session.run(None, feed)
            return _pytree.tree_unflatten([torch.from_numpy(o).to(device) for o in out], spec)

        return run
