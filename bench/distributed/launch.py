"""Run a group of multi-GPU cells (same GPU count N > 1, same model) under torchrun; failures are results.

``python -m torch.distributed.run --standalone --nproc-per-node N -m bench.distributed.rank REQUEST RESULT``
runs in its own session. Rank 0 appends a ``start`` event before each cell and a ``result`` event after
it; the cell timeout counts from the latest event. When the group times out, or a rank dies (torchrun then
stops the others), every process of the group is killed (torchrun's workers lead their own sessions, so
they are found through /proc and the ranks' status files, not only torchrun's process group), the cell
that was running is recorded as ``timeout`` / ``error`` / ``oom`` naming the rank and its message (from
torchrun's error file, ``@record``), and a fresh group takes the cells that had not started.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from bench.distributed import aggregate
from bench.distributed.options import DistributedOptions
from bench.distributed.rank import PHASES
from bench.distributed.request import GroupRequest
from bench.launch import child_env, describe_exit
from bench.matrix import Capabilities, probe_capabilities, skip_reason
from bench.options import RunOptions
from bench.schema import Cell, CellResult, Failure, SchemaError

POLL_S = 0.2
TAIL_CHARS = 3000
KILL_WAIT_S = 15.0  # how long a SIGKILLed rank may take to tear down before the launcher moves on
_ROOT_CAUSE = re.compile(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", re.DOTALL)
_FAILURE = re.compile(r"rank\s*:\s*(\d+)[^\n]*\n(?:[^\n]*\n)*?\s*exitcode\s*:\s*(-?\d+)")


@dataclass
class AttemptFailure:
    """Why a torchrun attempt ended early."""

    status: str  # "error" | "oom" | "timeout"
    reason: str
    rank: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Attempt:
    """What one torchrun process did: results in order, the cell running when it ended, any failure."""

    results: list[CellResult]
    running: str | None
    failure: AttemptFailure | None
    launcher: dict[str, Any]
    reached_cells: bool  # some rank got past start-up (process group, NCCL init) into a cell


def torchrun_command(nproc: int, request_path: Path, result_path: Path, log_dir: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "--max-restarts", "0", "--log-dir", str(log_dir), "--redirects", "3",
            "-m", "bench.distributed.rank", str(request_path), str(result_path)]


def group_skip_reason(cell: Cell, caps: Capabilities) -> str | None:
    """Why a multi-GPU cell cannot run here: too few GPUs, or what would skip its 1-GPU twin."""
    if caps.cuda_available and cell.gpus > caps.gpu_count:
        return f"needs {cell.gpus} GPUs, {caps.gpu_count} visible"
    return skip_reason(aggregate.one_gpu_twin(cell), caps)


def run_group(cells: list[Cell], options: RunOptions, distributed: DistributedOptions | None = None, *,
              baselines: dict[str, CellResult] | None = None, caps: Capabilities | None = None) -> list[CellResult]:
    """One CellResult per cell, in order; never raises for a cell failure.

    ``baselines`` maps 1-GPU cell ids to their results in this run (the run adds the 1-GPU twin of every multi-GPU
    cell): an ok multi-GPU cell gets its scaling efficiency against its 1-GPU twin.
    """
    distributed = distributed or DistributedOptions()
    _check_group(cells)
    caps = caps or probe_capabilities()
    backend = distributed.resolve_backend(caps.cuda_available)
    results: dict[str, CellResult] = {}
    pending = []
    for cell in cells:
        reason = group_skip_reason(cell, caps)
        if reason:
            results[cell.id] = CellResult(cell, status="skipped", reason=reason, config={"isolation": "torchrun"})
        else:
            pending.append(cell)
    while pending:
        attempt = _attempt(pending, options, distributed)
        for result in attempt.results:
            result.config["launcher"] = attempt.launcher
            results[result.cell.id] = result
        pending = [c for c in pending if c.id not in results]
        if not pending:
            break
        failure = attempt.failure or AttemptFailure("error", "torchrun ended without a result for this cell")
        # the ranks run the cells in order, so the first without a result is the one that failed; a failure
        # before any rank reached a cell (process group, NCCL init) would end every retry the same way
        failed_cells = pending[:1] if attempt.reached_cells else pending
        for cell in failed_cells:
            results[cell.id] = _failed_result(cell, failure, attempt.launcher, backend)
        pending = [c for c in pending if c.id not in results]
    for cell in cells:
        twin = aggregate.one_gpu_twin(cell).id
        if baselines is not None and results[cell.id].status == "ok":
            baseline = baselines.get(twin)
            aggregate.attach_scaling(results[cell.id], baseline, source=_baseline_source(baseline))
    return [results[c.id] for c in cells]


def _baseline_source(baseline: CellResult | None) -> str:
    if baseline is None:
        return "missing"
    if baseline.added_reason:
        return f"added by the run: {baseline.added_reason}"
    return "requested in this run"


def _check_group(cells: list[Cell]) -> None:
    if not cells:
        raise ValueError("run_group needs at least one cell")
    counts, models = sorted({c.gpus for c in cells}), sorted({c.model for c in cells})
    if len(counts) != 1 or counts[0] < 2:
        raise ValueError(
            f"run_group takes cells with one GPU count > 1, got {counts}; run 1-GPU cells with bench.launch")
    if len(models) != 1:
        raise ValueError(f"run_group takes cells of one model, got {', '.join(models)}")


# --- one torchrun process ---------------------------------------------------------------------------------


def _attempt(cells: list[Cell], options: RunOptions, distributed: DistributedOptions) -> Attempt:
    nproc = cells[0].gpus
    with tempfile.TemporaryDirectory(prefix="detbench-group-") as tmp:
        request_path, result_path = Path(tmp, "request.json"), Path(tmp, "result.jsonl")
        log_dir, output_path = Path(tmp, "logs"), Path(tmp, "torchrun.txt")
        GroupRequest(cells, options, distributed).write(request_path)
        command = torchrun_command(nproc, request_path, result_path, log_dir)
        began = time.monotonic()
        with open(output_path, "wb") as output:
            proc = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=child_env(),
                                    start_new_session=True)
            timed_out = _watch(proc, result_path, options.cell_timeout_s)
            statuses = _rank_statuses(result_path)
            killed = _kill_group(proc, [s["pid"] for s in statuses.values() if "pid" in s])
        events = _read_events(result_path)
        results, running = _results(events, cells)
        launcher = {"command": f"torchrun --standalone --nproc-per-node {nproc} -m bench.distributed.rank",
                    "returncode": proc.returncode, "wall_s": round(time.monotonic() - began, 3),
                    "rank_pids": {r: s.get("pid") for r, s in statuses.items()}, "killed_pids": killed}
        failure = None
        if timed_out:
            failure = _timeout_failure(options.cell_timeout_s, statuses, running)
        elif proc.returncode != 0:
            failure = _rank_failure(output_path.read_text(errors="replace"), log_dir, statuses)
        if failure is not None:
            failure.details["output_tail"] = _tail(output_path)
        reached = running is not None or bool(results) or any(
            s.get("phase") not in ("init", "failed") or s.get("cell_id") for s in statuses.values())
        return Attempt(results, running, failure, launcher, reached)


def _watch(proc: subprocess.Popen, result_path: Path, cell_timeout_s: float) -> bool:
    """Wait for torchrun; True when no start/result event came within the cell timeout (a hang)."""
    last_progress, seen = time.monotonic(), 0
    while proc.poll() is None:
        size = result_path.stat().st_size if result_path.exists() else 0
        if size != seen:
            last_progress, seen = time.monotonic(), size
        if time.monotonic() - last_progress > cell_timeout_s:
            return True
        time.sleep(POLL_S)
    return False


def _read_events(result_path: Path) -> list[dict[str, Any]]:
    if not result_path.exists():
        return []
    events = []
    for line in result_path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by a kill: everything before it is whole
    return events


def _results(events: list[dict[str, Any]], cells: list[Cell]) -> tuple[list[CellResult], str | None]:
    """The results written, and the cell that had started without a result (None if none)."""
    by_id = {c.id: c for c in cells}
    results, running = [], None
    for event in events:
        if event.get("event") == "start":
            running = event["cell_id"]
        elif event.get("event") == "result":
            try:
                result = CellResult.from_dict(event["result"], source="torchrun group")
            except SchemaError as exc:
                cell = by_id[cast(str, running)]  # rank 0 writes each cell's "start" event before its "result"
                result = CellResult(cell, status="error", reason=f"unreadable result from rank 0: {exc}")
            results.append(result)
            running = None
    return results, running


def _rank_statuses(result_path: Path) -> dict[int, dict[str, Any]]:
    statuses = {}
    for path in Path(f"{result_path}.ranks").glob("rank*.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        statuses[int(data["rank"])] = data
    return statuses


def _timeout_failure(timeout_s: float, statuses: dict[int, dict[str, Any]], running: str | None) -> AttemptFailure:
    phases = {rank: statuses.get(rank, {}).get("phase", "starting") for rank in range(max(statuses, default=-1) + 1)}
    if not phases:
        return AttemptFailure("timeout", f"killed after the cell timeout of {timeout_s:g} s; no rank reported "
                                  "(torchrun or the ranks' start hung)")
    order = {p: i for i, p in enumerate(PHASES)}
    behind = min(order.get(p, 0) for p in phases.values())
    stuck = [r for r, p in phases.items() if order.get(p, 0) == behind]
    where = ", ".join(f"{r} {p}" for r, p in sorted(phases.items()))
    return AttemptFailure("timeout", f"killed after the cell timeout of {timeout_s:g} s: rank(s) {stuck} stopped in "
                              f"{PHASES[behind]} (phases: {where})", rank=stuck[0], details={"rank_phases": phases})


def _rank_failure(output: str, log_dir: Path, statuses: dict[int, dict[str, Any]]) -> AttemptFailure:
    """The first failed rank as torchrun reports it ("Root Cause"), with its error file's message or its exit."""
    match = _ROOT_CAUSE.search(output)
    errors = _error_files(log_dir)
    if match is None and not errors:
        lines = [line for line in output.strip().splitlines() if line.strip()]
        return AttemptFailure("error", f"torchrun failed: {lines[-1] if lines else 'no output'}")
    rank = int(match.group(1)) if match else min(errors)
    exitcode = int(match.group(2)) if match else None
    # A rank that died with no Python exception (segfault, os._exit, OOM killer) is the cause; ranks that then
    # raised (gloo "connection reset", an NCCL error) are its victims, even when torchrun saw them fail first.
    # SIGTERM (-15) is torchrun stopping the survivors, not a crash.
    crashed = sorted((int(r), int(c)) for r, c in _FAILURE.findall(output) if int(r) not in errors and int(c) != -15)
    if crashed and rank in errors:
        rank, exitcode = crashed[0]
    message = errors.get(rank)
    if message is None:
        stderr_tail = _rank_stderr_tail(log_dir, rank)
        message = (f"process {describe_exit(exitcode).replace(' without writing a result', '')}"
                   if exitcode is not None else "ended")
        message += " with no Python exception (a crash, os._exit or the OOM killer)"
        if stderr_tail:
            message += f"; last stderr line: {stderr_tail}"
    status = "oom" if re.search(r"out of memory|OutOfMemoryError", message, re.IGNORECASE) else "error"
    return AttemptFailure(status, f"rank {rank}: {message}", rank=rank, details={"exitcode": exitcode})


