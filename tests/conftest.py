"""Shared fixtures and the suite's own rules: which tests each torch line runs (``torch_line``), the default
per-test timeout, and the check that a test run leaves the checkout as it found it. Fakes live in tests/fakes/
and are shared, not re-invented per test."""

from __future__ import annotations

import contextlib
import faulthandler
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _share_the_bytecode_cache() -> None:
    """Compiled modules go to one cache outside the checkout (``PYTHONPYCACHEPREFIX``) that this run's processes,
    and the processes they start, share: a test run starts hundreds of Python processes (``pytest bench/``, cells'
    workers, A/B sides, torchrun ranks), each importing torch. Where ``PYTHONDONTWRITEBYTECODE`` is set (this
    project's CI machine) nothing was cached and each import compiled whatever the install had not; the README's
    test install skips compiling (``pip install --no-compile``, 39 s of CI's install: docs/compat.md) and the
    modules a test imports are compiled here once. A prefix the user set is kept."""
    prefix = os.environ.get("PYTHONPYCACHEPREFIX") or os.path.join(
        tempfile.gettempdir(), f"detbench-tests-pycache-{os.getuid()}")
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.pycache_prefix = prefix
    sys.dont_write_bytecode = False


_share_the_bytecode_cache()

from detbench.envcheck import nvml  # noqa: E402 (after the bytecode cache is set)
from tests.fakes.nvml import FakeGpu, make_fake_nvml  # noqa: E402

