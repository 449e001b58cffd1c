"""The one process supervisor: work that can hang or crash (CUDA init, NCCL, a benchmark worker, torchrun) runs
in a child process with a deadline, and a hang or a crash becomes a result.

:class:`Supervisor` starts a command in a session of its own, keeps its output in a file (the tail is what a
failure reports), watches a heartbeat (a file that grows, or a deadline), and kills the whole process tree
(its process group, every descendant found through /proc, and any pids the caller names) when the deadline
passes, the caller is interrupted, or the caller asks; it waits until the killed processes are gone, so no
GPU memory is held by a leftover when the next piece of work starts. envcheck's checks and bench's launchers
(a worker per group, torchrun, the A/B gate's long-lived sides) all use it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
TAIL_CHARS = 3000
POLL_S = 0.1
KILL_WAIT_S = 15.0  # how long killed processes may take to tear down (GBs of CUDA memory) before we move on


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment, with the installed packages importable in the child and ``extra`` applied."""
    env = dict(os.environ)
    paths = [PACKAGE_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def describe_exit(returncode: int | None) -> str:
    """'died of SIGSEGV (signal 11)', 'exited with code 3' or 'was killed' (no code)."""
    if returncode is None:
        return "was killed"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "an unknown signal"
        return f"died of {name} (signal {-returncode})"
    return f"exited with code {returncode}"


def is_alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (from /proc: torchrun's workers, for one, lead sessions of their own)."""
    children: dict[int, list[int]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def tail(path: Path, chars: int = TAIL_CHARS) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(size - chars, 0))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


@dataclass
class Supervised:
    """How a supervised process ended."""

    returncode: int | None  # None when it was killed by the supervisor
    timed_out: bool
    wall_s: float
    output_tail: str
    killed_pids: list[int] = field(default_factory=list)

    def describe(self) -> str:
        return describe_exit(self.returncode)


class Supervisor:
    """One child process (and everything it starts), supervised.

    Args:
        command: what to run (a list, or a shell string with ``shell=True``).
        output: file that receives the child's stdout and stderr (stderr only when ``stdout_pipe``).
        env: the child's environment (default: :func:`child_env`).
        stdin_pipe / stdout_pipe: talk to the child over pipes (a long-lived worker's line protocol).
        stdout_file: keep stdout apart from ``output`` in this file (a probe that prints JSON).
        extra_pids: called at kill time; pids that belong to the work but left the tree (torchrun's ranks).
    """

    def __init__(self, command: Sequence[str] | str, output: Path, *, env: dict[str, str] | None = None,
                 shell: bool = False, stdin_pipe: bool = False, stdout_pipe: bool = False,
                 stdout_file: Path | None = None, cwd: str | None = None,
                 extra_pids: Callable[[], Iterable[int]] | None = None) -> None:
        self.command = command
        self.output = Path(output)
        self.env = env if env is not None else child_env()
        self.shell = shell
        self.stdin_pipe, self.stdout_pipe = stdin_pipe, stdout_pipe
        self.stdout_file = stdout_file
        self.cwd = cwd
        self.extra_pids = extra_pids
        self.proc: subprocess.Popen[Any] | None = None
        self.began = 0.0
        self.killed: list[int] = []
        self._sinks: list[IO[bytes]] = []

    def start(self) -> Supervisor:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        sink = open(self.output, "ab")  # noqa: SIM115 - closed in finish()
        self._sinks.append(sink)
        stdout: Any = sink
        if self.stdout_pipe:
            stdout = subprocess.PIPE
        elif self.stdout_file is not None:
            stdout = open(self.stdout_file, "ab")  # noqa: SIM115 - closed in finish()
            self._sinks.append(stdout)
        self.began = time.monotonic()
        self.proc = subprocess.Popen(
            self.command, shell=self.shell, env=self.env, cwd=self.cwd, start_new_session=True,
            stdin=subprocess.PIPE if self.stdin_pipe else subprocess.DEVNULL, stdout=stdout, stderr=sink,
            text=self.stdin_pipe or self.stdout_pipe, bufsize=1 if self.stdout_pipe else -1)
        return self

    def __enter__(self) -> Supervisor:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.kill()  # interrupted or done: nothing it started outlives the caller
        self.finish()

    @property
    def pid(self) -> int:
        assert self.proc is not None, "start() first"
        return self.proc.pid

    def poll(self) -> int | None:
        assert self.proc is not None, "start() first"
        return self.proc.poll()

    def watch(self, timeout_s: float, heartbeat: Callable[[], object] | None = None,
              poll_s: float = POLL_S) -> bool:
        """Wait for the child to exit; True (and the tree killed) when ``timeout_s`` passes without a change of
        ``heartbeat()`` (e.g. the size of a progress file), or since the start when there is no heartbeat."""
        assert self.proc is not None, "start() first"
        last_change, seen = time.monotonic(), heartbeat() if heartbeat else None
        while self.proc.poll() is None:
            if heartbeat is not None:
                now_seen = heartbeat()
                if now_seen != seen:
                    last_change, seen = time.monotonic(), now_seen
            if time.monotonic() - last_change > timeout_s:
                self.kill()
                return True
            time.sleep(poll_s)
        return False

    def kill(self) -> list[int]:
        """SIGKILL the child, its process group, its descendants and ``extra_pids``; wait until they are gone."""
        if self.proc is None:
            return []
        pids = set(descendants(self.proc.pid)) | set(self.extra_pids() if self.extra_pids else ())
        alive = [p for p in sorted(pids | {self.proc.pid}) if is_alive(p)]
        own_group = os.getpgrp()
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                group = os.getpgid(pid)
                if group != own_group:
                    os.killpg(group, signal.SIGKILL)  # a session leader's group takes its children with it
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            self.proc.wait()
        deadline = time.monotonic() + KILL_WAIT_S
        while any(is_alive(p) for p in alive) and time.monotonic() < deadline:
            time.sleep(0.05)
        killed = [p for p in alive if p != self.proc.pid]
        self.killed.extend(killed)
        return killed

    def finish(self, timed_out: bool = False) -> Supervised:
        """Reap the child (it must have exited or been killed) and close the output; what happened."""
        assert self.proc is not None, "start() first"
        returncode = self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        for sink in self._sinks:
            sink.close()
        self._sinks.clear()
        return Supervised(None if timed_out else returncode, timed_out, round(time.monotonic() - self.began, 3),
                          tail(self.output), list(self.killed))


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


def run_children(commands: list[list[str]], timeout_s: float, env: dict[str, str] | None = None) -> list[ChildResult]:
    """Start every command at once, wait until all exit or the deadline passes; kill stragglers (and their
    process trees). stdout and stderr are kept apart (the probes print JSON on stdout)."""
    deadline = time.monotonic() + timeout_s
    results = []
    with tempfile.TemporaryDirectory(prefix="envcheck-") as tmp, contextlib.ExitStack() as stack:
        children = []
        for index, command in enumerate(commands):
            supervisor = Supervisor(command, Path(tmp, f"{index}.err"), env=env or child_env(),
                                    stdout_file=Path(tmp, f"{index}.out"))
            children.append(stack.enter_context(supervisor))
        for supervisor in children:
            timed_out = supervisor.watch(max(0.0, deadline - time.monotonic()), poll_s=0.05)
            done = supervisor.finish(timed_out)
            assert supervisor.stdout_file is not None
            results.append(ChildResult(done.returncode, supervisor.stdout_file.read_text(errors="replace"),
                                       supervisor.output.read_text(errors="replace"), timed_out, done.wall_s))
    return results
