"""A group of cells (same model, image size and GPU count) is measured by one worker, interleaved: its label,
the visiting order of its rounds, and how its wall time is split over its cells."""

from __future__ import annotations

from collections.abc import Iterable

from detbench.bench.core.schema import Cell, CellResult


def rotation(count: int, round_index: int) -> list[int]:
    """Visiting order for a round: 0..count-1 rotated by the round, so each variant takes every position."""
    start = round_index % count if count else 0
    return [(start + i) % count for i in range(count)]


def group_label(cells: Iterable[Cell]) -> str:
    cell = next(iter(cells))
    size = f"{cell.image_size[0]}x{cell.image_size[1]}" if cell.image_size else "native"
    return f"{cell.model} @ {size} x{cell.gpus} GPU"


def apply_overhead(results: list[CellResult], group_wall_s: float, isolation: str, attempt: int,
                   label: str) -> None:
    """Split the group's wall time over its cells: each cell's own set-up and blocks, plus an even share of
    what belonged to no cell (process start, imports, teardown); overhead = cell wall - timed region."""
    own = sum((r.measurement.setup_wall_s or 0.0) + sum(b.wall_s for b in _own_blocks(r))
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


def _own_blocks(result: CellResult) -> list:
    """The blocks this attempt timed (a continued cell's first blocks came from the worker that was cut)."""
    m = result.measurement
    return m.blocks[m.resumed_rounds:] if m is not None else []
