"""Today's cell set-up (``bench.runner.prepare`` + ``make_step``) behind the three methods of the engine's
``CellSession`` (``set_up()``, ``time_block(iterations)``, ``result()``), with the model wrapped for DDP.

Only :func:`bench.distributed.rank._prepare_step` builds one; when the engine's ``CellSession`` lands it
takes this class's place and this module goes.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from bench import faults, timing
from bench.options import RunOptions
from bench.postprocess import calibrate_postprocess
from bench.runner import autocast_context, device_name, make_step, prepare, resolved_config
from bench.schema import Cell, CellResult

WrapModel = Callable[[torch.nn.Module], Any]


class RunnerSession:
    """One cell on this rank: build, calibrate, wrap, compile, first call; then blocks of timed steps."""

    def __init__(self, cell: Cell, options: RunOptions, device: torch.device, wrap_model: WrapModel) -> None:
        self.cell, self.options, self.device, self.wrap_model = cell, options, device, wrap_model
        self.config: dict[str, Any] = resolved_config(cell, options, device)
        self._step: Callable[[], Any] | None = None
        self._postprocess: dict[str, Any] | None = None
        self._first_call_s: float | None = None
        self._spec: Any = None
        self.last_output: Any = None
        self.timer: str | None = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def set_up(self) -> None:
        cell, device = self.cell, self.device
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = self.options.cudnn_benchmark
        setup_s: dict[str, float] = {}
        self.config["setup_s"] = setup_s
        began = time.perf_counter()
        prepared = prepare(cell, self.options, device)
        setup_s["build_and_inputs"] = time.perf_counter() - began
        self.config.update(image_size=list(prepared.image_size), model_notes=prepared.spec.notes)
        faults.maybe_trigger(cell.id)  # test-only, see bench/faults.py
        if prepared.spec.is_detector and cell.mode == "infer":
            began = time.perf_counter()
            with autocast_context(cell, device):
                load = calibrate_postprocess(prepared.model, prepared.spec, prepared.inputs)
            self._postprocess = load.to_dict() if load is not None else None
            setup_s["postprocess_calibration"] = time.perf_counter() - began
        self.config["flops"] = "not counted in multi-GPU cells (the 1-GPU cell of the same configuration has them)"
        prepared.runnable = self.wrap_model(prepared.model)
        if cell.compile == "compiled":
            prepared.runnable = torch.compile(prepared.runnable, mode=self.options.compile_mode)
        self.config["model_runtime_notes"] = dict(getattr(prepared.model, "runtime_notes", None) or {})
        self._step = make_step(cell, prepared, device)
        self._spec = prepared.spec
        self._first_call_s, _ = timing.time_first_call(self._step, self._sync)

    def time_block(self, iterations: int) -> list[float]:
        """Exactly ``iterations`` steps, each timed (CUDA events on a GPU, perf_counter + sync on the CPU)."""
        exact = timing.MeasurePolicy(min_iterations=iterations, min_s=0.0, max_iterations=iterations, max_s=1e9)
        if self.device.type == "cuda":
            run = timing.measure_cuda_events(self._step, exact, 1.0, self.device)
        else:
            run = timing.measure_perf_counter(self._step, self._sync, exact)
        self.last_output, self.timer = run.last_output, run.timer
        return run.times_ms

    def result(self) -> CellResult:
        """This rank's set-up facts (timing fields are the group's, filled in by the caller)."""
        result = CellResult(self.cell, timer=self.timer, first_call_s=self._first_call_s,
                            device=device_name(self.device), config=self.config)
        result.postprocess = self._postprocess
        if self.cell.mode == "infer" and self._spec.count_detections is not None:
            counts = self._spec.count_detections(self.last_output)
            result.detections_per_image = {"mean": sum(counts) / len(counts), "min": float(min(counts)),
                                           "max": float(max(counts))}
        if self.cell.mode == "train" and self.last_output is not None:
            self.config["final_loss"] = float(self.last_output.detach().float().item())
        return result
