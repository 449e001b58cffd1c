"""The coordinator's end of the A/B side protocol: how an environment runs a side (:class:`SideSpec`), one running
side spoken to over its pipes (:class:`SideProcess`), and the supervision that ends a side's whole process tree
with it. The other end, the side's command loop, is :mod:`detbench.bench.runtime.side`; both speak
:mod:`detbench.bench.runtime.protocol`. ``detbench-ab`` (detbench.bench.tools.ab, detbench.bench.tools.ab_sides) drives
them."""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import shlex
import shutil
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detbench.bench.runtime.protocol import decode
from detbench.envcheck.isolate import PACKAGE_ROOT, Supervisor, describe_exit, reap, tail
from detbench.envcheck.redact import redact_setting, redact_value

WORKER = "python -m detbench.bench.runtime.side"
# Every process a side starts carries this setting (a fresh token per side process): whatever leaves the side's
# tree (a worker whose parent died, a double fork) is still found and killed with the side (:func:`tagged`).
TAG_ENV = "DETBENCH_AB_SIDE"
EXIT_AFTER_EOF_S = 10.0  # a side whose output ended has this long to exit by itself before it is killed
# Each side's environment carries a padding of random length (0 to MAX_PAD bytes), so a layout effect of the
# environment's size (stack and heap addresses shift with it) is drawn afresh for every process and averages out
# over the pairs instead of favouring one side (Mytkowicz et al., "Producing wrong data without doing anything
# obviously wrong!", ASPLOS 2009).
PAD_ENV = "DETBENCH_AB_PAD"
# detbench.bench.models.postprocess.CACHE_ENV (not imported: the coordinator imports no torch): a folder of
# calibrations, written by the side that calibrates first and read by the sides of the same software (run_gate's leader)
CALIBRATION_CACHE_ENV = "DETBENCH_CALIBRATION_CACHE"
MAX_PAD = 4096
# An interpreter side runs this detbench (its detbench package, from a source checkout), whatever its working
# directory holds and whether or not its venv has detbench installed; the plugin
# is loaded by module, so no entry point is needed. From an installed (site-packages) detbench the side's own
# install runs: putting this venv's site-packages on another venv's path would mix their torch.
_BOOTSTRAP = """import importlib.util, os, runpy, sys
root, module = sys.argv[1:3]
del sys.argv[1:3]
folder = os.path.join(root, "detbench")
spec = importlib.util.spec_from_file_location("detbench", os.path.join(folder, "__init__.py"),
                                              submodule_search_locations=[folder])
sys.modules["detbench"] = package = importlib.util.module_from_spec(spec)
spec.loader.exec_module(package)
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""
_EOF = object()


class SideFailed(RuntimeError):  # noqa: N818 - the side failed; its message says how
    """A side died, hung or broke the protocol; the message is one line."""


@dataclass(frozen=True)
class SideSpec:
    """How one environment runs: an interpreter (a venv's python), or a shell template (a ``docker run ...``), plus
    environment settings. A template holds ``{worker}`` (a long-lived side) or ``{json}`` (a round per process)."""

    label: str
    python: str | None = None
    template: str | None = None
    env: tuple[tuple[str, str], ...] = ()

    def worker_command(self) -> list[str] | str:
        """The command of a long-lived side (detbench.bench.runtime.side)."""
        if self.template is not None:
            return self.template.replace("{worker}", WORKER)
        return run_module(self.python or sys.executable, "detbench.bench.runtime.side")

    def command(self, json_path: Path, bench_args: Sequence[str]) -> list[str] | str:
        """The command of one round-per-process run of ``pytest bench/``: a list (interpreter) or a shell string."""
        if self.template is not None:
            return self.template.format(json=shlex.quote(str(json_path)), dir=shlex.quote(str(json_path.parent)),
                                        name=shlex.quote(json_path.name), args=quote_args(bench_args),
                                        worker=WORKER)
        # the bench package by its folder when it is this checkout's (a `bench` where the side runs is not it)
        target = [str(Path(PACKAGE_ROOT, "bench"))] if from_checkout() else ["--pyargs", "detbench.bench"]
        return run_module(self.python or sys.executable, "pytest", *target, "-q", "-p", "no:cacheprovider",
                          "-p", "no:detbench", "-p", "detbench.bench.plugin.plugin", f"--benchmark-json={json_path}",
                          *bench_args)

    def describe(self) -> str:
        """The side as it may be published: settings and template redacted."""
        what = redact_value(self.template) if self.template else self.python or "this interpreter"
        env = " ".join(f"{k}={redact_setting(k, v)}" for k, v in self.env)
        return f"{self.label} (`{what}`{f' with {env}' if env else ''})"


def from_checkout() -> bool:
    """Whether this detbench runs from a source checkout (an editable install, PYTHONPATH), not site-packages."""
    return Path(PACKAGE_ROOT).name not in ("site-packages", "dist-packages")


def run_module(python: str, module: str, *args: str) -> list[str]:
    """``python -m module args`` with this detbench's packages first when they come from a source checkout."""
    if not from_checkout():
        return [python, "-m", module, *args]
    return [python, "-c", _BOOTSTRAP, PACKAGE_ROOT, module, *args]


def check_python(python: str, option: str) -> None:
    """Raise ValueError (one line) unless ``python`` names an executable file (a path or a name on PATH)."""
    if shutil.which(python) is None:
        raise ValueError(f"{option} {python!r} is not an executable file; give a venv's interpreter, e.g. "
                         f"{option} venv-b/bin/python")


def tagged(token: str) -> Callable[[], list[int]]:
    """A callable listing the processes whose environment carries ``TAG_ENV=token`` (read from /proc)."""
    needle = f"\0{TAG_ENV}={token}\0".encode()

    def pids() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:  # gone, or another user's
                continue
            if needle in b"\0" + environ + b"\0":
                found.append(int(entry.name))
        return found

    return pids


def supervised(command: list[str] | str, log: Path, env: dict[str, str], pipes: bool = False) -> Supervisor:
    """A supervisor for a side's command whose whole process tree, and whatever leaves it, ends with it;
    ``pipes``: spoken to over stdin/stdout (a long-lived side)."""
    token = secrets.token_hex(8)
    return Supervisor(command, log, env={**env, TAG_ENV: token}, shell=isinstance(command, str),
                      stdin_pipe=pipes, stdout_pipe=pipes, extra_pids=tagged(token))


class SideProcess:
    """One running side, spoken to over its pipes; every answer is awaited with a deadline."""

    def __init__(self, spec: SideSpec, pair: int, out: Path, pad: int = 0, cache: Path | None = None) -> None:
        self.spec, self.pair, self.pad = spec, pair, pad
        self.name = f"{spec.label}-{pair}"
        self.log = out / f"{self.name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **dict(spec.env), PAD_ENV: "x" * pad}
        if cache is not None:  # the run's calibration cache (run_gate): the leader writes it, the others read
            env[CALIBRATION_CACHE_ENV] = str(cache)
        self.supervisor = supervised(spec.worker_command(), self.log, env, pipes=True)
        self.lines: queue.Queue[Any] = queue.Queue()
        self.failure: str | None = None
        self.hello: dict[str, Any] = {}
        self.calibrated: dict[str, dict[str, Any]] = {}  # cell id -> its post-processing as this side set it up
        self.calibration: dict[str, str] = {}  # cell id -> "calibrated" (here) or "cached" (the leader's)
        self.setup_s: float | None = None  # from sending the set-up to its last answer
        self.in_flight: str | None = None  # the command whose answer has not come yet (_ask)
        self.quitting = False

    def start(self) -> None:
        self.supervisor.start()
        threading.Thread(target=self._read, daemon=True, name=f"read-{self.name}").start()

    def _read(self) -> None:
        stdout = self.supervisor.proc.stdout if self.supervisor.proc else None
        try:
            for line in stdout if stdout is not None else ():
                event = decode(line.rstrip("\n"))
                if event is not None:
                    self.lines.put(event)
        except (OSError, ValueError):  # the pipe was closed under it: the side was ended
            pass
        self.lines.put(_EOF)

    @property
    def alive(self) -> bool:
        return self.failure is None

    def send(self, command: dict[str, Any]) -> None:
        import json  # noqa: PLC0415

        proc = self.supervisor.proc
        try:
            assert proc is not None and proc.stdin is not None
            proc.stdin.write(json.dumps(command) + "\n")
            proc.stdin.flush()
        except (OSError, ValueError) as exc:
            raise self._fail(f"could not send {command.get('cmd')!r} ({exc})") from None

    def next_event(self, timeout_s: float, waiting_for: str) -> dict[str, Any]:
        try:
            event = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            self.supervisor.kill()
            raise self._fail(f"hung: no answer to {waiting_for} within {timeout_s:g} s (killed)") from None
        if event is _EOF:
            # its output ended: give it a moment to exit with its own status, then its tree is killed
            code = reap(self.supervisor.proc, EXIT_AFTER_EOF_S) if self.supervisor.proc else None
            self.supervisor.kill()  # what it started dies with it
            raise self._fail(f"{describe_exit(code)} while {waiting_for}")
        return dict(event)

    def _fail(self, why: str) -> SideFailed:
        if self.failure is None:
            last = [line for line in tail(self.log, 2000).splitlines() if line.strip()]
            self.failure = f"{self.name} {why}" + (f"; last output: {last[-1][:300]}" if last else "")
        return SideFailed(self.failure)

    def quit(self) -> None:
        """Ask a live side to exit (it is waited for in :meth:`stop`): every side is asked first, then all wait."""
        if self.supervisor.proc is not None and self.alive and not self.quitting:
            self.quitting = True
            with contextlib.suppress(SideFailed):
                self.send({"cmd": "quit"})

    def stop(self, wait_s: float = 30.0) -> None:
        if self.supervisor.proc is None:
            return
        if self.alive:
            try:
                self.quit()
                self.supervisor.proc.wait(timeout=max(0.1, wait_s))
            except (SideFailed, Exception):  # noqa: BLE001 - stopping: whatever happens, the supervisor kills
                pass
        self.supervisor.kill()
        self.supervisor.finish()


def quote_args(args: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)
