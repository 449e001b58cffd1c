"""One benchmark run: the matrix's cells, measured group by group through the launcher, journalled, displayed.

The pytest face (bench/plugin/plugin.py) owns one :class:`BenchRun`; ``test_cell`` asks it for one cell, and the
first cell of a group measures the whole group (the cells pytest selected), so later cells of the group
return their stored result. With ``--repeats N`` the first cell measures the whole run: every group N times,
the group order rotated per repeat (detbench.bench.core.repeats), a fresh worker per group and repeat; each repeat's
results are journalled as they finish and the repeats of a cell are merged into its one result at the end.
Each cell's result so far reaches the journal as each of its blocks ends (status ``partial``, set-up figures
first), so a cut run (a signal, a dead worker) keeps every finished round; a run stopped by Ctrl-C or SIGTERM
hands its cut cells to the JSON as ``partial``. ``--detbench-resume`` hands finished cells and repeats of an
interrupted run in (not measured again) and its partial ones, which are continued: the same set-up in a fresh
worker, the missing rounds only. Usable without pytest too: ``BenchRun(...).run(cell)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from detbench.bench.core import interrupts, matrix
from detbench.bench.core.groups import group_label
from detbench.bench.core.journal import Journal
from detbench.bench.core.options import RunOptions
from detbench.bench.core.record import latest_lines
from detbench.bench.core.repeats import merge_repeats, repaired_ratios, repeat_order, tag_repeat
from detbench.bench.core.scaling import one_gpu_twin
from detbench.bench.core.schema import MEASURED, Cell, CellResult
from detbench.bench.runtime.launch import run_group


@dataclass(frozen=True)
class RunDisplay:
    """Where a run says what it is doing (the pytest plugin formats these for the terminal)."""

    group: Callable[[str, int, int, int, str], None]  # label, cells in the group, cells done, cells in all, isolation
    result: Callable[[CellResult, int, int], None]  # a cell's result, its number, cells in all


class BenchRun:
    """Runs groups of cells, fills what only the run knows (skip reasons, the environment, why a cell was
    added), appends each result to the journal and keeps them in order for the summary.

    Args:
        cells: every cell this run will be asked for (pytest's selection); groups are formed from these.
        added: ``{cell id: why}`` for cells the run added (the 1-GPU twins of multi-GPU cells).
        resumed: results read from an interrupted run's journal (the last line of each cell and repeat counts):
            ok cells (and, with repeats, ok repeats) among them are taken as they are and copied into this run's
            journal; partial ones are continued (their missing rounds only); the rest are measured again.
    """

    def __init__(self, options: RunOptions, capabilities: matrix.Capabilities, cells: list[Cell],
                 journal: Journal | None = None, display: RunDisplay | None = None,
                 environment: dict | None = None, added: dict[str, str] | None = None,
                 resumed: list[CellResult] | None = None) -> None:
        self.options = options
        self.capabilities = capabilities
        self.cells = cells
        self.journal = journal
        self.display = display
        self.environment = environment
        self.added = added or {}
        self.results: dict[str, CellResult] = {}
        self.repeat_results: dict[str, dict[int, CellResult]] = {}  # cell id -> repeat -> that repeat's result
        self._resumed_cells: dict[str, CellResult] = {}
        self._partial: dict[tuple[str, int | None], CellResult] = {}  # (cell id, repeat) -> a cut result to continue
        self._progress: dict[str, CellResult] = {}  # the group being measured: each cell's latest result so far
        for result in latest_lines(resumed or []):
            if result.status == "partial" and (result.repeat is None) == (options.repeats == 1):
                if result.repeat is None or result.repeat < options.repeats:
                    self._partial[result.cell.id, result.repeat] = result
                continue
            if result.status != "ok":
                continue  # a failed cell or repeat is measured again
            if result.repeat is not None:
                if result.repeat < options.repeats:  # never more repeats than this run's --repeats
                    self.repeat_results.setdefault(result.cell.id, {})[result.repeat] = result
            elif (result.measurement.repeats if result.measurement else 1) == options.repeats:
                self._resumed_cells[result.cell.id] = result
        self._copied: set[tuple[str, int]] = set()

    def run(self, cell: Cell) -> CellResult:
        """The cell's result, measuring its whole group first (every group, with repeats) if not done yet."""
        if cell.id not in self.results:
            if self.options.repeats > 1:
                self.run_repeats(self.cells if cell in self.cells else [*self.cells, cell])
            else:
                group = [c for c in self.cells if c.group_key == cell.group_key and c.id not in self.results]
                self._twins_first(group)
                self.run_group(group if cell in group else [*group, cell])
        return self.results[cell.id]

    def _twins_first(self, group: list[Cell]) -> None:
        """Measure the run's 1-GPU twins of a multi-GPU group before it: they are its scaling references."""
        twins = {one_gpu_twin(c).id for c in group if c.gpus > 1}
        for cell in self.cells:
            if cell.id in twins and cell.id not in self.results:
                self.run(cell)

    def run_group(self, group: list[Cell]) -> list[CellResult]:
        taken = [c for c in group if c.id in self._resumed_cells]
        group = [c for c in group if c.id not in self._resumed_cells]
        out = [self._record(self._resumed_cells[c.id]) for c in taken]  # counted before the group's line
        skipped = self._skipped(group)
        runnable = [c for c in group if c.id not in skipped]
        self._show_group(runnable, len(self.results), max(len(self.cells), len(self.results) + len(group)))
        # 1-GPU groups run first (the matrix orders by GPU count): their results are the scaling references
        baselines = {cid: r for cid, r in self.results.items() if r.cell.gpus == 1}
        measured = {r.cell.id: r for r in self._measure(runnable, None, baselines)} if runnable else {}
        for cell in group:
            out.append(self._record(measured.get(cell.id) or self._not_measured(cell, skipped.get(cell.id))))
        return out

    def run_repeats(self, cells: list[Cell]) -> list[CellResult]:
        """Measure ``cells`` ``options.repeats`` times, group by group, and record one merged result per cell."""
        repeats = self.options.repeats
        pending = [c for c in dict.fromkeys(cells) if c.id not in self.results]
        taken = [c for c in pending if c.id in self._resumed_cells]
        pending = [c for c in pending if c.id not in self._resumed_cells]
        skipped = self._skipped(pending)
        groups: dict[tuple, list[Cell]] = {}
        for cell in pending:
            if cell.id not in skipped:
                groups.setdefault(cell.group_key, []).append(cell)
        # tiers by GPU count, 1 GPU first: repeat r of a multi-GPU cell scales against repeat r of its twin
        tiers: dict[int, list[list[Cell]]] = {}
        for group in groups.values():
            tiers.setdefault(group[0].gpus, []).append(group)
        measuring = [c for g in groups.values() for c in g]
        total = len(measuring) * repeats  # the repeats this run measures or resumes, not the journal's others
        done = sum(len(self.repeat_results.get(c.id, {})) for c in measuring)
        out = [self._record(self._resumed_cells[c.id]) for c in taken]
        try:
            for repeat in range(repeats):
                for gpus in sorted(tiers):
                    for group in repeat_order(tiers[gpus], repeat, repeats):
                        done = self._measure_repeat(group, repeat, done, total)
        except BaseException:
            self._keep_finished(pending)  # stopped (Ctrl-C, SIGTERM): the JSON still gets what was measured
            raise
        merged = self._merged(pending)
        for cell in pending:
            out.append(self._record(merged.get(cell.id) or self._not_measured(cell, skipped.get(cell.id)),
                                    show=False))
        return out

    def _merged(self, cells: list[Cell]) -> dict[str, CellResult]:
        """Each cell's finished repeats merged into one result, ratios paired per repeat; cells without any left out."""
        merged = {c.id: merge_repeats(list(self.repeat_results[c.id].values()))
                  for c in cells if self.repeat_results.get(c.id)}
        repaired_ratios(merged)
        return merged

    def _keep_finished(self, cells: list[Cell]) -> None:
        """A stopped run's cells with finished repeats, merged into the run's results (not the journal, which holds
        every repeat line already, so a resume measures only the missing repeats) and marked as cut short."""
        repeats = self.options.repeats
        for result in self._merged(cells).values():
            counted = sum(r.status == "ok" for r in self.repeat_results.get(result.cell.id, {}).values())
            if counted < repeats:
                result.reason = result.reason or f"run stopped after {counted} of {repeats} repeats"
                result.status = "partial" if result.status in MEASURED else result.status
            self._complete(result)
            self.results[result.cell.id] = result

    def _measure_repeat(self, group: list[Cell], repeat: int, done: int, total: int) -> int:
        """One repeat of one group: the repeats already finished (resumed) are copied, the rest measured."""
        finished = [c for c in group if repeat in self.repeat_results.get(c.id, {})]
        for cell in finished:
            if (cell.id, repeat) not in self._copied and self.journal is not None:
                self.journal.append(self.repeat_results[cell.id][repeat])  # the new journal holds the whole run
            self._copied.add((cell.id, repeat))
        todo = [c for c in group if c not in finished]
        if not todo:
            return done
        self._show_group(todo, done, total, f"repeat {repeat + 1}/{self.options.repeats}")
        baselines = {cid: reps[repeat] for cid, reps in self.repeat_results.items()
                     if repeat in reps and reps[repeat].cell.gpus == 1 and reps[repeat].status == "ok"}
        try:
            measured = {r.cell.id: r for r in self._measure(todo, repeat, baselines)}
        except BaseException:  # stopped: the repeat's cut cells join the finished repeats (see _keep_finished)
            for result in self._progress.values():
                self.repeat_results.setdefault(result.cell.id, {})[repeat] = result
            raise
        for cell in todo:
            result = tag_repeat(measured.get(cell.id) or self._not_measured(cell, None), repeat)
            self._complete(result)
            self._keep(self.repeat_results.setdefault(cell.id, {}), repeat, result)  # a crash keeps this repeat
            self._copied.add((cell.id, repeat))
            done += 1
            self._show_result(result, done, total)
        return done

    def _measure(self, cells: list[Cell], repeat: int | None, baselines: dict[str, CellResult]) -> list[CellResult]:
        """One group (of one repeat): cut cells of a resumed run continued, each block journalled as it ends. When
        stopped (Ctrl-C, SIGTERM) a run without repeats keeps its cut cells as ``partial`` results."""
        prior = {c.id: self._partial[c.id, repeat] for c in cells if (c.id, repeat) in self._partial}
        self._progress = {}
        for result in prior.values():  # the new journal holds the whole run, cut rounds included
            self._journal_progress(result)
        try:
            return run_group(cells, self.options, baselines=baselines, prior=prior,
                             on_result=lambda result: self._journal_progress(tag_repeat(result, repeat)
                                                                             if repeat is not None else result))
        except BaseException:
            if repeat is None:
                for result in self._progress.values():
                    if result.cell.id not in self.results:
                        self.results[result.cell.id] = self._cut(result)
            raise

    def _journal_progress(self, result: CellResult) -> None:
        self._complete(result)
        self._keep(self._progress, result.cell.id, result)  # durable before the next block: a crash keeps this round

    def _keep(self, store: dict[Any, CellResult], key: Any, result: CellResult) -> None:
        """``store[key] = result`` (what the run's JSON is made of) and the result journalled, together: a stop signal
        lands before both or after both, never between (a cut run's JSON and journal hold the same blocks)."""
        with interrupts.whole():
            store[key] = result
            if self.journal is not None:
                self.journal.append(result)

    def _cut(self, result: CellResult) -> CellResult:
        """A cell whose run was stopped before its result was final: partial unless every round was timed."""
        if result.status == "ok" and result.measurement is not None and result.measurement.planned_rounds and \
                result.measurement.rounds < result.measurement.planned_rounds:
            result.status = "partial"
        result.reason = result.reason or "run stopped"
        return result

    def _skipped(self, cells: list[Cell]) -> dict[str, str]:
        return {c.id: reason for c in cells for reason in [matrix.skip_reason(c, self.capabilities)] if reason}

    def _not_measured(self, cell: Cell, reason: str | None) -> CellResult:
        return CellResult(cell, status="skipped", reason=reason or "no result from the launcher",
                          config={"options": self.options.to_dict(), "profile": self.options.profile})

    def _show_group(self, cells: list[Cell], done: int, total: int, note: str = "") -> None:
        if not cells or not self.display:
            return
        label = group_label(cells) + (f" · {note}" if note else "")
        self.display.group(label, len(cells), done, total, self.options.isolation)

    def _show_result(self, result: CellResult, index: int, total: int) -> None:
        if self.display:
            self.display.result(result, index, total)

    def _complete(self, result: CellResult) -> None:
        if result.environment is None:
            result.environment = self.environment
        result.added_reason = result.added_reason or self.added.get(result.cell.id)

    def _record(self, result: CellResult, show: bool = True) -> CellResult:
        self._complete(result)
        self._keep(self.results, result.cell.id, result)
        if show:
            self._show_result(result, len(self.results), max(len(self.cells), len(self.results)))
        return result
