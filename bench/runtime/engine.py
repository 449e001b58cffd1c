"""Measure one group of cells (same model, image size and GPU count) in one process, interleaved.

Every cell is set up once through :class:`~detbench.bench.runtime.session.CellSession`; then the rounds visit the
set-up cells in rotating order, one block of about ``block_s`` seconds each, so that variants are compared
under the same host conditions (host-bound detector cells move 10-60 % with the host). An OOM drops only its
cell; a sticky CUDA error ends the group (:class:`~detbench.bench.runtime.failures.WorkerMustEnd`), as a crash would.
Every step is an event (detbench.bench.runtime.protocol): a ``phase`` before each set-up and block, the cell's
``result`` so far after each (status ``partial`` until its last round: set-up figures first, then every block),
so a process that dies loses nothing it measured. ``prior`` hands in partial results of a cut worker: each such
cell is set up the same way again and times only the rounds it lacks (``--detbench-resume``, or a fresh attempt
after a worker was killed from outside).

A :class:`Team` says how the group's processes work together: :class:`Solo` (one process: the process and
inline launchers) or the ranks of a torchrun job (detbench.bench.runtime.rank), which warm up together, agree on each
block's iteration count, start every block at a barrier and gather their figures on rank 0. The rounds are
the same either way, so multi-GPU cells get paired ratios too.
"""

from __future__ import annotations

import time

import torch

from detbench.bench.core.groups import rotation
from detbench.bench.core.options import RunOptions
from detbench.bench.core.schema import Cell, CellResult
from detbench.bench.runtime import faults
from detbench.bench.runtime.build import GroupShared, ModelWrapper
from detbench.bench.runtime.device import freeze_startup_objects, release_memory
from detbench.bench.runtime.failures import WorkerMustEnd, classify_failure, is_sticky_cuda_error
from detbench.bench.runtime.protocol import EventLog
from detbench.bench.runtime.session import CellSession


class Team:
    """How the processes measuring a group work together; :class:`Solo` is one process on its own."""

    warm_up_alone = True  # each session warms up in its own set-up (ranks warm up together instead)
    exact_blocks = False  # a block runs exactly its iterations (ranks: DDP steps must match)

    def options_for(self, cell: Cell, options: RunOptions) -> RunOptions:
        return options

    def wrapper_for(self, cell: Cell) -> ModelWrapper | None:
        return None

    def warm_up(self, session: CellSession) -> None:
        """After set-up, when sessions do not warm up alone."""

    def on_failure(self, exc: Exception) -> None:
        """A cell failed: raise to end the process instead of recording it (ranks: a rank that went on alone
        would wait forever in the next collective; torchrun stops the others and the launcher records why)."""

    def block_iterations(self, planned: list[int]) -> list[int]:
        """The iterations each cell's blocks run (ranks: the most any rank planned)."""
        return planned

    def before_block(self) -> None:
        """Just before every block (ranks: a barrier)."""

    def results(self, sessions: list[CellSession], results: dict[str, CellResult]) -> dict[str, CellResult]:
        """The group's results once every round ran (ranks: gathered on rank 0, none elsewhere)."""
        return results


class Solo(Team):
    """One process measures the group."""


def measure_group(cells: list[Cell], options: RunOptions, device: torch.device, *, events: EventLog | None = None,
                  team: Team | None = None, prior: dict[str, CellResult] | None = None) -> list[CellResult]:
    """Set every cell up, time them in interleaved rounds, return one result per cell (in ``cells`` order).

    ``prior``: cell id -> a partial result of an earlier worker; its blocks are kept and only the rounds it
    lacks are timed. Raises :class:`WorkerMustEnd` after recording a sticky CUDA error; everything else is a
    result."""
    freeze_startup_objects()
    events = events or EventLog(None)
    team = team or Solo()
    prior = prior or {}
    policy = options.rounds_policy(device.type)
    results: dict[str, CellResult] = {}
    ready: list[CellSession] = []
    shared = GroupShared()
    compiled_alive = False
    for cell in cells:
        events.phase(cell.id, "set-up")
        session = CellSession(cell, team.options_for(cell, options), device, wrap_model=team.wrapper_for(cell),
                              shared=shared, reset_dynamo=not compiled_alive, warm_up=team.warm_up_alone)
        try:
            session.set_up()
            if not team.warm_up_alone:
                events.phase(cell.id, "warm-up")
                team.warm_up(session)
        except Exception as exc:  # noqa: BLE001 - recorded as the cell's result; the group goes on
            team.on_failure(exc)
            _fail(session, exc, "set-up", results, events)
            continue
        compiled_alive = compiled_alive or cell.compiled
        if cell.id in prior:
            session.adopt(prior[cell.id])
        ready.append(session)
        events.result(progress(session.result(), policy.rounds), final=False)  # the set-up figures, now
    iterations = team.block_iterations([s.iterations_for(policy.block_s, policy.min_block_iterations)
                                        for s in ready])
    origin = time.perf_counter()
    for session in ready:  # block start offsets count from the group's first block
        session.origin_s = origin
    alive = [True] * len(ready)
    for round_index in range(policy.rounds):
        for index in rotation(len(ready), round_index):
            if not alive[index] or round_index in ready[index].rounds_done:
                continue
            session = ready[index]
            events.phase(session.cell.id, f"round {round_index}")
            try:
                team.before_block()
                session.time_block(iterations[index], round_index=round_index,
                                   telemetry=round_index == policy.rounds - 1, exact=team.exact_blocks)
            except Exception as exc:  # noqa: BLE001 - e.g. OOM once another variant holds memory: the rest go on
                team.on_failure(exc)
                alive[index] = False
                _fail(session, exc, "timing", results, events)
                continue
            events.result(progress(session.result(), policy.rounds), final=False)
            faults.witness(session.cell.id, round_index)  # test-only, see bench/runtime/faults.py
    for session, ok in zip(ready, alive):
        if ok:
            results[session.cell.id] = progress(session.result(), policy.rounds)
    results = team.results([s for s, ok in zip(ready, alive) if ok], results)
    for session in ready:
        session.close()
    release_memory(device)
    ordered = [results[c.id] for c in cells if c.id in results]
    for result in ordered:
        events.result(result, final=True)
    events.phase(None, "done")
    return ordered


def progress(result: CellResult, planned_rounds: int) -> CellResult:
    """``result`` with its planned rounds stated, and ``partial`` (with how far it got) while it has fewer."""
    if result.status == "error" and not result.times_ms and result.reason == "set up but never timed":
        result.status, result.reason = "partial", f"set up; 0 of {planned_rounds} rounds timed"
    if result.measurement is not None:
        result.measurement.planned_rounds = planned_rounds
        if result.status == "ok" and result.measurement.rounds < planned_rounds:
            result.status = "partial"
            result.reason = f"{result.measurement.rounds} of {planned_rounds} rounds timed"
    return result


def _fail(session: CellSession, exc: Exception, phase: str, results: dict[str, CellResult],
          events: EventLog) -> None:
    cell = session.cell
    result = classify_failure(cell, exc, session.device, phase=phase)
    result.config = session.config
    results[cell.id] = result
    events.result(result, final=True)
    session.close()
    release_memory(session.device)
    if result.status == "error" and is_sticky_cuda_error(exc):
        raise WorkerMustEnd(f"{cell.id}: {result.reason}") from exc
