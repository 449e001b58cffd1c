"""Where a group of cells runs: one launcher interface, one retry loop, one supervisor.

A :class:`Launcher` makes one *attempt* at a group: it runs the engine (detbench.bench.runtime.engine) somewhere and
hands back what the engine's events said (detbench.bench.runtime.protocol) and, when the attempt ended early, why.
:func:`run_group` is the same for every launcher: cells with a final result are done; the cell that was
running when an attempt crashed, hung or hit a sticky CUDA error is recorded as ``error`` / ``timeout`` /
``oom`` with the output tail; a fresh attempt takes the rest (so each crash costs one cell at most) and continues
the cells the failed one left ``partial`` (their missing rounds only; a worker ended from outside costs no cell);
then the group's paired ratios and compile break-even are filled in, the same for one GPU and for N. Each cell's
result so far is handed to ``on_result`` as each block ends (the run journals it), where the launcher keeps partial
figures (not torchrun's: rank 0's view is not the group's).

- :class:`InlineLauncher` (``--isolation inline``, the default on a CPU): the engine in this process.
- :class:`ProcessLauncher` (``model``, the default on a GPU: a worker per group; ``cell``: a worker per cell):
  ``python -m detbench.bench.runtime.worker`` under :class:`detbench.envcheck.isolate.Supervisor`.
- :class:`detbench.bench.runtime.torchrun.TorchrunLauncher`: groups of more than one GPU, one rank per GPU.

Child processes get the user's environment as it is (plus detbench importable): a setting a machine needs
(NCCL's, say) is the user's to make.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from detbench.bench.core.groups import apply_overhead, group_label
from detbench.bench.core.options import RunOptions, import_model_modules
from detbench.bench.core.ratios import finish_group
from detbench.bench.core.scaling import attach_scaling, one_gpu_twin
from detbench.bench.core.schema import Cell, CellResult, Failure, SchemaError
from detbench.bench.runtime.attempt import Attempt, AttemptFailure, ContinuingLauncher, Launcher, ResultListener
from detbench.bench.runtime.batch_search import isolated_probe, search_cell
from detbench.bench.runtime.protocol import EventLog, EventTail, GroupProgress
from detbench.bench.runtime.request import GroupRequest
from detbench.bench.runtime.torchrun import TorchrunLauncher
from detbench.envcheck.isolate import Supervisor, child_env, python_module, scratch_dir


class InlineLauncher:
    """The engine in this process: no isolation, so a sticky CUDA error ends the rest of the group. On the CPU the
    process's address space is capped at what the host has available (detbench.bench.runtime.device.host_memory_cap), so
    a cell too large for the host fails to allocate (``oom``) and the group goes on."""

    isolation = "inline"
    keeps_partial = True
    can_retry = False

    def attempt(self, cells: list[Cell], options: RunOptions, *, prior: dict[str, CellResult] | None = None,
                on_result: ResultListener | None = None) -> Attempt:
        from detbench.bench.runtime.device import cell_device, host_memory_cap  # noqa: PLC0415 (imports torch)
        from detbench.bench.runtime.engine import measure_group  # noqa: PLC0415
        from detbench.bench.runtime.failures import WorkerMustEnd, is_out_of_memory, one_line  # noqa: PLC0415

        import_model_modules(options.model_modules)
        began = time.perf_counter()
        device = cell_device()
        with scratch_dir("detbench-group-") as tmp:
            path = Path(tmp, "events.jsonl")
            failure = None
            try:
                with host_memory_cap(device):  # a cell that would exhaust the host is its own oom, not the run's end
                    measure_group(cells, options, device, events=EventLog(path, listener=_forward(on_result)),
                                  prior=prior)
            except WorkerMustEnd as exc:
                failure = AttemptFailure("error", f"not run: the CUDA context became unusable ({exc}); "
                                                  "--isolation model gives the rest a fresh worker")
            except Exception as exc:  # under the cap an allocation can fail outside a cell's own try
                if not is_out_of_memory(exc):
                    raise
                failure = AttemptFailure("oom", f"not run: out of host memory between cells ({one_line(exc)})")
            progress = GroupProgress.read(path)
        return Attempt(progress, failure, time.perf_counter() - began, True)


class ProcessLauncher:
    """A worker process per group (``model``) or per cell (``cell``), supervised: a hang (no event for the cell
    timeout) or a crash ends it, and what it had measured is read back from its events."""

    keeps_partial = True
    can_retry = True

    def __init__(self, isolation: str = "model") -> None:
        self.isolation = isolation

    def attempt(self, cells: list[Cell], options: RunOptions, *, prior: dict[str, CellResult] | None = None,
                on_result: ResultListener | None = None) -> Attempt:
        with scratch_dir("detbench-worker-") as tmp:
            request, events, output = Path(tmp, "request.json"), Path(tmp, "events.jsonl"), Path(tmp, "output.txt")
            GroupRequest(cells, options, prior=list((prior or {}).values())).write(request)
            command = python_module("detbench.bench.runtime.worker", str(request), str(events))
            tail = EventTail(events, _forward(on_result))  # the heartbeat forwards each block as it ends
            try:
                with Supervisor(command, output, env=child_env()) as worker:
                    hung = worker.watch(options.cell_timeout_s, heartbeat=tail.poll)
                    done = worker.finish(hung)
            finally:  # stopped too (Ctrl-C, SIGTERM): what the worker wrote before it was ended is forwarded
                try:
                    tail.poll()
                finally:
                    tail.close()
            progress = GroupProgress.read(events)
        failure = None
        if hung:
            failure = AttemptFailure("timeout", f"killed after {options.cell_timeout_s:g} s without progress "
                                                f"(cell timeout) during {progress.phase or 'start-up'}")
        elif done.returncode != 0 or not progress.done:
            failure = AttemptFailure("oom" if done.oom_killed else "error",
                                     f"worker process {done.describe()} during {progress.phase or 'start-up'}")
            # SIGTERM / SIGKILL that neither the supervisor nor the OOM killer sent: ended from outside (a user, a
            # scheduler), which is no cell's failure: its cells keep their rounds and a fresh worker continues them
            failure.cut = done.returncode in (-signal.SIGTERM, -signal.SIGKILL) and not done.oom_killed
        if failure is not None:
            failure.output_tail, failure.returncode = done.output_tail, done.returncode
        reached = progress.running is not None or bool(progress.results)
        return Attempt(progress, failure, done.wall_s, reached, {"returncode": done.returncode})


def _forward(on_result: ResultListener | None) -> Callable[[dict[str, Any]], None] | None:
    """An event listener handing each non-final result (a block or a set-up just ended) to ``on_result``."""
    if on_result is None:
        return None
    listener = on_result

    def forward(event: dict[str, Any]) -> None:
        if event.get("event") == "result" and not event.get("final"):
            try:
                result = CellResult.from_dict(event.get("result"), source="worker event")
            except SchemaError:
                return  # GroupProgress reports it when the attempt ends
            listener(result)

    return forward


def launcher_for(cells: list[Cell], options: RunOptions) -> Launcher:
    """torchrun for multi-GPU groups, else what ``options.isolation`` says."""
    if cells[0].gpus > 1:
        return TorchrunLauncher()
    if options.isolation == "inline":
        return InlineLauncher()
    return ProcessLauncher(options.isolation)


def run_group(cells: list[Cell], options: RunOptions, *, baselines: dict[str, CellResult] | None = None,
              launcher: Launcher | None = None, prior: dict[str, CellResult] | None = None,
              on_result: ResultListener | None = None) -> list[CellResult]:
    """Measure one group; one result per cell, never raises for a cell failure.

    ``baselines`` (1-GPU cell id -> its result in this run) give multi-GPU cells their scaling efficiency.
    ``prior`` (cell id -> a partial result of a cut run) is continued: the missing rounds only. ``on_result`` gets
    each cell's result so far as each block ends (the run journals it), where the launcher keeps partial figures."""
    cells = list({c.id: c for c in cells}.values())  # a cell listed twice is measured once
    if not cells:
        return []
    # bsmax cells: the largest batch that fits, each probe in a fresh worker (detbench.bench.runtime.batch_search)
    searched = [c for c in cells if c.searches_batch]
    fixed = [c for c in cells if not c.searches_batch]
    results: list[CellResult] = []
    if fixed:
        chosen = launcher or launcher_for(fixed, options)
        if chosen.isolation == "cell":
            results = [r for cell in fixed for r in run_attempts([cell], options, chosen, prior=prior,
                                                                 on_result=on_result)]
        else:
            results = run_attempts(fixed, options, chosen, prior=prior, on_result=on_result)
        finish_group(results)  # paired ratios and break-even: among the cells timed together
        if fixed[0].gpus > 1:
            for result in results:
                if result.status == "ok":
                    _attach_scaling(result, (baselines or {}).get(one_gpu_twin(result.cell).id))
    if searched:
        results += [search_cell(cell, options, isolated_probe(options, run_group)) for cell in searched]
    order = {c.id: i for i, c in enumerate(cells)}
    return sorted(results, key=lambda r: order.get(r.cell.id, len(order)))