# The folder rule (docs/compat.md): tests under these paths exercise torch/torchvision themselves (models,
# measuring, the worker processes and torchrun, the pytest face that runs cells, the tools that time a model,
# envcheck's torch checks) and run on every torch line; the rest (options, schema, statistics, journals,
# reports, history, the A/B protocol's arithmetic, packaging) is pure Python and runs once, in the main test
# run. A test elsewhere that needs torch's own behaviour is marked `@pytest.mark.torch_line` by hand.
TORCH_LINE_PATHS = (
    "tests/bench/models/",
    "tests/bench/measure/",
    "tests/bench/runtime/",
    "tests/bench/plugin/",
    "tests/bench/tools/",
    "tests/envcheck/test_torch_pairing.py",
    "tests/envcheck/test_nccl.py",
    "tests/envcheck/test_arch.py",
    "tests/envcheck/test_probe.py",
    "tests/test_imports.py",
)
# Exceptions inside those folders, run once (docs/compat.md says why for each): a file-name prefix, or
# 'file::test_name' for one test (all its parameters). Each is detbench's own logic behind a torch process, the same
# on every line: the A/B protocol (pairing, verdicts, the sides' line protocol), and the supervision of planted
# faults (a crash, a hang, a signal, a full disk), journals and resume, option handling and collection. What stays on
# every line in these folders: the detectors, measuring, every torchrun/gloo test, the workers' real cells (one
# group per launcher), torch's OOM types, the smoke run end to end, the compiled and DDP tools.
PURE_PATHS = (
    "tests/bench/tools/test_ab",  # test_ab.py, test_ab_e2e.py, test_ab_sides.py and any test_ab_*.py to come
    "tests/bench/tools/test_r3_ab.py",
    # journals cut by signals and resumed; repeats stopped by a signal; a full disk under --benchmark-json
    "tests/bench/plugin/test_cut_and_resume.py",
    "tests/bench/plugin/test_run_output_faults.py::test_a_repeats_run_stopped_by_a_signal",
    "tests/bench/plugin/test_run_output_faults.py::test_a_full_disk_under_benchmark_json",
    # the pytest face's options and collection (no cell runs), a run whose cells all skip, Ctrl-C's clean-up
    "tests/bench/plugin/test_smoke_e2e.py::test_bad_options_are_one_line_usage_errors",
    "tests/bench/plugin/test_smoke_e2e.py::test_a_bad_option_is_a_one_line_usage_error_end_to_end",
    "tests/bench/plugin/test_smoke_e2e.py::test_cell_ids_select_cells_with_k",
    "tests/bench/plugin/test_smoke_e2e.py::test_the_tune_profile_collects_eight_cells_per_model",
    "tests/bench/plugin/test_smoke_e2e.py::test_a_run_where_no_cell_measured_still_writes_its_benchmark_json",
    "tests/bench/plugin/test_smoke_e2e.py::test_sigterm_ends_the_run_and_its_worker_like_ctrl_c",
    # a planted worker crash (SIGSEGV in set-up, exit mid-rounds) and a fresh worker; cell isolation's bookkeeping
    "tests/bench/runtime/test_launch.py::test_a_crash_in_the_middle_of_a_set_up_is_recorded",
    "tests/bench/runtime/test_launch.py::test_a_crash_during_the_rounds_loses_nothing_already_measured",
    "tests/bench/runtime/test_launch.py::test_cell_isolation_runs_one_worker_per_cell",
    # the clean-up after a signal: SIGTERM stays on every line (torchrun's own signal handling); SIGINT and the
    # same clean-up through detbench's pytest face run once
    "tests/bench/runtime/test_r3_cleanup.py::test_a_signal_to_a_plain_caller_ends_torchrun_its_ranks_and_the_group_"
    "folder[2]",
    "tests/bench/runtime/test_r3_cleanup.py::test_sigterm_to_detbench_mid_group_leaves_nothing_behind",
    # the batch search's bookkeeping over a planted OOM (torch's OOM types: test_r3_oom.py, test_launch.py)
    "tests/bench/runtime/test_batch_search.py::test_the_real_probe_runs_each_batch_in_a_fresh_worker",
    # repeats merged by the pytest face (the repeat logic; its cells are the smoke run's)
    "tests/bench/runtime/test_run.py::test_pytest_face_repeats_real_cells",
    # the interleaved tool's planted crash and hang
    "tests/bench/tools/test_interleaved.py::test_cli_gives_each_model_a_worker_a_crash_is_recorded",
    "tests/bench/tools/test_interleaved.py::test_a_hanging_variant_is_a_timeout",
    # the serving study's server loop and command, driven by LoadGen with a fake busy-wait step (the serve extra,
    # which the torch lines do not install)
    "tests/bench/runtime/test_serve_loop.py",
    "tests/bench/tools/test_serve.py",
)
# Every test gets this timeout unless it carries its own `@pytest.mark.timeout(N)` (DETBENCH_TEST_TIMEOUT_S
# overrides it). It is set here, not as pyproject's `timeout` ini: that ini also governs `pytest bench/` run
# from the checkout, whose cells may legitimately run for many minutes. pyproject sets the method, `signal`: the
# hung test fails with its stack and the same process goes on (the `thread` method ends the process, and after
# such a crash pytest-xdist 3.8 with --dist loadgroup waited for ever once, here). 300 s: the slowest tests took
# 290-340 s with the 2-core machine loaded 6-fold (two full runs and other jobs); they carry their own mark.
DEFAULT_TIMEOUT_S = 300.0
FALLBACK_S = 60.0
FALLBACK_ENV = "DETBENCH_TEST_FALLBACK_S"  # tests/test_ci.py's planted hangs cut it
TIMEOUT_ENV = "DETBENCH_TEST_TIMEOUT_S"
# Set to 0 to skip the checkout check (e.g. while editing files during a run, or where another job writes to
# the checkout beside this run); CI leaves it on.
CHECKOUT_CHECK_ENV = "DETBENCH_CHECKOUT_CHECK"


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C means what it means in a terminal, however the suite was started: a job started with `&` or
    `nohup` ignores SIGINT, and every process a test starts would inherit that (the tests that interrupt a run
    with SIGINT would wait for ever). Nothing else is changed: SIGTERM and SIGHUP stay as they were."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # the stderr the last resort writes to (pytest_timeout_set_timer), kept before any test's capture swaps fd 2
    with contextlib.suppress(AttributeError, OSError, ValueError):  # no stderr to write to: the last resort stays off
        config.stash[_STDERR] = os.fdopen(os.dup(sys.__stderr__.fileno()), "w", encoding="utf-8", errors="replace")
    if _is_xdist_worker(config):
        _share_the_cores(int(config.workerinput.get("workercount", 1)))  # type: ignore[attr-defined]
        # a `pytest bench/` the tests start must not take itself for an xdist worker: pytest-benchmark reads
        # PYTEST_XDIST_WORKER and then disables every benchmark (no --benchmark-json is written)
        for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
            os.environ.pop(name, None)


