"""Whatever ends a run, what it started ends with it (issue 24): SIGTERM or SIGINT in the middle of a torchrun
group (2 gloo ranks of the tiny model) leaves no torchrun, no rank and no temporary folder behind, from a plain
Python caller (no handler of its own) and from ``detbench``; a second signal does not cut the clean-up short."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from detbench.envcheck.isolate import Supervisor, command_line, descendants, is_alive

ROOT = Path(__file__).resolve().parents[3]
HANG = {"DETBENCH_TEST_FAULT": "gpu2:hang", "DETBENCH_TEST_FAULT_RANK": "1"}  # rank 1 hangs in set-up
# run_group in a plain process: SIGTERM's default action, no pytest handler turning it into KeyboardInterrupt
PLAIN = """
from detbench.bench.core.matrix import Capabilities
from detbench.bench.runtime.launch import run_group
from detbench.bench.runtime.torchrun import TorchrunLauncher
from tests.bench.runtime.torchrun_helpers import fast_options, tiny
run_group([tiny("infer")], fast_options(), launcher=TorchrunLauncher(caps=Capabilities(cuda_available=False)))
"""
DETBENCH = ["-m", "detbench.bench.plugin.cli", "-q", "--profile", "smoke", "--models", "tiny_convnet", "--modes",
            "infer",
            "--image-size", "32x32", "--gpus", "2", "--model-modules", "tests.bench.tiny_models"]


def _start_group(args: list[str], tmp: Path) -> tuple[subprocess.Popen, list[int]]:
    """The caller, once both ranks are up (their status files written); with its descendants then."""
    env = {**os.environ, **HANG, "TMPDIR": str(tmp)}
    log = open(tmp / "caller.log", "w")  # noqa: SIM115 - closed with the test's tmp folder
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(tmp.glob("detbench-group-*/events.jsonl.ranks/rank*.json"))) == 2:
            break
        time.sleep(0.1)
    tree = descendants(proc.pid)
    ranks = [p for p in tree if command_line(p).split(b"\0")[1:4] == [b"-u", b"-m", b"detbench.bench.runtime.rank"]]
    if len(ranks) != 2 or proc.poll() is not None:
        _kill_all([proc.pid, *tree])
        pytest.fail(f"the group did not start: {(tmp / 'caller.log').read_text()[-3000:]}")
    return proc, tree


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        if is_alive(pid):
            os.kill(pid, signal.SIGKILL)


def _assert_nothing_left(proc: subprocess.Popen, tree: list[int], tmp: Path) -> None:
    try:
        proc.wait(timeout=60)
    finally:
        left = [p for p in tree if is_alive(p)]
        _kill_all([proc.pid, *left])  # never leave them to the next test
    assert not left, f"processes left behind: {left} ({[command_line(p) for p in left]})"
    assert not list(tmp.glob("detbench-*")), sorted(p.name for p in tmp.iterdir())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_a_plain_caller_ends_torchrun_its_ranks_and_the_group_folder(tmp_path, signum):
    proc, tree = _start_group(["-c", PLAIN], tmp_path)
    proc.send_signal(signum)
    _assert_nothing_left(proc, tree, tmp_path)
    if signum == signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM  # still ended by the signal, after the clean-up


def test_sigterm_to_detbench_mid_group_leaves_nothing_behind(tmp_path):
    # the journal under tmp_path: by default it goes to .detbench/ in the checkout, where the run starts
    proc, tree = _start_group([*DETBENCH, f"--detbench-journal={tmp_path / 'j.jsonl'}"], tmp_path)
    proc.send_signal(signal.SIGTERM)
    _assert_nothing_left(proc, tree, tmp_path)
    assert proc.returncode != 0 and "SIGTERM" in (tmp_path / "caller.log").read_text()


def test_a_second_signal_during_the_kill_waits_until_everything_is_killed(tmp_path):
    # a second Ctrl-C (here: SIGINT sent from inside the kill) must not leave half the tree running
    def interrupted_midway() -> list[int]:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs here: today's KeyboardInterrupt would stop the kill
        return []

    job = Supervisor(["sh", "-c", "sleep 60 & sleep 60 & wait"], tmp_path / "out.txt", extra_pids=interrupted_midway)
    job.start()
    deadline = time.monotonic() + 10
    while len(descendants(job.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    tree = [job.pid, *descendants(job.pid)]
    with pytest.raises(KeyboardInterrupt):
        job.kill()  # the interrupt comes once the kill is done
    left = [p for p in tree if is_alive(p)]
    _kill_all(left)
    job.finish()
    assert not left, "the second signal cut the kill short"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back


def test_an_ignored_signal_stays_ignored_while_a_scratch_folder_is_alive():
    """A background job ignores SIGINT: the guard must not turn a Ctrl-C meant for the shell into a kill."""
    from detbench.envcheck.isolate import scratch_dir

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with scratch_dir("detbench-test-") as path:
            assert path.is_dir()
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL  # the others are guarded
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


# A signal handler runs on the main thread, inside whatever it interrupted. Most of a supervisor's waiting is
# proc.poll() in a loop, which holds Popen's wait lock while it looks at the child: the clean-up in the handler
# must not wait on that lock (it waited for itself for ever: seen as a lost Ctrl-C in CI, in detbench-ab's rounds).
IN_POLL = """
import signal, sys, time
from pathlib import Path
from detbench.envcheck.isolate import Supervisor
signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's Ctrl-C, whatever the caller ignores
job = Supervisor(["sleep", "60"], Path(sys.argv[1])).start()
print(job.pid, flush=True)
try:
    if sys.argv[2] == "lock-held":  # what poll() and wait() hold while they look at the child
        with job.proc._waitpid_lock:
            signal.raise_signal(signal.SIGINT)
            time.sleep(30)
    else:
        while job.proc.poll() is None:
            pass  # poll as often as possible: the signal lands inside poll() most of the time
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