def run_attempts(cells: list[Cell], options: RunOptions, launcher: Launcher, *,
                 prior: dict[str, CellResult] | None = None,
                 on_result: ResultListener | None = None) -> list[CellResult]:
    """Attempts until every cell has a result; each crash or hang costs the cell it happened in. Cells an attempt
    left ``partial`` are continued by the next one (their missing rounds only) while attempts still add rounds."""
    results: dict[str, CellResult] = {}
    partial = {cid: r for cid, r in (prior or {}).items() if r.status == "partial"} if launcher.keeps_partial else {}
    remaining = list(cells)
    number = 0
    while remaining:
        number += 1
        if launcher.keeps_partial:
            attempt = cast(ContinuingLauncher, launcher).attempt(
                remaining, options, prior={c.id: partial[c.id] for c in remaining if c.id in partial},
                on_result=on_result)
        else:
            attempt = launcher.attempt(remaining, options)
        got = _results_of(attempt, remaining, launcher)
        if not got and attempt.failure is None:  # no failure and no result: do not loop forever
            got = [CellResult(c, status="error", reason="not run: the worker made no progress") for c in remaining]
        apply_overhead(got, attempt.wall_s, launcher.isolation, number, group_label(remaining))
        grew = False
        for result in got:
            grew = grew or result.status != "partial" or _rounds(result) > _rounds(partial.get(result.cell.id))
            results[result.cell.id] = result
            if result.status == "partial":
                partial[result.cell.id] = result
        go_on = attempt.failure is not None and launcher.can_retry and grew
        remaining = [c for c in remaining if c.id not in results or (go_on and results[c.id].status == "partial")]
        if remaining and attempt.failure is not None and not launcher.can_retry:
            for cell in remaining:
                results[cell.id] = _failed(cell, attempt.failure, launcher, attempt.facts)
            remaining = []
    return [results[c.id] for c in cells]