def _error_files(log_dir: Path) -> dict[int, str]:
    """Local rank -> the one-line message of torchrun's error file (``.../attempt_0/<local rank>/error.json``)."""
    found = {}
    for path in log_dir.glob("**/error.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        message = data.get("message")
        text = message.get("message") if isinstance(message, dict) else message
        if text and path.parent.name.isdigit():
            found[int(path.parent.name)] = " ".join(str(text).split())[:1000]
    return found


def _rank_stderr_tail(log_dir: Path, local_rank: int) -> str:
    for path in log_dir.glob(f"**/attempt_*/{local_rank}/stderr.log"):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1][:500]
    return ""


def _failed_result(cell: Cell, failure: AttemptFailure, launcher: dict[str, Any], backend: str) -> CellResult:
    details = dict(failure.details)
    output_tail = details.pop("output_tail", None)
    exitcode = details.pop("exitcode", None)
    config = {"isolation": "torchrun", "backend": backend, "launcher": launcher, "failed_rank": failure.rank, **details}
    return CellResult(cell, status=failure.status, reason=failure.reason, config=config,
                      failure=Failure(phase="torchrun", output_tail=output_tail,
                                      returncode=exitcode if isinstance(exitcode, int) else None))


# --- leaving no process behind ----------------------------------------------------------------------------


