"""CI's own rules (tests/conftest.py, noxfile.py, .ci/run): a hung test fails by its timeout with a stack and the
rest of the run goes on; the folder rule that picks the tests every torch line runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import DEFAULT_TIMEOUT_S, PURE_PATHS, ROOT, TORCH_LINE_PATHS, is_torch_line


def planted_session(tmp_path, *args: str, timeout: int, **env: str) -> tuple[int, str]:
    """pytest in ``tmp_path`` the way the README's command runs it (pyproject's settings, this conftest as a plugin),
    with ``env`` added; its exit code and its stdout and stderr together."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path),
         "-p", "tests.conftest", "-p", "no:cacheprovider", *args],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "DETBENCH_CHECKOUT_CHECK": "0", **env},
        capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


PLANTED = '''
import ctypes
import time


def test_hangs_for_ever():
    while True:
        time.sleep(60)


def test_hangs_in_c_holding_the_gil():
    libc = ctypes.PyDLL(None)  # a PyDLL call keeps the GIL: no signal handler, no Python thread runs meanwhile
    mutex = ctypes.create_string_buffer(64)  # zeroed: glibc's PTHREAD_MUTEX_INITIALIZER, a mutex that never relocks
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)


def test_runs_after_the_hung_ones():
    assert 1 + 1 == 2
'''


def test_a_hung_test_fails_by_its_timeout_with_a_stack_and_the_rest_of_the_run_goes_on(tmp_path):
    """A tiny session run the way the README's command runs (pyproject's settings, this conftest's default
    timeout as a plugin, pytest-xdist), with the default cut to 2 s and the last resort to 2 s after it: the
    planted test that sleeps for ever is stopped with its stack; the one hung in a C call that keeps the GIL
    (pytest-timeout's signal never gets to Python) is ended by faulthandler's watchdog with its stack, and a new
    worker runs the test after them. No torch is imported: ~8 s alone."""
    (tmp_path / "test_planted.py").write_text(textwrap.dedent(PLANTED))
    code, out = planted_session(tmp_path, "-n", "1", "test_planted.py", timeout=240, DETBENCH_TEST_TIMEOUT_S="2",
                                DETBENCH_TEST_FALLBACK_S="2")
    assert code == 1, out[-3000:]
    assert "FAILED test_planted.py::test_hangs_for_ever - Failed: Timeout (>2.0s)" in out, out[-3000:]
    assert ">           time.sleep(60)" in out  # the hung test's stack, where it waited
    assert "FAILED test_planted.py::test_hangs_in_c_holding_the_gil" in out, out[-3000:]
    assert "Timeout (0:00:04)!" in out and "in test_hangs_in_c_holding_the_gil" in out, out[-3000:]
    assert "2 failed, 1 passed" in out, out[-3000:]


LEFT_RUNNING = '''
import threading


def test_leaves_a_thread_that_never_ends():
    threading.Thread(target=threading.Event().wait, name="never-ends").start()  # not a daemon: exit waits for it
'''


def test_a_process_held_at_exit_is_ended_with_a_stack(tmp_path):
    """The last resort also covers the process's exit, after the summary (as the nox sessions run: no xdist): a
    thread left running that is not a daemon would hold the process for ever; 2 s after pytest is done it writes
    the stacks and ends the process, exit 1. No torch: ~3 s."""
    (tmp_path / "test_planted.py").write_text(textwrap.dedent(LEFT_RUNNING))
    code, out = planted_session(tmp_path, "-q", "test_planted.py", timeout=120, DETBENCH_TEST_FALLBACK_S="2")
    assert code == 1 and "1 passed" in out, out[-3000:]
    assert "Timeout (0:00:02)!" in out and "_shutdown" in out, out[-3000:]  # where the exit waited


IDLE = '''
import time

import pytest


@pytest.mark.xdist_group("quick")
def test_quick():
    pass


@pytest.mark.xdist_group("slow")
def test_slow():
    time.sleep(4)
'''


def test_an_xdist_worker_left_idle_by_a_slower_one_is_not_taken_for_a_hung_exit(tmp_path):
    """A worker's session ends once it has nothing left to run; its process then waits for the controller, as long
    as the slowest worker runs. The exit's last resort (1 s here) must not end it (it did: a stack and a killed
    worker in every run where one worker finished a minute before the last). No torch: ~5 s."""
    (tmp_path / "test_planted.py").write_text(textwrap.dedent(IDLE))
    code, out = planted_session(tmp_path, "-n", "2", "--dist", "loadgroup", "test_planted.py", timeout=120,
                                DETBENCH_TEST_FALLBACK_S="1")
    assert code == 0 and "2 passed" in out, out[-3000:]
    assert "Timeout (" not in out and "execnet" not in out, out[-3000:]


