"""One benchmark run: the matrix's cells, measured group by group through the launcher, journalled, displayed.

The pytest face (bench/conftest.py) owns one :class:`BenchRun`; ``test_cell`` asks it for one cell, and the
first cell of a group measures the whole group (the cells pytest selected), so later cells of the group
return their stored result. Usable without pytest too: ``BenchRun(...).run(cell)``.
"""

from __future__ import annotations

from typing import Callable

from bench import matrix
from bench.journal import Journal
from bench.launch import run_group
from bench.options import RunOptions
from bench.schema import Cell, CellResult

Display = Callable[[object], None]


class BenchRun:
    """Runs groups of cells, fills what only the run knows (skip reasons, the environment, why a cell was
    added), appends each result to the journal and keeps them in order for the summary.

    Args:
        cells: every cell this run will be asked for (pytest's selection); groups are formed from these.
        added: ``{cell id: why}`` for cells the run added (the 1-GPU twins of multi-GPU cells).
    """

    def __init__(self, options: RunOptions, capabilities: matrix.Capabilities, cells: list[Cell],
                 journal: Journal | None = None, display: Display | None = None,
                 environment: dict | None = None, added: dict[str, str] | None = None) -> None:
        self.options = options
        self.capabilities = capabilities
        self.cells = cells
        self.journal = journal
        self.display = display
        self.environment = environment
        self.added = added or {}
        self.results: dict[str, CellResult] = {}

    def run(self, cell: Cell) -> CellResult:
        """The cell's result, measuring its whole group first if it has not been measured yet."""
        if cell.id not in self.results:
            group = [c for c in self.cells if c.group_key == cell.group_key and c.id not in self.results]
            self.run_group(group if cell in group else [*group, cell])
        return self.results[cell.id]

    def run_group(self, group: list[Cell]) -> list[CellResult]:
        skipped = {c.id: reason for c in group for reason in [matrix.skip_reason(c, self.capabilities)] if reason}
        runnable = [c for c in group if c.id not in skipped]
        if runnable and self.display:
            from bench.engine import group_label  # noqa: PLC0415
            from bench.progress import group_line  # noqa: PLC0415

            self.display(group_line(group_label(runnable), len(runnable), len(self.results), len(self.cells),
                                    self.options.isolation))
        # 1-GPU groups run first (the matrix orders by GPU count): their results are the scaling references
        baselines = {cid: r for cid, r in self.results.items() if r.cell.gpus == 1}
        measured = {r.cell.id: r for r in run_group(runnable, self.options, baselines=baselines)} if runnable else {}
        out = []
        for cell in group:
            result = measured.get(cell.id) or CellResult(
                cell, status="skipped", reason=skipped.get(cell.id) or "no result from the launcher",
                config={"options": self.options.to_dict(), "profile": self.options.profile})
            out.append(self._record(result))
        return out

    def _record(self, result: CellResult) -> CellResult:
        if result.environment is None:
            result.environment = self.environment
        result.added_reason = result.added_reason or self.added.get(result.cell.id)
        self.results[result.cell.id] = result
        if self.journal is not None:
            self.journal.append(result)
        if self.display:
            from bench.progress import result_line  # noqa: PLC0415

            self.display(result_line(result, len(self.results), max(len(self.cells), len(self.results))))
        return result