def _share_the_cores(workers: int) -> None:
    """Each of N xdist workers (and what it starts: cells' workers, torchrun ranks) gets cores / N OpenMP threads,
    unless OMP_NUM_THREADS is set. torch's default, a thread per core in every process, oversubscribes the cores N
    times over, and its threads spin waiting for each other: on the 2-core machine with `-n 2` (load 13 from other
    jobs) tests/bench/runtime/test_session.py took 455 s and 86 CPU-s, and 70 s and 19 CPU-s at one thread each
    (docs/compat.md). `-n 1` (the timing tests) keeps torch's default."""
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if "torch" in sys.modules:  # a plugin imported it before this ran: it has read the variable already
            sys.modules["torch"].set_num_threads(threads)


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: object) -> None:
    """Beside pytest-timeout's `signal` timer (pyproject): a last resort that, FALLBACK_S after the timeout, writes
    every thread's stack to stderr and ends the process, for a hang the signal cannot break (a C call that never
    returns to Python, the GIL held or not). It is faulthandler's watchdog, a C thread that needs no GIL: a Python
    timer thread waits for the GIL as long as the hung call holds it. Under pytest-xdist the controller then
    reports the test as crashed and a new worker takes the rest. Returns None: pytest-timeout sets its own timer
    next."""
    timeout = float(getattr(settings, "timeout", 0) or 0)
    stderr = item.config.stash.get(_STDERR, None)
    if timeout > 0 and stderr is not None:
        faulthandler.dump_traceback_later(timeout + _fallback_s(), exit=True, file=stderr)


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    faulthandler.cancel_dump_traceback_later()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """The same last resort for the process's exit, after the summary: a thread left running that is not a daemon,
    or an atexit hook that waits for ever (a pool a library started), would hold the process, and the CI job that
    waits for it, past every test's timeout with nothing said. FALLBACK_S from here it writes every thread's stack
    and ends the process (exit 1). Not in an xdist worker: its session ends once it has nothing left to run, and the
    process then waits, idle, until the controller ends it after the last worker; the controller's own last resort
    covers that wait (and xdist's controller kills a worker that does not end when told)."""
    stderr = config.stash.get(_STDERR, None)
    if stderr is not None and not _is_xdist_worker(config):
        faulthandler.dump_traceback_later(_fallback_s(), exit=True, file=stderr)


def _fallback_s() -> float:
    return float(os.environ.get(FALLBACK_ENV) or FALLBACK_S)


def _matches(test_id: str, pattern: str) -> bool:
    """'dir/' a folder, 'x.py' that file, 'x.py::name' the tests whose name starts so (a test and its parameters),
    anything else a file-name prefix ('tests/bench/tools/test_ab')."""
    path = test_id.split("::", 1)[0]
    if "::" in pattern:
        return test_id.startswith(pattern)
    if pattern.endswith(".py"):
        return path == pattern
    return path.startswith(pattern)


def is_torch_line(test_id: str) -> bool:
    """Whether a test ('path::name[params]', or its file alone; path relative to the checkout, '/'-separated)
    falls under the torch-line rule."""
    if any(_matches(test_id, p) for p in PURE_PATHS):
        return False
    return any(_matches(test_id, p) for p in TORCH_LINE_PATHS)


