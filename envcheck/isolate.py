"""The one process supervisor: work that can hang or crash (CUDA init, NCCL, a benchmark worker, torchrun) runs
in a child process with a deadline, and a hang or a crash becomes a result.

:class:`Supervisor` starts a command in a session of its own, keeps its output in a file (the tail is what a
failure reports), watches a heartbeat (a file that grows, or a deadline), and kills the whole process tree
(its process group, every descendant found through /proc, and any pids the caller names) when the deadline
passes, the caller is interrupted, or the caller asks; it waits until the killed processes are gone, so no
GPU memory is held by a leftover when the next piece of work starts. envcheck's checks and bench's launchers
(a worker per group, torchrun, the A/B gate's long-lived sides) all use it.

Whatever ends the caller, what it started ends with it: while a supervised process or a :func:`scratch_dir` is
alive, SIGTERM, SIGINT and SIGHUP first kill every supervised tree and remove every scratch folder, then do what
they did before (raise KeyboardInterrupt, call the caller's handler, or end the process by the signal); a
second signal during that clean-up, or during :meth:`Supervisor.kill`, waits until it is done (:func:`shield`).
An exception unwinds through the ``with`` blocks; an exit runs the same clean-up (atexit). Only SIGKILL of the
caller itself cannot be caught. :func:`oom_kill_count` tells a child ended by the kernel's OOM killer.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# the folder holding the detbench package: a checkout (detbench/ links to its envcheck/) or site-packages
PACKAGE_ROOT = str(Path(__file__).absolute().parents[2])
TAIL_CHARS = 3000
POLL_S = 0.1
REAP_POLL_S = 0.05  # how often reap() looks again at a child that has not ended
KILL_WAIT_S = 15.0  # how long killed processes may take to tear down (GBs of CUDA memory) before we move on
GUARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


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


def command_line(pid: int) -> bytes:
    """``pid``'s NUL-separated command line, or b"" once it has exited (or was never there)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def reap(proc: subprocess.Popen[Any], wait_s: float | None = None) -> int | None:
    """``proc``'s exit status once it has ended (None if it still runs after ``wait_s``), never blocking on Popen's
    wait lock: a signal handler runs on the main thread, maybe inside ``proc.poll()`` or ``proc.wait()``, which hold
    that lock, and a plain ``proc.wait()`` in the handler would wait for itself for ever."""
    deadline = None if wait_s is None else time.monotonic() + wait_s
    while proc.returncode is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return proc.wait(timeout=REAP_POLL_S)  # a timed wait only tries the lock
        if not is_alive(proc.pid):  # ended, not reaped: the lock is held by the frame the signal interrupted
            _reap_directly(proc)
        if deadline is not None and time.monotonic() >= deadline:
            break
    return proc.returncode


def _reap_directly(proc: subprocess.Popen[Any]) -> None:
    try:
        pid, status = os.waitpid(proc.pid, os.WNOHANG)
    except ChildProcessError:  # reaped elsewhere and its status gone: what Popen itself records then
        proc.returncode = 0
        return
    if pid == proc.pid:
        proc.returncode = os.waitstatus_to_exitcode(status)


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