ALONE = '''
import os
import time
from pathlib import Path

import pytest

SHARED = Path(os.environ["PLANTED_SHARED"])


# groups named here: the conftest's folder rule and timing groups apply to the checkout's tests only
@pytest.mark.timing
@pytest.mark.alone
@pytest.mark.xdist_group("measures")
def test_alone_sees_every_other_test_finished():
    assert (SHARED / "waited").read_text() == "done"


@pytest.mark.timing
@pytest.mark.late
@pytest.mark.xdist_group("measures")
def test_late_runs_after_the_measuring_test():
    assert (SHARED / "measured").read_text() == "done"


@pytest.mark.timing
@pytest.mark.xdist_group("measures")
def test_measures():
    (SHARED / "measured").write_text("done")


@pytest.mark.timing
@pytest.mark.waits
@pytest.mark.xdist_group("waits")
def test_waits_on_another_worker():
    time.sleep(3)
    (SHARED / "waited").write_text("done")
'''


def test_an_alone_timing_test_runs_last_once_the_other_workers_have_finished(tmp_path):
    """The timing phase's rules (tests/conftest.py): an `alone` test, collected first here, runs after the measuring
    tests on its worker and waits for the waiting test on the other worker (3 s) to finish; a `late` one, collected
    before the measuring test, runs after it; a module that does not name the timing mark is not even imported. No
    torch: ~5 s."""
    (tmp_path / "test_planted.py").write_text(textwrap.dedent(ALONE))
    (tmp_path / "test_untimed.py").write_text("raise RuntimeError('imported by -m timing')\n")
    code, out = planted_session(tmp_path, "-n", "2", "--dist", "loadgroup", "-m", "timing", "-rA", "--basetemp",
                                str(tmp_path / "base"), ".", timeout=240, PLANTED_SHARED=str(tmp_path))
    assert code == 0, out[-3000:]
    assert "4 passed" in out and "of 3 unfinished" in out, out[-3000:]
    waited = float(out.split("waited ", 1)[1].split(" s", 1)[0])
    assert waited > 0.5, out[-3000:]  # it started before the waiting test was done, and waited for it


def test_the_default_timeout_is_the_documented_one():
    compat = (ROOT / "docs" / "compat.md").read_text(encoding="utf-8")
    assert f"{DEFAULT_TIMEOUT_S:g} s" in compat and "timeout_method" in compat


SIGNAL_TO_TORCHRUN = ("tests/bench/runtime/test_r3_cleanup.py::"
                      "test_a_signal_to_a_plain_caller_ends_torchrun_its_ranks_and_the_group_folder")


@pytest.mark.parametrize("path, torch_line", [
    ("tests/bench/models/test_new.py", True),  # a new file in a torch folder lands in the set by itself
    ("tests/bench/runtime/test_engine.py", True),
    ("tests/envcheck/test_torch_pairing.py", True),
    ("tests/bench/core/test_new.py", False),
    ("tests/reports/test_new.py", False),
    ("tests/envcheck/test_host.py", False),
    ("tests/bench/modelsx/test_a.py", False),  # a folder is matched whole, not as a prefix of a name
    ("tests/bench/tools/test_fidelity.py", True),
    ("tests/bench/tools/test_ab_gate.py", False),  # the A/B protocol's tests, new ones included, run once
    ("tests/bench/tools/test_r3_ab.py", False),
    ("tests/envcheck/test_nccl_links.py", False),  # a file entry is that file only
    # test-level exceptions: detbench's supervision of planted faults runs once; torchrun's SIGTERM on every line
    ("tests/bench/plugin/test_cut_and_resume.py::test_a_run_sigkilled_mid_group[38]", False),
    ("tests/bench/runtime/test_launch.py::test_a_crash_in_the_middle_of_a_set_up_is_recorded_and_a_fresh", False),
    ("tests/bench/runtime/test_launch.py::test_one_worker_measures_the_group_interleaved_with_ratios", True),
    (f"{SIGNAL_TO_TORCHRUN}[2]", False),
    (f"{SIGNAL_TO_TORCHRUN}[15]", True),
])
def test_the_folder_rule(path, torch_line):
    assert is_torch_line(path) is torch_line


def test_every_torch_line_path_exists():
    missing = [p for p in TORCH_LINE_PATHS if p.endswith(("/", ".py")) and not (ROOT / p).exists()]
    assert not missing


def test_every_test_level_exception_names_a_test_that_exists():
    """A renamed test falls back into the torch-line set (safe, slower); a stale entry here would hide that."""
    stale = []
    for entry in (p for p in PURE_PATHS if "::" in p):
        path, name = entry.split("::", 1)
        source = (ROOT / path).read_text(encoding="utf-8") if (ROOT / path).is_file() else ""
        if f"def {name.split('[', 1)[0]}" not in source:
            stale.append(entry)
    assert not stale
