"""The deployment runtimes by name: adding one is a module beside this one and a line here."""

from __future__ import annotations

from detbench.bench.core.schema import RUNTIMES
from detbench.bench.runtime.deploy.aot_inductor import AotInductor
from detbench.bench.runtime.deploy.base import DeployRuntime
from detbench.bench.runtime.deploy.eager import Eager
from detbench.bench.runtime.deploy.onnxruntime import OnnxRuntime
from detbench.bench.runtime.deploy.torchscript import TorchScript

_REGISTRY: dict[str, DeployRuntime] = {r.name: r for r in (Eager(), TorchScript(), OnnxRuntime(), AotInductor())}
assert tuple(_REGISTRY) == RUNTIMES, "detbench.bench.core.schema.RUNTIMES and the registry must name the same runtimes"


def get_runtime(name: str) -> DeployRuntime:
    """The runtime called ``name``; a one-line error names the valid ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown runtime {name!r}; valid: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]
