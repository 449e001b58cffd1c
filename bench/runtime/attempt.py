"""The launcher interface: what one attempt at a group of cells hands back (detbench.bench.runtime.launch runs the
attempts; detbench.bench.runtime.torchrun is one launcher among them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from detbench.bench.core.options import RunOptions
from detbench.bench.core.schema import Cell, CellResult
from detbench.bench.runtime.protocol import GroupProgress


@dataclass
class AttemptFailure:
    """Why an attempt ended before every cell had a final result."""

    status: str  # "error" | "oom" | "timeout"
    reason: str
    output_tail: str | None = None
    returncode: int | None = None
    details: dict[str, Any] = field(default_factory=dict)  # recorded in the failed cell's config
    cut: bool = False  # ended from outside (a signal it was sent): no cell failed, partial cells are continued


@dataclass
class Attempt:
    """What one attempt at a group left behind."""

    progress: GroupProgress
    failure: AttemptFailure | None  # None: the engine finished the group
    wall_s: float
    reached_cells: bool  # the attempt got past start-up into a cell (else a retry would fail the same way)
    facts: dict[str, Any] = field(default_factory=dict)  # the launcher's own record (command, pids ...)


class Launcher(Protocol):
    """One attempt at a group of cells, wherever it runs."""

    isolation: str  # recorded in every result: inline | model | cell | torchrun
    keeps_partial: bool  # a cell's partial result (rounds so far) is its own figure (not so for a rank's view)
    can_retry: bool  # a fresh attempt can take the rest after a failure

    def attempt(self, cells: list[Cell], options: RunOptions) -> Attempt: ...


ResultListener = Callable[[CellResult], None]  # a cell's result so far, as each of its blocks ends


class ContinuingLauncher(Launcher, Protocol):
    """A launcher whose cells' partial results are their own figures (``keeps_partial``): it forwards each one as
    it arrives (``on_result``) and continues cut cells (``prior``: their partial results; missing rounds only)."""

    def attempt(self, cells: list[Cell], options: RunOptions, *, prior: dict[str, CellResult] | None = None,
                on_result: ResultListener | None = None) -> Attempt: ...
