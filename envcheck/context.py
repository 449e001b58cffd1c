"""Shared state of one preflight run: the options and the (cached) CUDA probe every GPU check reads."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from detbench.envcheck import isolate
from detbench.envcheck.options import Options

ProbeFn = Callable[[float], dict[str, Any]]


def no_cuda_facts() -> dict[str, Any] | None:
    """The probe's answer without a child process when CUDA plainly cannot work here, else None."""
    try:
        import torch  # noqa: PLC0415
    except ImportError as exc:
        return {"torch_cuda": None, "cuda_available": False, "device_count": 0, "devices": [], "arch_list": [],
                "bf16_supported": False, "mps_available": False, "timed_out": False,
                "error": f"torch does not import ({exc})"}
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    base: dict[str, Any] = {"torch_cuda": torch.version.cuda, "cuda_available": False, "device_count": 0, "devices": [],
            "arch_list": [], "bf16_supported": False, "mps_available": mps, "error": None, "timed_out": False}
    if torch.version.cuda is None:
        return base  # CPU-only (or ROCm/MPS) build
    if sys.platform.startswith("linux") and not os.path.exists("/dev/nvidiactl"):
        return base  # no NVIDIA driver device node: CUDA cannot initialise
    return None


def run_probe(timeout_s: float) -> dict[str, Any]:
    """Run :mod:`detbench.envcheck.probe` in a child process; a hang or crash becomes an ``error`` entry."""
    fast = no_cuda_facts()
    if fast is not None:
        return fast
    (child,) = isolate.run_children([isolate.python_module("detbench.envcheck.probe")], timeout_s, isolate.child_env())
    if child.timed_out:
        return {"cuda_available": False, "device_count": 0, "devices": [], "timed_out": True,
                "error": f"CUDA initialisation did not finish within {timeout_s:g} s (hung driver or GPU)"}
    try:
        facts = json.loads(child.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"cuda_available": False, "device_count": 0, "devices": [], "timed_out": False,
                "error": f"CUDA probe crashed: {child.last_error_line()}"}
    facts["timed_out"] = False
    return facts


@dataclass
class Context:
    options: Options = field(default_factory=Options)
    probe: ProbeFn = run_probe
    _probe_facts: dict[str, Any] | None = None
    _probe_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def gpu_facts(self) -> dict[str, Any]:
        """The CUDA probe's answer: run once, in a child process, within 90% of the per-check timeout
        (so the visibility check reports the probe's own verdict rather than its runner's timeout).
        A second caller waits for the first probe instead of starting another."""
        with self._probe_lock:
            if self._probe_facts is None:
                self._probe_facts = self.probe(self.options.timeout_s * 0.9)
            return self._probe_facts

    def gpu_unavailable_reason(self) -> str | None:
        """Why GPU checks cannot run, or None when at least one CUDA device initialised."""
        facts = self.gpu_facts()
        if facts.get("error"):
            return f"CUDA is not usable: {facts['error']}"
        if facts.get("torch_cuda") is None and "torch_cuda" in facts:
            return "torch is a CPU-only build (torch.version.cuda is None)"
        if not facts.get("cuda_available") or not facts.get("device_count"):
            if facts.get("mps_available"):
                return "no NVIDIA GPU (Apple MPS is available; NVIDIA checks do not apply)"
            return "no CUDA GPU visible (torch.cuda.is_available() is False)"
        return None

    @property
    def device_count(self) -> int:
        return 0 if self.gpu_unavailable_reason() else int(self.gpu_facts().get("device_count") or 0)
