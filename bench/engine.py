"""Measure one group of cells (same model, image size and GPU count) in one process, interleaved.

Every variant is set up once through :class:`~bench.session.CellSession`; then ``rounds`` rounds visit
the set-up variants in rotating order, one block of about ``block_s`` seconds each, so that variants are
compared under the same host conditions (host-bound detector cells move 10-60 % with the host). An OOM
drops only its variant; a sticky CUDA error ends the group (:class:`WorkerMustEnd`), as a crash would.
Progress is written to ``progress_path`` after every set-up and every block, so a worker that dies
loses nothing it measured (bench.launch reads it back).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench import stats, timing
from bench.options import RunOptions
from bench.schema import Cell, CellResult, PairedRatio
from bench.session import CellSession, GroupShared, ModelWrapper, classify_failure, is_sticky_cuda_error, release_memory


class WorkerMustEnd(RuntimeError):  # noqa: N818 - names what the worker must do; bench/worker.py imports it
    """A failure that leaves this process unusable (sticky CUDA error): the rest goes to a fresh worker."""


def rotation(count: int, round_index: int) -> list[int]:
    """Visiting order for a round: 0..count-1 rotated by the round, so each variant takes every position."""
    start = round_index % count if count else 0
    return [(start + i) % count for i in range(count)]


def group_label(cells: Iterable[Cell]) -> str:
    cell = next(iter(cells))
    size = f"{cell.image_size[0]}x{cell.image_size[1]}" if cell.image_size else "native"
    return f"{cell.model} @ {size} x{cell.gpus} GPU"


def group_cells(cells: Iterable[Cell]) -> list[list[Cell]]:
    """The cells grouped by (model, image size, GPU count), in order of first appearance."""
    groups: dict[Any, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.group_key, []).append(cell)
    return list(groups.values())


@dataclass
class Progress:
    """What a group worker has finished so far; written atomically after every step."""

    path: Path | None
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)  # cell id -> result dict (final or partial)
    current: str | None = None  # cell id being set up or timed
    phase: str | None = None

    def step(self, cell_id: str | None, phase: str | None) -> None:
        self.current, self.phase = cell_id, phase
        self.write()

    def write(self) -> None:
        if self.path is None:
            return
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps({"finished": self.finished, "current": self.current, "phase": self.phase}),
                           encoding="utf-8")
        os.replace(partial, self.path)

    @staticmethod
    def read(path: Path) -> tuple[list[CellResult], str | None, str | None]:
        """(results so far, cell being worked on, its phase) from a progress file; empty when absent."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return [], None, None
        results = [CellResult.from_dict(r, source=f"{path}:{cid}") for cid, r in data.get("finished", {}).items()]
        return results, data.get("current"), data.get("phase")


def measure_group(cells: list[Cell], options: RunOptions, device: torch.device, *,
                  progress_path: Path | None = None, wrap_model: ModelWrapper | None = None) -> list[CellResult]:
    """Set every cell up, time them in interleaved rounds, return one result per cell (in ``cells`` order).

    Raises :class:`WorkerMustEnd` after recording a sticky CUDA error; everything else is a result."""
    progress = Progress(progress_path)
    policy = options.rounds_policy(device.type)
    results: dict[str, CellResult] = {}
    ready: list[CellSession] = []
    shared = GroupShared()
    compiled_alive = False
    for cell in cells:
        progress.step(cell.id, "set-up")
        session = CellSession(cell, options, device, wrap_model=wrap_model, shared=shared,
                              reset_dynamo=not compiled_alive)
        try:
            session.set_up()
        except Exception as exc:  # noqa: BLE001 - recorded as the cell's result; the group goes on
            _fail(session, exc, "set-up", results, progress)
            continue
        compiled_alive = compiled_alive or cell.compiled
        ready.append(session)
    iterations = [s.iterations_for(policy.block_s, policy.min_block_iterations) for s in ready]
    origin = time.perf_counter()
    for session in ready:  # block start offsets count from the group's first block
        session.origin_s = origin
    alive = [True] * len(ready)
    for round_index in range(policy.rounds):
        for index in rotation(len(ready), round_index):
            if not alive[index]:
                continue
            session = ready[index]
            progress.step(session.cell.id, f"round {round_index}")
            try:
                session.time_block(iterations[index], round_index=round_index,
                                   telemetry=round_index == policy.rounds - 1)
            except Exception as exc:  # noqa: BLE001 - e.g. OOM once another variant holds memory: the rest go on
                alive[index] = False
                progress.finished.pop(session.cell.id, None)
                _fail(session, exc, "timing", results, progress)
                continue
            progress.finished[session.cell.id] = session.result().to_dict()
        progress.write()
    for session, ok in zip(ready, alive):
        if ok:
            results[session.cell.id] = session.result()
        session.close()
    release_memory(device)
    progress.step(None, "done")
    return [results[c.id] for c in cells if c.id in results]