@pytest.mark.parametrize("where", ["lock-held", "busy-poll"])
def test_a_signal_that_lands_inside_proc_poll_still_ends_the_child_and_the_caller(tmp_path, where):
    for attempt in range(1 if where == "lock-held" else 4):
        proc = subprocess.Popen([sys.executable, "-c", IN_POLL, str(tmp_path / "out.txt"), where], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONFAULTHANDLER": "1"})
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        if where == "busy-poll":
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints where it hangs
            out, _ = proc.communicate(timeout=20)
            _kill_all([child])
            pytest.fail(f"attempt {attempt}: the signal's clean-up hung:\n{out[-3000:]}")
        assert out.strip().endswith("interrupted") and proc.returncode == 0, out[-3000:]
        assert not is_alive(child)


def test_a_signal_held_back_while_a_child_starts_ends_that_child_before_it_interrupts(tmp_path, monkeypatch):
    from detbench.envcheck import isolate

    started: list[int] = []

    class InterruptedPopen(subprocess.Popen):  # Ctrl-C between the fork and the supervisor's bookkeeping
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            started.append(self.pid)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here and holds the signal back until the start is done

    monkeypatch.setattr(isolate.subprocess, "Popen", InterruptedPopen)
    job = Supervisor(["sleep", "60"], tmp_path / "out.txt")
    with pytest.raises(KeyboardInterrupt):
        job.start()  # no caller's `with` block ever began: the start ends the child itself
    assert started and not is_alive(started[0]) and job not in isolate.GUARD.live
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_signal_held_back_by_another_threads_clean_up_reaches_the_main_thread(tmp_path):
    import threading

    from detbench.envcheck.isolate import shield

    job = Supervisor(["sleep", "60"], tmp_path / "out.txt").start()
    child = job.pid

    def clean_up_in_a_thread() -> None:  # e.g. a watchdog killing a hung side while the user presses Ctrl-C
        with shield():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)

    thread = threading.Thread(target=clean_up_in_a_thread)
    with pytest.raises(KeyboardInterrupt):  # raised in the thread, it would end only the thread
        thread.start()
        thread.join()
        time.sleep(5)
    thread.join()
    assert not is_alive(child)
    job.finish()
