"""A long-lived A/B side: ``python -m detbench.bench.runtime.side`` (also inside ``docker run -i IMAGE ...``).

It builds each cell once (the same :class:`~detbench.bench.runtime.session.CellSession` set-up as the matrix) and then
times blocks on command, so a coordinator (``detbench-ab``) can alternate short blocks between a baseline and a
candidate side, the device held by one side at a time. Commands come on stdin, one JSON object a line; every
answer is one event on stdout (detbench.bench.runtime.protocol), so the protocol goes through ``docker run -i``
unchanged:

- on start: ``hello`` (protocol version, pid, the environment fingerprint);
- ``{"cmd": "setup", "cells": [...], "options": {...}, "warmup_iterations": N}``: one ``ready`` (with the set-up
  seconds, of which build and post-processing calibration, the calibrated post-processing and whether it was
  ``calibrated`` here or ``cached``: read from the calibration cache, ``DETBENCH_CALIBRATION_CACHE``, that
  another side of the same software wrote) or one final
  ``result`` (the set-up failed: skipped, oom, error) per cell, then ``ok``. Each cell is warmed up by a fixed
  ``N`` untimed iterations right after its set-up (the sides set up at the same time: a warm-up until stable
  would neither converge nor say what one side alone runs at);
- ``{"cmd": "thresholds", "cell": ID, "postprocess": {...}}``: run the cell at another side's calibrated score
  threshold (every side of a gate runs the same post-processing); ``ok`` with ``applied``;
- ``{"cmd": "probe", "cell": ID, "iterations": N}``: N untimed-as-a-block iterations; ``ok`` with their median
  (ms), which sizes the blocks;
- ``{"cmd": "pin", "cpus": [2, 3]}``: every thread of this process onto these CPUs; ``ok`` with the CPUs;
- ``{"cmd": "block", "cell": ID, "round": R, "iterations": N}``: one timed block of exactly N iterations; ``block``
  with its record and the iterations' times, or a final ``result`` when the cell failed (it is then dropped);
- ``{"cmd": "result", "cell": ID}``: the cell's result so far (final ``result``);
- ``{"cmd": "quit"}``: exit 0. End of input does the same.

A command the side cannot read or does not know is answered with ``error``; a sticky CUDA error ends the
process (exit 75) after its ``result`` is written: the coordinator records the side as dead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
from typing import Any, TextIO

from detbench.bench.runtime.worker import EXIT_STICKY  # one exit code for a process ended by a sticky CUDA error


def pin_threads(cpus: set[int]) -> list[int]:
    """Every thread of this process onto ``cpus`` (Linux: a thread's affinity is its own, so each is set)."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except (OSError, ValueError):
            continue  # a thread that ended meanwhile
    return sorted(os.sched_getaffinity(0))


class SideWorker:
    """The cells of one side, set up once, timed on command."""

    def __init__(self, out: TextIO) -> None:
        from detbench.bench.runtime.device import cell_device  # noqa: PLC0415 (imports torch)
        from detbench.bench.runtime.protocol import EventLog  # noqa: PLC0415

        self.events = EventLog(out)
        self.device = cell_device()
        self.sessions: dict[str, Any] = {}  # cell id -> CellSession

    def hello(self) -> None:
        from detbench.bench.runtime.protocol import PROTOCOL_VERSION  # noqa: PLC0415
        from detbench.envcheck.fingerprint import collect  # noqa: PLC0415

        free = None
        if self.device.type == "cuda":
            import torch  # noqa: PLC0415

            free = int(torch.cuda.mem_get_info(self.device)[0])
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        # what sizes the gate's worker pairs: the device's free memory, else the CPUs this side may use
        self.events.emit("hello", protocol=PROTOCOL_VERSION, pid=os.getpid(), environment=collect(), cpus=cpus,
                         free_bytes=free)

    def handle(self, command: dict[str, Any]) -> bool:
        """Answer one command; False when the side should end."""
        verb = command.get("cmd")
        if verb == "quit":
            return False
        if verb == "setup":
            self.setup(command["cells"], command["options"], int(command.get("warmup_iterations", 0)))
        elif verb == "pin":
            self.events.emit("ok", cpus=pin_threads({int(c) for c in command["cpus"]}))
        elif verb == "block":
            self.block(str(command["cell"]), int(command["round"]), int(command["iterations"]))
        elif verb == "probe":
            self.probe(str(command["cell"]), int(command["iterations"]))
        elif verb == "thresholds":
            self.thresholds(str(command["cell"]), command["postprocess"])
        elif verb == "result":
            session = self.sessions.get(str(command["cell"]))
            if session is None:
                self.events.emit("error", message=f"no cell {command['cell']!r} is set up on this side")
            else:
                self.events.result(session.result(), final=True)
        else:
            self.events.emit("error", message=f"unknown command {verb!r}; valid: setup, thresholds, probe, pin, "
                                              "block, result, quit")
        return True

    def setup(self, cells: list[dict[str, Any]], options_dict: dict[str, Any], warmup_iterations: int = 0) -> None:
        from detbench.bench.core.options import RunOptions, import_model_modules  # noqa: PLC0415
        from detbench.bench.core.schema import Cell  # noqa: PLC0415
        from detbench.bench.runtime.build import GroupShared  # noqa: PLC0415
        from detbench.bench.runtime.failures import classify_failure, is_sticky_cuda_error  # noqa: PLC0415
        from detbench.bench.runtime.session import CellSession  # noqa: PLC0415

        options = RunOptions.from_dict(options_dict)
        import_model_modules(options.model_modules)
        if self.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            import torch  # noqa: PLC0415

            # the gate's sides share the cores (every pair on them at once while setting up, and a neighbour's
            # work): OpenMP threads that spin waiting for each other would time the other processes instead
            torch.set_num_threads(1)
        shared: dict[Any, GroupShared] = {}
        compiled_alive: set[Any] = set()
        for data in cells:
            cell = Cell.from_dict(data)
            group = shared.setdefault(cell.group_key, GroupShared())
            session = CellSession(cell, options, self.device, shared=group, reset_dynamo=not compiled_alive,
                                  warm_up=False)
            try:
                session.set_up()
            except Exception as exc:  # noqa: BLE001 - the cell's result; the side goes on
                result = classify_failure(cell, exc, self.device)
                result.config = session.config
                self.events.result(result, final=True)
                session.close()
                if result.status == "error" and is_sticky_cuda_error(exc):
                    sys.exit(EXIT_STICKY)
                continue
            if cell.compiled:
                compiled_alive.add(cell.group_key)
            self.sessions[cell.id] = session
            if warmup_iterations > 0:
                session.time_steps(warmup_iterations)
            times = session.setup
            # "calibrated" here, or read from the run's calibration cache (another side of the same software
            # calibrated it: detbench-ab's leader), or None (nothing to calibrate: a classifier)
            calibration = None if session.postprocess is None else (
                "cached" if str(session.config.get("postprocess_calibration", "")).startswith("cached")
                else "calibrated")
            self.events.emit("ready", cell=cell.id, setup_s=round(times.total_s or 0.0, 3),
                             build_s=round(times.build_s or 0.0, 3),
                             calibration_s=round(times.postprocess_calibration_s or 0.0, 3),
                             calibration=calibration, postprocess=session.postprocess)
        self.events.emit("ok", cells=len(self.sessions))

    def probe(self, cell_id: str, iterations: int) -> None:
        session = self.sessions.get(cell_id)
        if session is None:
            self.events.emit("error", message=f"no cell {cell_id!r} is set up on this side")
            return
        times = session.time_steps(max(1, iterations))
        self.events.emit("ok", cell=cell_id, iterations=len(times), median_ms=statistics.median(times))

    def thresholds(self, cell_id: str, postprocess: dict[str, Any]) -> None:
        from detbench.bench.models.postprocess import PostprocessLoad, apply_score_thresh  # noqa: PLC0415

        session = self.sessions.get(cell_id)
        if session is None or session.prepared is None:
            self.events.emit("error", message=f"no cell {cell_id!r} is set up on this side")
            return
        load = PostprocessLoad.from_dict(postprocess)
        try:
            apply_score_thresh(session.prepared.model, load)
        except ValueError:  # no torchvision thresholds (a classifier, a detector with its own): nothing to share
            self.events.emit("ok", cell=cell_id, applied=False)
            return
        session.threshold = load  # re-applied before every block (a shared model's variants take turns)
        self.events.emit("ok", cell=cell_id, applied=True, score_thresh=load.score_thresh)

    def block(self, cell_id: str, round_index: int, iterations: int) -> None:
        from detbench.bench.runtime.failures import classify_failure, is_sticky_cuda_error  # noqa: PLC0415

        session = self.sessions.get(cell_id)
        if session is None:
            self.events.emit("error", message=f"no cell {cell_id!r} is set up on this side")
            return
        try:
            session.time_block(iterations, round_index=round_index, exact=True)  # the same work on both sides
        except Exception as exc:  # noqa: BLE001 - the cell's result; the side goes on without it
            result = classify_failure(session.cell, exc, self.device, phase="timing")
            result.config = session.config
            self.events.result(result, final=True)
            self.sessions.pop(cell_id).close()
            if result.status == "error" and is_sticky_cuda_error(exc):
                sys.exit(EXIT_STICKY)
            return
        block = session.blocks[-1]
        self.events.emit("block", cell=cell_id, block=dataclasses.asdict(block),
                         times_ms=[round(t, 6) for t in session.times_ms[-block.iterations:]])


def main(argv: list[str] | None = None) -> int:
    if argv:
        print("usage: python -m detbench.bench.runtime.side  (commands on stdin, events on stdout; see its docstring)",
              file=sys.stderr)
        return 2
    # the events own stdout: anything else printed (a library's warning) goes to stderr
    out, sys.stdout = sys.stdout, sys.stderr
    side = SideWorker(out)
    side.hello()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            command = json.loads(line)
            if not isinstance(command, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            side.events.emit("error", message=f"unreadable command ({exc}): {line.strip()[:200]}")
            continue
        try:
            if not side.handle(command):
                break
        except (KeyError, TypeError, ValueError) as exc:
            side.events.emit("error", message=f"bad {command.get('cmd')!r} command: {type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
