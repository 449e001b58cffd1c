"""One benchmark run: the matrix's cells, run one by one through the launcher, journalled and displayed.

The pytest face (bench/conftest.py) owns one :class:`BenchRun`; this module holds the logic so it can
be used without pytest too (``BenchRun(...).run(cell)``).
"""

from __future__ import annotations

from typing import Callable

from bench import matrix, timing
from bench.journal import Journal
from bench.launch import launch
from bench.options import RunOptions
from bench.schema import Cell, CellResult

Display = Callable[[object], None]


class BenchRun:
    """Runs cells, fills what only the run knows (skip reasons, break-even vs the eager twin, the
    environment), appends each result to the journal and keeps them in order for the summary."""

    def __init__(self, options: RunOptions, capabilities: matrix.Capabilities, cells: list[Cell],
                 journal: Journal | None = None, display: Display | None = None,
                 environment: dict | None = None) -> None:
        self.options = options
        self.capabilities = capabilities
        self.cells = cells
        self.journal = journal
        self.display = display
        self.environment = environment
        self.results: dict[str, CellResult] = {}

    def run(self, cell: Cell) -> CellResult:
        index = self.cells.index(cell) + 1 if cell in self.cells else len(self.results) + 1
        total = max(len(self.cells), index)
        reason = matrix.skip_reason(cell, self.capabilities)
        if reason is not None:
            result = CellResult(cell, status="skipped", reason=reason,
                                config={"options": self.options.to_dict(), "profile": self.options.profile})
        else:
            if self.display:
                from bench.progress import start_line  # noqa: PLC0415

                self.display(start_line(cell.id, index, total, self.options.isolation))
            result = launch(cell, self.options)
        self._fill_break_even(result)
        if result.environment is None:
            result.environment = self.environment
        self.results[cell.id] = result
        if self.journal is not None:
            self.journal.append(result)
        if self.display:
            from bench.progress import result_line  # noqa: PLC0415

            self.display(result_line(result, index, total))
        return result

    def _fill_break_even(self, result: CellResult) -> None:
        cell = result.cell
        if cell.compile != "compiled" or result.status != "ok" or result.latency is None:
            return
        twin = self.results.get(matrix.eager_twin(cell).id)
        if twin is None or twin.status != "ok" or twin.latency is None:
            result.config["break_even"] = "eager twin not measured in this run"
            return
        result.break_even_iterations = timing.break_even_iterations(
            result.compile_s, twin.latency.median_ms, result.latency.median_ms)
        result.config["break_even"] = (
            f"compile_s / (eager median {twin.latency.median_ms:.3f} ms - compiled median "
            f"{result.latency.median_ms:.3f} ms)"
            + ("" if result.break_even_iterations is not None else ": compiled is not faster, never pays off"))