# The timing phase (`pytest -n 4 --dist loadgroup -m timing`): the tests that measure speed run one after another on
# one worker (the A/B budget test, whose wall is its budget, on a second: its `xdist_group` in test_ab_sides.py);
# those that mostly wait on a timeout (`waits`: seconds of CPU in a minute) run beside them on the other two and,
# after the budget test, on its worker, dealt in turn in collection order, so the phase takes about as long as its
# measuring tests (docs/compat.md). Those marked `alone` go last on the measuring worker and start once every other
# test of the run has finished (at most ALONE_WAIT_S later): a test whose verdict any neighbour would move (the
# serving test's sustainable rate fell to 0.20-0.25 of its unslowed server's, against 0.36-0.42 alone, when it ran
# beside the waiting tests' start-up: CI and here, 2026-12-05; the 3,000-cell report took 11.9 CPU-s beside other
# tests and a spinning neighbour, 8-9 alone). Those marked `late` go after the other measuring tests, out of the
# phase's start, when the other workers start their first tests' processes all at once (the rounds-mode A/B test's
# first baseline round, timed there, ran 3.3x slower than its others and flipped its plant: a clean clone, 2026-12-06).
TIMING_MEASURES, TIMING_WAITS = "timing-measures", ("timing-waits-1", "timing-waits-2", "timing-budget")
ALONE_WAIT_S = 180.0
TIMING_MARK = "pytest.mark.timing"  # a module that holds a timing test names it (checked at every collection)


@cache
def _names_timing_mark(path: Path) -> bool:
    return TIMING_MARK in path.read_text(encoding="utf-8")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """`-m timing` (the timing phase) imports only the test modules that name the `timing` mark: importing all of them
    cost each of its 4 workers 7.7 CPU-s where these take 5.1 (the phase's start, 2026-12-06)."""
    if config.getoption("markexpr") != "timing" or not collection_path.name.startswith("test_") \
            or collection_path.suffix != ".py":
        return None
    return None if _names_timing_mark(collection_path) else True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    default_timeout = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S)
    waiting = 0
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(default_timeout))
        try:
            relative = Path(item.path).resolve().relative_to(ROOT).as_posix()
        except ValueError:  # a test outside the checkout: the folder rule does not apply
            continue
        test_id = relative + item.nodeid[len(item.nodeid.split("::", 1)[0]):]  # 'path::name[params]'
        if is_torch_line(test_id) and item.get_closest_marker("torch_line") is None:
            item.add_marker(pytest.mark.torch_line)
        timing = item.get_closest_marker("timing") is not None
        if item.get_closest_marker("alone") is not None and not timing:
            raise pytest.UsageError(f"{item.nodeid}: `alone` is for timing tests (mark it `timing` too)")
        if timing and item.get_closest_marker("slow") is not None:  # the timing phase would run it, and CI again
            raise pytest.UsageError(f"{item.nodeid}: `slow` is for the main run's tests, not `timing` ones")
        if timing and not _names_timing_mark(Path(item.path)):
            raise pytest.UsageError(f"{item.nodeid}: a timing test's module must name `{TIMING_MARK}` "
                                    "(`-m timing` collects only those)")
        if timing and item.get_closest_marker("xdist_group") is None:
            if item.get_closest_marker("waits"):
                item.add_marker(pytest.mark.xdist_group(TIMING_WAITS[waiting % len(TIMING_WAITS)]))
                waiting += 1
            else:
                item.add_marker(pytest.mark.xdist_group(TIMING_MEASURES))
    # stable: the rest keep their order; `late` measuring tests after the others, `alone` ones last
    items.sort(key=lambda item: (item.get_closest_marker("alone") is not None,
                                 item.get_closest_marker("late") is not None))
    if _is_xdist_worker(config) and config.getvalue("loadgroup"):
        _restore_xdist_groups(items)


def _restore_xdist_groups(items: list[pytest.Item]) -> None:
    """`--dist loadgroup` sends the tests of one `xdist_group` to one worker by the group's name, which pytest-xdist
    (3.8) appends to each item's node id on the worker by setting ``item._nodeid``; pytest 9.2 reads node ids from
    ``item._id`` instead, so the name was lost and the group's tests went to both workers (each running its module
    fixture: the smoke run of test_smoke_e2e.py, the wheel of test_installed.py, envcheck in envcheck/test_cli.py).
    Here the name is appended as xdist meant, where it is not already there."""
    try:
        from _pytest.nodeid import NodeId  # pytest >= 9.2 only
    except ImportError:
        return
    for item in items:
        marks = item.iter_markers("xdist_group")
        names = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in marks}
        suffix = "@" + "_".join(sorted(names))
        if names and not item.nodeid.endswith(suffix) and hasattr(item, "_id"):
            item._id = NodeId.parse(item.nodeid + suffix)


