"""Where a group of cells runs: the one launcher of the suite.

- ``model`` (default on GPU): one worker process per group (same model, image size and GPU count), which
  sets every variant up once and times them interleaved (bench.engine). A crash, a sticky CUDA error or
  a hang (no progress for ``cell_timeout_s``) ends the worker: the variant it was working on is recorded
  as ``error``/``timeout`` with the output tail, what it had measured is read back from its progress
  file, and a fresh worker takes the rest of the group.
- ``cell``: the same, one worker per cell (version 1's process per cell).
- ``inline`` (default on CPU): the same engine in this process.
Groups with more than one GPU go to ``bench.distributed.run_group`` when that module is installed.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.engine import Progress, WorkerMustEnd, apply_overhead, finish_group, group_label, measure_group
from bench.options import RunOptions, import_model_modules
from bench.schema import Cell, CellResult, Failure, SchemaError
from envcheck.checks.nccl import MULTICAST_OFF

OUTPUT_TAIL_CHARS = 3000
POLL_S = 0.1
REPO_ROOT = Path(__file__).resolve().parents[1]
# NVLink multicast stays off in every child on the lent multi-GPU machines
CHILD_ENV = {**MULTICAST_OFF, "PYTHONUNBUFFERED": "1"}
DISTRIBUTED_MISSING = "multi-GPU cells are not implemented yet (gpus > 1): bench.distributed is not installed"


def run_group(cells: list[Cell], options: RunOptions, *,
              baselines: dict[str, CellResult] | None = None) -> list[CellResult]:
    """Measure one group as ``options.isolation`` says; one result per cell, never raises for a cell failure.

    ``baselines`` (1-GPU cell id -> its result in this run) give multi-GPU cells their scaling efficiency."""
    cells = list({c.id: c for c in cells}.values())  # a cell listed twice is measured once
    if not cells:
        return []
    if cells[0].gpus > 1:
        return _distributed(cells, options, baselines or {})
    # bsmax cells: the largest batch that fits, each probe in a fresh worker (bench.batch_search)
    searched = [c for c in cells if c.searches_batch]
    fixed = [c for c in cells if not c.searches_batch]
    if not fixed:
        results = []
    elif options.isolation == "inline":
        results = _inline(fixed, options)
    elif options.isolation == "cell":
        results = [r for cell in fixed for r in _in_workers([cell], options)]
    else:
        results = _in_workers(fixed, options)
    finish_group(results)  # paired ratios and break-even: among the cells timed together, never the searches
    if searched:
        from bench.batch_search import search_cell  # noqa: PLC0415

        results += [search_cell(cell, options) for cell in searched]
    order = {c.id: i for i, c in enumerate(cells)}
    return sorted(results, key=lambda r: order.get(r.cell.id, len(order)))


def child_env() -> dict[str, str]:
    """The environment every child process of the suite runs with."""
    env = {**os.environ, **CHILD_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def _distributed(cells: list[Cell], options: RunOptions, baselines: dict[str, CellResult]) -> list[CellResult]:
    if importlib.util.find_spec("bench.distributed") is None:
        return [CellResult(c, status="skipped", reason=DISTRIBUTED_MISSING) for c in cells]
    module = importlib.import_module("bench.distributed")
    return list(module.run_group(cells, options, baselines=baselines))


def _inline(cells: list[Cell], options: RunOptions) -> list[CellResult]:
    from bench.session import cell_device  # noqa: PLC0415 (imports torch)

    import_model_modules(options.model_modules)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="detbench-group-") as tmp:
        progress = Path(tmp, "progress.json")
        try:
            results = measure_group(cells, options, cell_device(), progress_path=progress)
        except WorkerMustEnd as exc:  # in this process nothing fresh can take over: say so per cell
            results, _, _ = Progress.read(progress)
            done = {r.cell.id for r in results}
            reason = (f"not run: the CUDA context became unusable ({exc}); "
                      "--isolation model gives the rest a fresh worker")
            results += [CellResult(c, status="error", reason=reason) for c in cells if c.id not in done]
    apply_overhead(results, time.perf_counter() - began, "inline", 1, group_label(cells))
    return results


def _in_workers(cells: list[Cell], options: RunOptions) -> list[CellResult]:
    """Workers for ``cells`` until every cell has a result; each crash or hang costs one cell at most."""
    results: dict[str, CellResult] = {}
    remaining = list(cells)
    attempt = 0
    while remaining:
        attempt += 1
        got = _one_worker(remaining, options, attempt)
        if not any(r.cell.id in {c.id for c in remaining} for r in got):  # no progress: do not loop forever
            got += [CellResult(c, status="error", reason="not run: the worker made no progress") for c in remaining]
        for result in got:
            results[result.cell.id] = result
        remaining = [c for c in remaining if c.id not in results]
    return [results[c.id] for c in cells]


def _one_worker(cells: list[Cell], options: RunOptions, attempt: int) -> list[CellResult]:
    label = group_label(cells)
    with tempfile.TemporaryDirectory(prefix="detbench-worker-") as tmp:
        request, progress, result_path, output = (Path(tmp, n) for n in
                                                  ("request.json", "progress.json", "result.json", "output.txt"))
        request.write_text(json.dumps({"cells": [c.to_dict() for c in cells], "options": options.to_dict()}),
                           encoding="utf-8")
        command = [sys.executable, "-m", "bench.worker", str(request), str(progress), str(result_path)]
        began = time.perf_counter()
        with open(output, "wb") as sink:
            child = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=child_env(),
                                     start_new_session=True)
            try:
                returncode, hung = _wait(child, progress, options.cell_timeout_s)
            except BaseException:  # interrupted (Ctrl-C, SIGTERM): the worker must not outlive us
                kill_group(child)
                raise
        wall = time.perf_counter() - began
        tail = _tail(output)
        if returncode == 0 and not hung and result_path.exists():
            try:
                data = json.loads(result_path.read_text(encoding="utf-8"))
                results = [CellResult.from_dict(r, source=f"worker result {i}") for i, r in enumerate(data)]
            except (ValueError, SchemaError) as exc:
                results = [_worker_failure(c, "error", f"unreadable result from the worker: {exc}", tail, returncode)
                           for c in cells]
            apply_overhead(results, wall, options.isolation, attempt, label)
            return results
        results, current, phase = Progress.read(progress)
        recorded = next((r for r in results if r.cell.id == current), None)
        if recorded is not None and recorded.status != "ok":  # the worker recorded why it ended (sticky error)
            recorded.failure = recorded.failure or Failure(phase="worker")
            recorded.failure.output_tail, recorded.failure.returncode = tail, returncode
            current = None
        results = [r for r in results if r.cell.id != current]
        if hung:
            status, why = "timeout", (f"killed after {options.cell_timeout_s:g} s without progress "
                                      f"(cell timeout) during {phase or 'start-up'}")
        else:
            status, why = "error", f"worker process {describe_exit(returncode)} during {phase or 'start-up'}"
        failing = next((c for c in cells if c.id == current), None)
        if failing is not None and not any(r.cell.id == failing.id for r in results):
            results.append(_worker_failure(failing, status, why, tail, returncode))
        elif failing is None and not results:  # died before its first step: every cell fails with it
            results = [_worker_failure(c, status, why, tail, returncode) for c in cells]
        apply_overhead(results, wall, options.isolation, attempt, label)
        return results


def _wait(child: subprocess.Popen, progress: Path, timeout_s: float) -> tuple[int, bool]:
    """Wait for the worker; kill it (and its process group) when its progress file is older than ``timeout_s``."""
    last = time.time()
    while True:
        code = child.poll()
        if code is not None:
            return code, False
        with contextlib.suppress(FileNotFoundError):
            last = max(last, progress.stat().st_mtime)
        if time.time() - last > timeout_s:
            kill_group(child)
            return child.returncode if child.returncode is not None else -signal.SIGKILL, True
        time.sleep(POLL_S)


def _worker_failure(cell: Cell, status: str, reason: str, tail: str, returncode: int | None) -> CellResult:
    return CellResult(cell, status=status, reason=reason,
                      failure=Failure(phase="worker", output_tail=tail, returncode=returncode))


def describe_exit(returncode: int) -> str:
    """'died of SIGSEGV (signal 11)' or 'exited with code 3'."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "an unknown signal"
        return f"died of {name} (signal {-returncode})"
    return f"exited with code {returncode}"


def kill_group(child: subprocess.Popen) -> None:
    """Kill the child and anything it started (it leads its own session); reap it."""
    with contextlib.suppress(ProcessLookupError):  # it ended between the check and the kill
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-OUTPUT_TAIL_CHARS:].decode("utf-8", errors="replace")