def _rounds(result: CellResult | None) -> int:
    return result.measurement.rounds if result is not None and result.measurement is not None else -1


def _results_of(attempt: Attempt, cells: list[Cell], launcher: Launcher) -> list[CellResult]:
    """The attempt's results for ``cells``: final ones, partial ones where the launcher keeps them, and a
    failure result for the cell that was running when the attempt ended early."""
    progress, failure = attempt.progress, attempt.failure
    wanted = {c.id for c in cells}
    keep = [r for cid, r in progress.results.items()
            if cid in wanted and (cid in progress.final or (failure is not None and launcher.keeps_partial))]
    if failure is None or (failure.cut and keep):  # cut from outside: the running cell keeps its rounds too
        return keep
    running = progress.running
    recorded = next((r for r in keep if r.cell.id == running and running in progress.final), None)
    if recorded is not None and recorded.status != "ok":  # the worker recorded why it ended (sticky error)
        recorded.failure = recorded.failure or Failure(phase="worker")
        recorded.failure.output_tail, recorded.failure.returncode = failure.output_tail, failure.returncode
        return keep
    keep = [r for r in keep if r.cell.id != running]  # a partial figure of the cell that failed is not kept
    failing = next((c for c in cells if c.id == running), None)
    if failing is not None:
        return [*keep, _failed(failing, failure, launcher, attempt.facts)]
    if not keep and not attempt.reached_cells:  # died before its first cell: every cell fails with it
        return [_failed(c, failure, launcher, attempt.facts) for c in cells]
    if not keep:
        first = next(c for c in cells)
        return [_failed(first, failure, launcher, attempt.facts)]
    return keep


def _failed(cell: Cell, failure: AttemptFailure, launcher: Launcher, facts: dict[str, Any]) -> CellResult:
    config: dict[str, Any] = {"isolation": launcher.isolation, **failure.details}
    if facts:
        config["launcher"] = facts
    return CellResult(cell, status=failure.status, reason=failure.reason, config=config,
                      failure=Failure(phase=launcher.isolation if launcher.isolation == "torchrun" else "worker",
                                      output_tail=failure.output_tail, returncode=failure.returncode))


def _attach_scaling(result: CellResult, baseline: CellResult | None) -> None:
    if baseline is None:
        source = "missing"
    elif baseline.added_reason:
        source = f"added by the run: {baseline.added_reason}"
    else:
        source = "requested in this run"
    attach_scaling(result, baseline, source=source)