def _finished_folder(config: pytest.Config) -> Path | None:
    """Where an xdist worker notes each test it finished: the folder every worker's base temp sits in (pytest's own
    `pytest-N`, shared by this run's workers and kept or removed with it); None outside xdist, where the tests run
    one after another and `alone` ones last."""
    factory = getattr(config, "_tmp_path_factory", None)
    if not _is_xdist_worker(config) or factory is None:
        return None
    return Path(factory.getbasetemp()).parent / "detbench-finished"


def _finished_name(nodeid: str) -> str:
    return hashlib.sha1(nodeid.encode()).hexdigest()


def _unfinished(folder: Path, names: set[str]) -> set[str]:
    return names - set(os.listdir(folder) if folder.is_dir() else ())


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Under xdist each test, once finished (passed, failed or skipped), is noted in the run's shared folder. An
    `alone` test first waits, before its timeout starts, until every other test of the run is noted, or ALONE_WAIT_S
    (a worker that crashed notes nothing); how long it waited goes to its report."""
    folder = _finished_folder(item.config)
    if folder is not None and item.get_closest_marker("alone") is not None:
        others = {_finished_name(i.nodeid) for i in item.session.items if i.get_closest_marker("alone") is None}
        began = time.monotonic()
        while _unfinished(folder, others) and time.monotonic() - began < ALONE_WAIT_S:
            time.sleep(0.2)
        item.add_report_section("setup", "alone", f"waited {time.monotonic() - began:.1f} s for the other tests; "
                                f"{len(_unfinished(folder, others))} of {len(others)} unfinished")
    yield
    if folder is not None:
        folder.mkdir(exist_ok=True)
        (folder / _finished_name(item.nodeid)).touch()


# --- the checkout check: `git status --ignored` the same after the run as before it ------------------------

def _checkout_snapshot() -> set[str] | None:
    """``git status --ignored --porcelain`` of the checkout, less Python's bytecode caches (what any import
    writes) and pytest's own cache folder; None where the tests do not run from a git checkout (an sdist, an
    installed copy) or git is missing."""
    if not (ROOT / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "status", "--ignored", "--porcelain"], capture_output=True,
                              text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return {line for line in done.stdout.splitlines() if not line.endswith(("__pycache__/", ".pyc", " .pytest_cache/"))}


def _checks_checkout(config: pytest.Config) -> bool:
    # xdist's workers share the controller's checkout: the controller alone compares
    return os.environ.get(CHECKOUT_CHECK_ENV, "1") != "0" and not hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    if _checks_checkout(session.config):
        session.config.stash[_BEFORE] = _checkout_snapshot()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(_BEFORE, None)
    if before is None or not _checks_checkout(session.config):
        return
    after = _checkout_snapshot()
    if after is None or after == before:
        return
    changes = [f"+ {line}" for line in sorted(after - before)] + [f"- {line}" for line in sorted(before - after)]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["the test run changed the checkout (tests write under tmp paths only; "
             f"`git status --ignored`, before -> after; {CHECKOUT_CHECK_ENV}=0 skips this check):", *changes[:40]]
    if reporter is not None:
        reporter.write_sep("=", "checkout changed", red=True)
        for line in lines:
            reporter.write_line(line)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


_BEFORE = pytest.StashKey[set[str] | None]()
_STDERR = pytest.StashKey[object]()


@pytest.fixture
def fake_nvml() -> Callable[..., object]:
    """Install a fake pynvml: ``nv = fake_nvml([FakeGpu(...)], driver=...)``. Restored afterwards."""

    def install(gpus: list[FakeGpu] | None = None, **kwargs: object) -> object:
        fake = make_fake_nvml(gpus, **kwargs)
        nvml.reset()
        nvml.load(importer=lambda: fake)
        return fake

    yield install
    nvml.reset()


@pytest.fixture
def no_nvml() -> None:
    """NVML missing, as on a CPU machine or macOS."""

    def missing() -> object:
        raise ImportError("No module named 'pynvml'")

    nvml.reset()
    nvml.load(importer=missing)
    yield
    nvml.reset()