def _descendants(root: int) -> list[int]:
    """Every process below ``root`` (from /proc; torchrun's workers lead their own sessions)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _kill_group(proc: subprocess.Popen, rank_pids: list[int]) -> list[int]:
    """SIGKILL torchrun, its workers and anything they started; returns the pids that were still alive.

    After torchrun has exited its orphans are no longer its descendants: the ranks' own pids (checked to
    still be rank processes, never a reused pid) find them."""
    pids = set(_descendants(proc.pid)) | {p for p in rank_pids if p and _is_rank_process(p)}
    alive = [p for p in sorted(pids | {proc.pid}) if is_alive(p)]
    own_group = os.getpgrp()
    for pid in alive:
        try:
            group = os.getpgid(pid)
            if group != own_group:
                os.killpg(group, signal.SIGKILL)  # a worker leads its own session: takes its children too
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
    proc.wait()
    _await_exit(alive, KILL_WAIT_S)
    return [p for p in alive if p != proc.pid]


def _await_exit(pids: list[int], within_s: float) -> None:
    """Wait until SIGKILLed processes are gone: a process holding GBs of CUDA or CPU memory takes a while to
    tear down, and the next cell must not start beside it (nor a caller find it still running)."""
    deadline = time.monotonic() + within_s
    while any(is_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _is_rank_process(pid: int) -> bool:
    try:
        return b"bench.distributed.rank" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def is_alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _tail(path: Path) -> str:
    try:
        return path.read_bytes()[-TAIL_CHARS:].decode("utf-8", errors="replace")
    except OSError:
        return ""
