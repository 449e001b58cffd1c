"""Where a cell runs: inline (this process) or in its own child process (the default on GPU).

A child gets clean GPU memory, and a sticky CUDA error, a segfault or a hang ends only that cell:
a crash becomes an ``error`` result with the exit code/signal and the stderr tail; a child that runs
past the cell timeout is killed (with its process group) and recorded as ``timeout``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.options import RunOptions
from bench.runner import run_cell
from bench.schema import Cell, CellResult, SchemaError

STDERR_TAIL_CHARS = 3000
REPO_ROOT = Path(__file__).resolve().parents[1]


def launch(cell: Cell, options: RunOptions) -> CellResult:
    """Run ``cell`` as ``options.isolation`` says and return its result (never raises for a cell failure).

    ``config["cell_wall_s"]`` records the cell's whole wall time (process start, build, compile, warm-up,
    timed region), which is what a run's time budget is made of.
    """
    began = time.perf_counter()
    result = run_cell(cell, options) if options.isolation == "inline" else run_in_child(cell, options)
    result.config["cell_wall_s"] = round(time.perf_counter() - began, 3)
    return result


def run_in_child(cell: Cell, options: RunOptions) -> CellResult:
    """``python -m bench.cell_worker`` in a new session; request and result travel as JSON files."""
    with tempfile.TemporaryDirectory(prefix="detbench-cell-") as tmp:
        request_path, result_path = Path(tmp, "request.json"), Path(tmp, "result.json")
        stderr_path = Path(tmp, "stderr.txt")
        request_path.write_text(json.dumps({"cell": cell.to_dict(), "options": options.to_dict()}), encoding="utf-8")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        command = [sys.executable, "-m", "bench.cell_worker", str(request_path), str(result_path)]
        with open(stderr_path, "wb") as stderr:
            child = subprocess.Popen(command, stdout=stderr, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
            try:
                returncode = child.wait(timeout=options.cell_timeout_s)
            except subprocess.TimeoutExpired:
                kill_group(child)
                return CellResult(cell, status="timeout", reason=(
                    f"killed after the cell timeout of {options.cell_timeout_s:g} s"),
                    config={"isolation": "process", "output_tail": _tail(stderr_path)})
        if returncode == 0 and result_path.exists():
            try:
                return CellResult.from_dict(json.loads(result_path.read_text(encoding="utf-8")), source=cell.id)
            except (ValueError, SchemaError) as exc:
                return CellResult(cell, status="error", reason=f"unreadable result from the cell process: {exc}",
                                  config={"isolation": "process", "output_tail": _tail(stderr_path)})
        return CellResult(cell, status="error", reason=f"cell process {describe_exit(returncode)}",
                          config={"isolation": "process", "returncode": returncode,
                                  "output_tail": _tail(stderr_path)})


def describe_exit(returncode: int) -> str:
    """'died of SIGSEGV (signal 11)' or 'exited with code 3'."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "an unknown signal"
        return f"died of {name} (signal {-returncode})"
    return f"exited with code {returncode} without writing a result"


def kill_group(child: subprocess.Popen) -> None:
    """Kill the child and anything it started (it leads its own session); reap it."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # it ended between the timeout and the kill
    child.wait()


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-STDERR_TAIL_CHARS:].decode("utf-8", errors="replace")