def _fail(session: CellSession, exc: Exception, phase: str, results: dict[str, CellResult],
          progress: Progress) -> None:
    cell = session.cell
    result = classify_failure(cell, exc, session.device, phase=phase)
    result.config = session.config
    results[cell.id] = result
    progress.finished[cell.id] = result.to_dict()
    progress.write()
    session.close()
    release_memory(session.device)
    if result.status == "error" and is_sticky_cuda_error(exc):
        raise WorkerMustEnd(f"{cell.id}: {result.reason}") from exc


# --- what only the whole group knows ----------------------------------------------------------------------


def baseline_of(cell: Cell) -> Cell:
    """The group's baseline for ``cell``: eager fp32 at the same mode and batch size."""
    return Cell(cell.model, cell.mode, "eager", "fp32", cell.batch_size, cell.gpus, cell.image_size)


def eager_twin(cell: Cell) -> Cell:
    """The eager cell with the same configuration (precision, memory format, batch ...) as a compiled one."""
    return dataclasses.replace(cell, compile="eager")


def paired_ratio(cell: CellResult, baseline: CellResult) -> PairedRatio | None:
    """Throughput ratio to ``baseline`` per round, median and IQR: blocks of the same (repeat, round) are paired,
    since only those were interleaved with each other (one worker run has a single repeat)."""
    if cell.measurement is None or baseline.measurement is None:
        return None
    base = {(b.repeat, b.round): b.median_ms for b in baseline.measurement.blocks}
    pairs = [base[(b.repeat, b.round)] / b.median_ms for b in cell.measurement.blocks
             if (b.repeat, b.round) in base and b.median_ms > 0]
    if not pairs:
        return None
    ordered = sorted(pairs)
    return PairedRatio(baseline.cell.id, statistics.median(pairs), stats.percentile(ordered, 25),
                       stats.percentile(ordered, 75), [round(p, 6) for p in pairs])


def finish_group(results: list[CellResult]) -> None:
    """Fill what needs the whole group: the paired ratio to the baseline and compile break-even vs eager."""
    by_id = {r.cell.id: r for r in results if r.status == "ok"}
    for result in by_id.values():
        base = by_id.get(baseline_of(result.cell).id)
        result.ratio = paired_ratio(result, base) if base is not None else None
        if not result.cell.compiled or result.latency is None:
            continue
        twin = by_id.get(eager_twin(result.cell).id)
        if twin is None or twin.latency is None:
            result.break_even_basis = "eager twin not measured in this run"
            continue
        result.break_even_iterations = timing.break_even_iterations(
            result.compile_s, twin.latency.median_ms, result.latency.median_ms)
        result.break_even_basis = (
            f"compile_s / (eager median {twin.latency.median_ms:.3f} ms - compiled median "
            f"{result.latency.median_ms:.3f} ms), interleaved in one worker"
            + ("" if result.break_even_iterations is not None else ": compiled is not faster, never pays off"))


def apply_overhead(results: list[CellResult], group_wall_s: float, isolation: str, attempt: int,
                   label: str) -> None:
    """Split the group's wall time over its cells: each cell's own set-up and blocks, plus an even share of
    what belonged to no cell (process start, imports, teardown); overhead = cell wall - timed region."""
    own = sum((r.measurement.setup_wall_s or 0.0) + sum(b.wall_s for b in r.measurement.blocks)
              for r in results if r.measurement is not None)
    share = max(group_wall_s - own, 0.0) / max(len(results), 1)
    for result in results:
        m = result.measurement
        if m is None:
            continue
        m.isolation, m.worker_attempt, m.group, m.group_cells = isolation, attempt, label, len(results)
        m.shared_overhead_s = round(share, 4)
        m.cell_wall_s = round((m.setup_wall_s or 0.0) + sum(b.wall_s for b in m.blocks) + share, 4)
        m.overhead_s = round(m.cell_wall_s - m.timed_s, 4)

