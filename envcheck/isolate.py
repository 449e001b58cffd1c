"""Run work that can hang (CUDA init, NCCL) in child processes with a deadline: a hang becomes a result."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


@dataclass
class ChildResult:
    returncode: int | None  # None when killed at the deadline
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float

    def last_error_line(self) -> str:
        lines = [line for line in self.stderr.strip().splitlines() if line.strip()]
        return lines[-1] if lines else f"exit code {self.returncode}"


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment, with envcheck importable in the child and `extra` applied."""
    env = dict(os.environ)
    paths = [PACKAGE_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.update(extra or {})
    return env


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return  # already gone
    except PermissionError:
        proc.kill()


def run_children(commands: list[list[str]], timeout_s: float, env: dict[str, str] | None = None) -> list[ChildResult]:
    """Start every command at once, wait until all exit or the deadline passes; kill stragglers."""
    start = time.monotonic()
    deadline = start + timeout_s
    results = []
    # the output files stay open until every child has been read, and close even if a wait raises
    with contextlib.ExitStack() as files:
        procs = []
        for command in commands:
            out = files.enter_context(tempfile.TemporaryFile("w+"))
            err = files.enter_context(tempfile.TemporaryFile("w+"))
            proc = subprocess.Popen(command, stdout=out, stderr=err, env=env or child_env(), start_new_session=True)
            procs.append((proc, out, err))
        for proc, out, err in procs:
            timed_out = False
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
                proc.wait()
            out.seek(0), err.seek(0)
            results.append(
                ChildResult(
                    returncode=None if timed_out else proc.returncode,
                    stdout=out.read(),
                    stderr=err.read(),
                    timed_out=timed_out,
                    duration_s=time.monotonic() - start,
                )
            )
    return results