def oom_kill_count() -> int | None:
    """The kernel's count of processes its OOM killer ended (``oom_kill`` in /proc/vmstat); None if unknown."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        pass
    return None


@dataclass
class _Guard:
    """The supervised processes and scratch folders alive in this process, and the signal handlers that end
    them (installed while there are any, in the main thread; the handlers found there are restored after)."""

    live: set[Supervisor] = field(default_factory=set)
    scratch: set[Path] = field(default_factory=set)
    previous: dict[int, Any] = field(default_factory=dict)
    shielding: int = 0
    pending: list[tuple[int, Any, Any]] = field(default_factory=list)  # signal, frame, the handler it had

    def changed(self) -> None:
        """Install the handlers when something is alive, restore the previous ones when nothing is."""
        if threading.current_thread() is not threading.main_thread():
            return
        busy = bool(self.live or self.scratch)
        for signum in GUARDED_SIGNALS:
            current = signal.getsignal(signum)
            ignored = current == signal.SIG_IGN  # e.g. SIGINT in a background job: the user's choice, kept
            if busy and signum not in self.previous and current is not None and not ignored:
                self.previous[signum] = current
                signal.signal(signum, _on_signal)
            elif not busy and signum in self.previous:
                if current is _on_signal:
                    signal.signal(signum, self.previous[signum])
                del self.previous[signum]


GUARD = _Guard()


@contextlib.contextmanager
def shield() -> Iterator[None]:
    """Run the block to its end: a guarded signal that arrives inside is handled once it is over."""
    GUARD.shielding += 1
    try:
        yield
    finally:
        GUARD.shielding -= 1
        if not GUARD.shielding and GUARD.pending:
            signum, frame, previous = GUARD.pending[0]
            GUARD.pending.clear()
            if threading.current_thread() is threading.main_thread():
                _forward(signum, frame, previous)
            else:  # raised here, it would end this thread only: sent again, the main thread's handler takes it
                os.kill(os.getpid(), signum)


def end_everything() -> None:
    """Kill every supervised tree and remove every scratch folder of this process."""
    with shield():
        _end_all()


def _end_all() -> None:
    for supervisor in list(GUARD.live):
        supervisor.kill()
    for path in list(GUARD.scratch):
        shutil.rmtree(path, ignore_errors=True)


def _on_signal(signum: int, frame: Any) -> None:
    previous = GUARD.previous.get(signum, signal.SIG_DFL)
    if GUARD.shielding:  # a clean-up is under way: this signal waits for it
        GUARD.pending.append((signum, frame, previous))
        return
    GUARD.shielding += 1  # not shield(): it would forward the signals that arrive meanwhile; one forward is below
    try:
        _end_all()
    finally:
        GUARD.shielding -= 1
        GUARD.pending.clear()
    _forward(signum, frame, previous)


def _forward(signum: int, frame: Any, previous: Any) -> None:
    """What the signal did before the guard: the caller's handler, nothing (ignored), or the default action."""
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # the default action (end the process) now that nothing is left behind


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder removed when the block ends, however it ends (a signal's clean-up removes it too)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    GUARD.scratch.add(path)
    GUARD.changed()
    try:
        yield path
    finally:
        with shield():
            shutil.rmtree(path, ignore_errors=True)
            GUARD.scratch.discard(path)
            GUARD.changed()


atexit.register(end_everything)


@dataclass
class Supervised:
    """How a supervised process ended."""

    returncode: int | None  # None when it was killed by the supervisor
    timed_out: bool
    wall_s: float
    output_tail: str
    killed_pids: list[int] = field(default_factory=list)
    oom_killed: bool = False  # ended by SIGKILL while the kernel's OOM killer struck (not by the supervisor)

    def describe(self) -> str:
        if self.oom_killed:
            return "was killed by the kernel's OOM killer (out of host memory)"
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
        self.oom_kills_at_start: int | None = None
        self.sent_kill = False  # the supervisor SIGKILLed the child itself
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
        self.oom_kills_at_start = oom_kill_count()
        GUARD.live.add(self)  # the handlers first: a signal during the start is the guard's
        GUARD.changed()
        try:
            with shield():  # a signal between the fork and the bookkeeping would leave the child unknown
                self.proc = subprocess.Popen(
                    self.command, shell=self.shell, env=self.env, cwd=self.cwd, start_new_session=True,
                    stdin=subprocess.PIPE if self.stdin_pipe else subprocess.DEVNULL, stdout=stdout, stderr=sink,
                    text=self.stdin_pipe or self.stdout_pipe, bufsize=1 if self.stdout_pipe else -1)
        except BaseException:  # Popen failed, or the signal held back during it: no caller's `with` ends the child
            if self.proc is not None:
                self.kill()
                self.finish()
            else:
                GUARD.live.discard(self)
                GUARD.changed()
            raise
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
        """SIGKILL the child, its process group, its descendants and ``extra_pids``; wait until they are gone.
        A signal that arrives meanwhile is handled after (a second Ctrl-C does not cut the clean-up short)."""
        if self.proc is None:
            return []
        with shield():
            return self._kill(self.proc)

    def _kill(self, proc: subprocess.Popen[Any]) -> list[int]:
        pids = set(self.extra_pids() if self.extra_pids else ())
        if proc.returncode is None:  # once reaped, its pid may be another process's: only the named pids then
            pids |= set(descendants(proc.pid)) | {proc.pid}
        alive = [p for p in sorted(pids) if is_alive(p)]
        self.sent_kill = self.sent_kill or proc.pid in alive
        own_group = os.getpgrp()
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                group = os.getpgid(pid)
                if group != own_group:
                    os.killpg(group, signal.SIGKILL)  # a session leader's group takes its children with it
                os.kill(pid, signal.SIGKILL)
        reap(proc, KILL_WAIT_S)  # not proc.wait(): this may run in a signal handler (see reap)
        deadline = time.monotonic() + KILL_WAIT_S
        while any(is_alive(p) for p in alive) and time.monotonic() < deadline:
            time.sleep(0.05)
        killed = [p for p in alive if p != proc.pid]
        self.killed.extend(killed)
        return killed

    def finish(self, timed_out: bool = False) -> Supervised:
        """Reap the child (it must have exited or been killed) and close the output; what happened."""
        assert self.proc is not None, "start() first"
        returncode = reap(self.proc)
        GUARD.live.discard(self)
        GUARD.changed()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        for sink in self._sinks:
            sink.close()
        self._sinks.clear()
        return Supervised(None if timed_out else returncode, timed_out, round(time.monotonic() - self.began, 3),
                          tail(self.output), list(self.killed), self._oom_killed(returncode, timed_out))

    def _oom_killed(self, returncode: int | None, timed_out: bool) -> bool:
        """True when the child died of SIGKILL that the supervisor did not send while the kernel's OOM killer
        struck (its count rose since the start; another process may have been its victim too)."""
        if timed_out or self.sent_kill or returncode != -signal.SIGKILL:
            return False
        now = oom_kill_count()
        return now is not None and self.oom_kills_at_start is not None and now > self.oom_kills_at_start


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
