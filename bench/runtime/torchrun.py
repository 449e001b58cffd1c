"""The torchrun launcher: a group of multi-GPU cells (same GPU count N > 1, same model), one rank per GPU.

``python -m torch.distributed.run --standalone --nproc-per-node N -m detbench.bench.runtime.rank REQUEST EVENTS`` runs
under the one supervisor (detbench.envcheck.isolate). Rank 0 writes the group's events (detbench.bench.runtime.protocol)
as every process launcher's worker does; the cell timeout counts from the latest. When the group times out, or a
rank dies (torchrun then stops the others), every process of the job is killed (torchrun's workers lead
sessions of their own: they are found through /proc and the ranks' status files), and the cell that was
running is recorded as ``timeout`` / ``error`` / ``oom`` naming the rank and its message (from torchrun's
error file, ``@record``); the launcher's retry loop (detbench.bench.runtime.launch) gives the rest a fresh job.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detbench.bench.core.matrix import Capabilities, probe_capabilities, skip_reason
from detbench.bench.core.options import RunOptions
from detbench.bench.core.scaling import one_gpu_twin
from detbench.bench.core.schema import Cell, CellResult
from detbench.bench.runtime.attempt import Attempt, AttemptFailure
from detbench.bench.runtime.protocol import GroupProgress
from detbench.bench.runtime.rank_status import PHASES, rank_statuses
from detbench.bench.runtime.request import GroupRequest
from detbench.envcheck.isolate import (
    Supervisor,
    child_env,
    command_line,
    describe_exit,
    is_alive,
    oom_kill_count,
    scratch_dir,
)

# What a rank raises when a peer went away: it is that peer's victim, not the cause (gloo's TCP pair, NCCL).
_PEER_LOST = re.compile(r"Connection reset by peer|Connection closed by peer|Broken pipe|remote process exited"
                        r"|ncclRemoteError|NCCL communicator was aborted", re.IGNORECASE)
_OOM_WORDS = r"out of memory|OutOfMemoryError|can't allocate memory|cannot allocate memory|MemoryError"
# One failure of torchrun's summary: its "rank : R (local_rank: L)" line and the "exitcode : C" line right under it.
# Anchored to whole lines: torchrun's log lines ("failed (exitcode: -15) local_rank: 0 ...") are not failures.
_FAILURE = re.compile(r"^[ \t]*rank[ \t]*:[ \t]*(\d+)[^\n]*\n[ \t]*exitcode[ \t]*:[ \t]*(-?\d+)", re.MULTILINE)


def torchrun_command(nproc: int, request_path: Path, result_path: Path, log_dir: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "--max-restarts", "0", "--log-dir", str(log_dir), "--redirects", "3",
            "-m", "detbench.bench.runtime.rank", str(request_path), str(result_path)]


def group_skip_reason(cell: Cell, caps: Capabilities) -> str | None:
    """Why a multi-GPU cell cannot run here: too few GPUs, or what would skip its 1-GPU twin."""
    if caps.cuda_available and cell.gpus > caps.gpu_count:
        return f"needs {cell.gpus} GPUs, {caps.gpu_count} visible"
    return skip_reason(one_gpu_twin(cell), caps)


@dataclass
class TorchrunLauncher:
    """One torchrun job per attempt, one rank per GPU (gloo ranks on a CPU), supervised as one process tree."""

    isolation = "torchrun"
    keeps_partial = False  # rank 0's figures alone are not the group's: only gathered (final) results count
    can_retry = True
    caps: Capabilities | None = None

    def attempt(self, cells: list[Cell], options: RunOptions) -> Attempt:
        _check_group(cells)
        caps = self.caps or probe_capabilities()
        skipped = {c.id: reason for c in cells for reason in [group_skip_reason(c, caps)] if reason}
        progress = GroupProgress()
        for cell in cells:
            if cell.id in skipped:
                progress.results[cell.id] = CellResult(cell, status="skipped", reason=skipped[cell.id],
                                                       config={"isolation": "torchrun"})
                progress.final.add(cell.id)
        pending = [c for c in cells if c.id not in skipped]
        if not pending:
            progress.done = True
            return Attempt(progress, None, 0.0, True)
        ran = self._torchrun(pending, options)
        ran.progress.results.update(progress.results)
        ran.progress.final |= progress.final
        return ran

    def _torchrun(self, cells: list[Cell], options: RunOptions) -> Attempt:
        nproc = cells[0].gpus
        with scratch_dir("detbench-group-") as tmp:
            request_path, events_path = Path(tmp, "request.json"), Path(tmp, "events.jsonl")
            log_dir, output_path = Path(tmp, "logs"), Path(tmp, "torchrun.txt")
            request = GroupRequest(cells, options)
            request.write(request_path)
            request_backend = request.distributed.resolve_backend(probe_capabilities().cuda_available)
            statuses: dict[int, dict[str, Any]] = {}

            def rank_pids() -> list[int]:
                statuses.update(rank_statuses(events_path))
                return [s["pid"] for s in statuses.values() if s.get("pid") and _is_rank_process(s["pid"])]

            command = torchrun_command(nproc, request_path, events_path, log_dir)
            oom_kills = oom_kill_count()
            with Supervisor(command, output_path, env=child_env(), extra_pids=rank_pids) as job:
                timed_out = job.watch(options.cell_timeout_s, heartbeat=lambda: _size(events_path), poll_s=0.2)
                rank_pids()
                job.kill()  # torchrun's workers lead sessions of their own: take them all, always
                done = job.finish(timed_out)
            progress = GroupProgress.read(events_path)
            facts = {"command": f"torchrun --standalone --nproc-per-node {nproc} -m detbench.bench.runtime.rank",
                     "returncode": done.returncode, "wall_s": done.wall_s,
                     "rank_pids": {r: s.get("pid") for r, s in statuses.items()}, "killed_pids": done.killed_pids}
            failure = None
            if timed_out:
                failure = _timeout_failure(options.cell_timeout_s, statuses, progress.running)
            elif done.returncode != 0 or not progress.done:
                struck = oom_kills is not None and (oom_kill_count() or 0) > oom_kills
                failure = _rank_failure(output_path.read_text(errors="replace"), log_dir, statuses, struck)
            if failure is not None:
                failure.output_tail = done.output_tail
                failure.details.setdefault("backend", request_backend)
        reached = progress.running is not None or bool(progress.results) or any(
            s.get("phase") not in ("init", "failed") or s.get("cell_id") for s in statuses.values())
        for result in progress.results.values():
            result.config["launcher"] = facts
        return Attempt(progress, failure, done.wall_s, reached, facts)


def _check_group(cells: list[Cell]) -> None:
    counts, models = sorted({c.gpus for c in cells}), sorted({c.model for c in cells})
    if not cells or len(counts) != 1 or counts[0] < 2:
        raise ValueError(f"the torchrun launcher takes cells with one GPU count > 1, got {counts}")
    if len(models) != 1:
        raise ValueError(f"the torchrun launcher takes cells of one model, got {', '.join(models)}")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


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
                              f"{PHASES[behind]} (phases: {where})",
                          details={"failed_rank": stuck[0], "rank_phases": phases})


def _rank_failure(output: str, log_dir: Path, statuses: dict[int, dict[str, Any]],
                  oom_killer_struck: bool = False) -> AttemptFailure:
    """The first failed rank as torchrun reports it ("Root Cause"), with its error file's message or its exit
    (SIGKILL while the kernel's OOM killer struck: ``oom``)."""
    root = output.find("Root Cause")
    match = _FAILURE.search(output, root) if root >= 0 else None
    errors = _error_files(log_dir)
    if match is None and not errors:
        lines = [line for line in output.strip().splitlines() if line.strip()]
        return AttemptFailure("error", f"torchrun failed: {lines[-1] if lines else 'no output'}")
    rank = int(match.group(1)) if match else min(errors)
    exitcode = int(match.group(2)) if match else None
    # A rank that died with no Python exception (segfault, os._exit, OOM killer) is the cause; ranks that then
    # raised (gloo "connection reset", an NCCL error) are its victims, even when torchrun saw them fail first.
    # SIGTERM (-15) is torchrun stopping the survivors, not a crash.
    exitcodes = {int(r): int(c) for r, c in _FAILURE.findall(output)}
    crashed = sorted((r, c) for r, c in exitcodes.items() if r not in errors and c != -15)
    if crashed and rank in errors:
        rank, exitcode = crashed[0]
    elif rank in errors and _PEER_LOST.search(errors[rank]):
        # torchrun's timestamps are whole seconds and a tie goes to the lowest rank: a rank that raised because
        # its peer went away yields to a rank that failed on its own (an out-of-memory, an exception)
        causes = sorted(r for r, text in errors.items() if not _PEER_LOST.search(text))
        if causes:
            rank, exitcode = causes[0], exitcodes.get(causes[0])
    message = errors.get(rank)
    if message is None:
        stderr_tail = _rank_stderr_tail(log_dir, rank)
        message = (f"process {describe_exit(exitcode).replace(' without writing a result', '')}"
                   if exitcode is not None else "ended")
        if exitcode == -9 and oom_killer_struck:
            message += ": killed by the kernel's OOM killer (out of host memory)"
        else:
            message += " with no Python exception (a crash, os._exit or the OOM killer)"
        if stderr_tail:
            message += f"; last stderr line: {stderr_tail}"
    oom = re.search(_OOM_WORDS, message, re.IGNORECASE) or (exitcode == -9 and oom_killer_struck)
    status = "oom" if oom else "error"
    return AttemptFailure(status, f"rank {rank}: {message}", returncode=exitcode, details={"failed_rank": rank})


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


def _is_rank_process(pid: int) -> bool:
    """A pid from a rank's status file that is still that rank (never a reused pid)."""
    return is_alive(pid) and b"detbench.bench.runtime.rank" in command_line(pid)
