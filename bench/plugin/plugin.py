"""The pytest face: ``pytest bench/ --benchmark-json=results.json [--profile quick ...]``.

Options are validated before any GPU work (a bad one is a one-line usage error naming the valid
choices); the matrix's cells parametrise ``test_cell`` with ids = ``Cell.id``; after collection (and
``-k``/deselection) the selected cells form the run's groups, so the first cell of a group measures the
group and later ones return stored results (with ``--repeats N`` the first cell measures every group N
times, see bench/runtime/run.py). Results enter pytest-benchmark's JSON through its hooks (see
bench/plugin/bridge.py and docs/bench.md). Run state lives in ``config.stash``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from detbench.bench.core import config as config_table
from detbench.bench.core import interrupts, matrix
from detbench.bench.core.journal import (
    Journal,
    JournalError,
    check_resume,
    default_journal_path,
    read_journal,
    writer_of,
)
from detbench.bench.core.options import OptionError, RunOptions, import_model_modules
from detbench.bench.core.record import benchmark_entry, cell_payload, run_block, write_file_atomically
from detbench.bench.core.schema import BATCH_MAX, Cell, CellResult


@dataclass
class RunState:
    """Everything one pytest session of the matrix needs, kept in ``config.stash[STATE]``."""

    cells: list[Cell]
    options: RunOptions
    capabilities: matrix.Capabilities
    journal: Journal
    filters: matrix.MatrixFilters
    added: dict[str, str] = field(default_factory=dict)  # cell id -> why the run added it
    selected: list[Cell] | None = None  # after -k / deselection
    resumed: list[CellResult] = field(default_factory=list)  # --detbench-resume: results taken, not measured
    # the run's calibration cache (detbench.bench.models.postprocess.CalibrationCache)
    calibration_dir: Path | None = None
    run: Any = None  # detbench.bench.runtime.run.BenchRun, made on the first cell


STATE = pytest.StashKey[RunState]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """The run's options, from the one table (detbench.bench.core.config), as ``--detbench-<name>``: the plugin is
    loaded in every pytest session of an environment where detbench is installed, before any project's conftest, so it
    takes no name a project may use (``--seed``, ``--models``). The short names come only in a run of the matrix
    (:func:`pytest_load_initial_conftests`)."""
    group = parser.getgroup("detbench", "detbench benchmark matrix")
    for option in config_table.OPTION_TABLE:
        group.addoption(_prefixed(option.name), **_spec(option))
    group.addoption("--detbench-benchmark-table", action="store_true", dest="detbench_benchmark_table",
                    help="also print pytest-benchmark's own results table after detbench's summary (off by default)")


@pytest.hookimpl(hookwrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> Any:
    """In a run of the matrix only, and after the project's own conftests: the short option names (``--models``,
    ``--profile``), each one that nothing else took (``--profile`` is pytest-profiling's, say: then
    ``--detbench-profile`` alone)."""
    yield
    known = early_config.known_args_namespace
    if not names_the_matrix(getattr(known, "file_or_dir", None) or [], bool(getattr(known, "pyargs", False)),
                            Path(early_config.invocation_params.dir)):
        return
    group = parser.getgroup("detbench", "detbench benchmark matrix")
    for option in config_table.OPTION_TABLE:
        if option.name != _prefixed(option.name):
            with contextlib.suppress(ValueError, argparse.ArgumentError):  # taken: the prefixed name serves
                group.addoption(option.name, **_spec(option))


def _prefixed(name: str) -> str:
    return name if name.startswith("--detbench-") else "--detbench-" + name[2:]


def _spec(option: config_table.Option) -> dict[str, Any]:
    """The option's keywords for pytest, its ``dest`` prefixed too (pytest refuses a second option of one dest, so
    a project's ``--seed`` must not meet a ``seed`` of ours)."""
    spec = config_table.argument_spec(option)
    spec["dest"] = _dest(option)
    if option.name == "--model-modules":
        spec["default"] = os.environ.get("DETBENCH_MODEL_MODULES")
    return spec


def _dest(option: config_table.Option) -> str:
    return option.dest if option.dest.startswith("detbench_") else "detbench_" + option.dest


def option_values(config: pytest.Config) -> dict[str, Any]:
    """The run's option values by the table's names (``{"seed": 0, "models": ...}``), as resolve() takes them."""
    return {o.dest: getattr(config.option, _dest(o), None) for o in config_table.OPTION_TABLE}


def runs_the_matrix(config: pytest.Config) -> bool:
    """Whether this pytest session collects the matrix (bench/plugin/test_cells.py): the plugin is installed for
    every pytest run of the environment and stays inert in the others."""
    return names_the_matrix(config.args, bool(config.option.pyargs), Path(config.invocation_params.dir))


def names_the_matrix(args: list[str], pyargs: bool, invocation_dir: Path) -> bool:
    """Whether one of pytest's ``args`` (paths, or with ``--pyargs`` module names) is the bench package or lies in
    this plugin's folder."""
    here = Path(__file__).resolve().parent
    package = here.parent
    for arg in args:
        target = str(arg).split("::", 1)[0]
        if pyargs and not Path(target).exists():
            spec = importlib.util.find_spec(target) if _names_bench(target) else None
            origin = spec.origin if spec is not None else None
            if origin is None:
                continue
            path = Path(origin).resolve()
            path = path.parent if path.name == "__init__.py" else path
        else:
            path = (invocation_dir / target).resolve()
        if path == package or (package in path.parents and (path == here or here in path.parents)):
            return True
    return False


def _names_bench(module: str) -> bool:
    return module == "detbench.bench" or module.startswith("detbench.bench.")


def pytest_configure(config: pytest.Config) -> None:
    if STATE in config.stash or not runs_the_matrix(config):
        return
    if config.getoption("numprocesses", None) or hasattr(config, "workerinput"):
        raise pytest.UsageError("detbench measures its cells one group at a time in one process: pytest-xdist (-n) "
                                "would time them against each other; leave -n out")
    from detbench.bench.models.registry import UnknownModelError  # noqa: PLC0415 (imports torch: only for the matrix)

    try:
        state = _build_state(config)
    except (OptionError, JournalError, UnknownModelError, ImportError) as exc:  # one line naming valid choices
        raise pytest.UsageError(str(exc)) from None
    config.stash[STATE] = state
    if threading.current_thread() is threading.main_thread():
        # `timeout` and job schedulers stop a run with SIGTERM: end it as Ctrl-C does, so the launcher kills the
        # worker (its own session, which the signal does not reach) and pytest still writes what was measured
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)


def _interrupt_on_sigterm(signum: int, frame: Any) -> None:
    interrupts.interrupt(KeyboardInterrupt(f"stopped by signal {signum} (SIGTERM)"))  # not inside a block's record


def _build_state(config: pytest.Config) -> RunState:
    from detbench.bench.models import list_models  # noqa: PLC0415

    values = option_values(config)
    import_model_modules(matrix.parse_csv(values["model_modules"]) or ())
    if values["list_models"]:
        print("\n".join(list_models()))
        pytest.exit("listed models", returncode=0)
    matrix.resolve_profile(values["profile"], cuda_available=False)  # validate the name before touching CUDA
    capabilities = matrix.probe_capabilities()
    run = config_table.resolve(values, cuda_available=capabilities.cuda_available, known_models=list_models())
    for note in run.notes:
        print(f"detbench: {note}", file=sys.stderr, flush=True)
    cells, added = matrix.add_gpu_twins(matrix.expand(run.profile, run.filters, list_models(),
                                                      capabilities.gpu_count))
    if run.options.repeats > 1 and any(c.searches_batch for c in cells):
        raise matrix.MatrixError(f"batch size {BATCH_MAX} is not repeated (each repeat may find another boundary); "
                                 "run the search without --repeats, then repeat the batch size it found")
    from detbench.envcheck.fingerprint import collect  # noqa: PLC0415

    environment = collect()
    # before the claim, which renames a journal at the same path aside
    resumed = _read_resume(run.resume, run.options.to_dict(), environment)
    if config.option.collectonly:  # nothing will run: no journal is claimed, no file touched or renamed aside
        journal = Journal(run.journal or default_journal_path(benchmark_json_path(config)),
                          options=run.options.to_dict(), environment=environment)
    else:
        journal = Journal.claim(benchmark_json_path(config), run.journal, options=run.options.to_dict(),
                                environment=environment)
    # beside the journal (a resume: the resumed one's), so a run's repeats and its resume calibrate once
    calibration = calibration_dir(Path(run.resume) if run.resume else journal.path)
    return RunState(cells, run.options, capabilities, journal, run.filters, added, resumed=resumed,
                    calibration_dir=calibration)


def calibration_dir(journal: Path) -> Path:
    """``X.journal.jsonl`` -> ``X.journal.calibration``: the folder of a run's calibration cache."""
    return journal.with_name(journal.name.removesuffix(".jsonl") + ".calibration")


def _read_resume(path: str | None, options: dict[str, Any], environment: dict[str, Any]) -> list[CellResult]:
    """The journal's results, refused (one line) when unreadable or measured elsewhere or otherwise."""
    if path is None:
        return []
    writer = writer_of(Path(path))
    if writer is not None:
        raise JournalError(f"--detbench-resume {path} is being written by a live run ({writer}); resume it once that "
                           "run has ended")
    try:
        results = read_journal(path)
    except OSError as exc:
        raise JournalError(f"cannot read --detbench-resume {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # SchemaError or a torn line in the middle; the message names the file and line
        raise JournalError(f"--detbench-resume is not a detbench journal: {exc}") from None
    check_resume(path, results, options, environment)
    return results


def benchmark_json_path(config: pytest.Config) -> str | None:
    """The ``--benchmark-json`` path: pytest-benchmark < 5 parses it as an open file (argparse.FileType),
    later releases as a path."""
    value = getattr(config.option, "benchmark_json", None)
    if value is None or isinstance(value, (str, os.PathLike)):
        return os.fspath(value) if value is not None else None
    return str(value.name)  # an open file: its path


def _state(config: pytest.Config) -> RunState:
    return config.stash[STATE]


def pytest_collection_finish(session: pytest.Session) -> None:
    """The cells pytest will run (after -k and deselection): the groups are formed from these only."""
    state = session.config.stash.get(STATE, None)
    if state is None:
        return
    state.selected = [item.callspec.params["detbench_cell"] for item in session.items
                      if hasattr(item, "callspec") and "detbench_cell" in item.callspec.params]


def _bench_run(config: pytest.Config) -> Any:
    state = _state(config)
    if state.run is None:
        from detbench.bench.models.postprocess import CACHE_ENV  # noqa: PLC0415 (imports torch)
        from detbench.bench.plugin.display import group_line, render, result_line  # noqa: PLC0415
        from detbench.bench.runtime.run import BenchRun, RunDisplay  # noqa: PLC0415

        reporter = config.pluginmanager.getplugin("terminalreporter")
        capture = config.pluginmanager.getplugin("capturemanager")

        def display(text: object) -> None:
            if reporter is None:
                return
            # Output capture is on while a test runs; step around it so the line reaches the terminal now.
            with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
                reporter.write_line(render(text, color=reporter.hasmarkup, width=_width(reporter)))

        shown = RunDisplay(group=lambda *group: display(group_line(*group)),
                           result=lambda result, index, total: display(result_line(result, index, total)))
        cells = state.selected if state.selected is not None else state.cells
        if state.calibration_dir is not None and CACHE_ENV not in os.environ:  # workers inherit it (child_env)
            os.environ[CACHE_ENV] = str(state.calibration_dir)
        else:
            state.calibration_dir = None  # the user's own cache folder: left as set
        state.run = BenchRun(state.options, state.capabilities, cells, state.journal, shown,
                             state.journal.environment, state.added, resumed=state.resumed)
    return state.run


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "detbench_cell" in metafunc.fixturenames:
        cells = _state(metafunc.config).cells
        metafunc.parametrize("detbench_cell", cells, ids=[c.id for c in cells])


@pytest.fixture(scope="session")
def detbench_run(request: pytest.FixtureRequest) -> Any:
    return _bench_run(request.config)


@pytest.fixture(scope="session")
def detbench_strict(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.option.detbench_strict)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    from detbench.envcheck.fingerprint import collect  # noqa: PLC0415

    machine_info["detbench_environment"] = collect()


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: Any, output_json: dict[str, Any]) -> None:
    """The run's own block (detbench.bench.core.record): options and id once; cells that measured nothing (skipped, oom,
    error, timeout) have no stats, so pytest-benchmark leaves them out of ``benchmarks``: they are kept here."""
    state = config.stash.get(STATE, None)
    if state is None:
        return
    run = state.run
    results = list(run.results.values()) if run else []
    options = state.options.to_dict()
    output_json["detbench"] = run_block(
        options=options, run_id=state.journal.run_id, cell_ids=[c.id for c in state.cells],
        not_measured=[cell_payload(r, options, state.journal.environment) for r in results if r.status != "ok"],
        profile=state.options.profile, journal=str(state.journal.path), added_cells=state.added)


def pytest_sessionstart(session: pytest.Session) -> None:
    """detbench writes ``--benchmark-json`` itself (:func:`pytest_sessionfinish`): pytest-benchmark's writer is
    turned off, so the file is whole or absent, holds every cell, and a full disk is one line."""
    if session.config.stash.get(STATE, None) is None:
        return
    from detbench.bench.plugin.bridge import quiet_benchmark_table, take_over_json  # noqa: PLC0415

    quiet_benchmark_table(session.config)  # its table off while detbench prints the summary
    take_over_json(session.config)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write ``--benchmark-json`` through pytest-benchmark's hooks: the fed benchmarks, plus measured cells no test
    fed (a ``--repeats`` run stopped by Ctrl-C or SIGTERM keeps its finished repeats, merged), plus cells that
    measured nothing (in ``detbench.not_measured``); also when no cell measured anything. Atomically: a failed
    write (a full disk) leaves no partial file, says so in one line and makes the exit status non-zero."""
    config = session.config
    state = config.stash.get(STATE, None)
    run = state.run if state else None
    target = state.journal.benchmark_json if state else None
    if state is None or target is None:
        return
    from detbench.bench.plugin import bridge  # noqa: PLC0415

    if not bridge.writes_json(config):
        return
    fed = bridge.fed_benchmarks(config)
    if not fed and (run is None or not run.results):
        return  # nothing ran: no file, as pytest-benchmark does
    try:
        write_file_atomically(target, bridge.dumps(bridge.run_json(config, _unfed_entries(fed, state))))
    except OSError as exc:
        print(f"detbench: cannot write --benchmark-json {target}: {exc.strerror or exc}; every finished cell is in "
              f"the journal {state.journal.path}", file=sys.stderr, flush=True)
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR


def _unfed_entries(fed: list[Any], state: RunState) -> list[dict[str, Any]]:
    """The run's measured cells that no test fed (a cut ``--repeats`` run's merged repeats), as benchmark entries."""
    fed_ids = {(getattr(b, "extra_info", None) or {}).get("detbench", {}).get("cell_id") for b in fed}
    options = state.options.to_dict()
    results = state.run.results.values() if state.run else []
    return [benchmark_entry(r, options, state.journal.environment,
                            f"bench/plugin/test_cells.py::test_cell[{r.cell.id}]", r.cell.id)
            for r in results if r.status == "ok" and r.times_ms and r.cell.id not in fed_ids]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None or state.run is None or not state.run.results:
        return
    from detbench.bench.core.advice import advise  # noqa: PLC0415
    from detbench.bench.plugin.display import advice_table, overhead_line, render, summary_table  # noqa: PLC0415

    results = list(state.run.results.values())
    terminalreporter.write_sep("=", "detbench summary")
    terminalreporter.write_line(render(summary_table(results), color=terminalreporter.hasmarkup,
                                       width=_width(terminalreporter)))
    terminalreporter.write_line(overhead_line(results))
    terminalreporter.write_line(render(advice_table(advise(results)), color=terminalreporter.hasmarkup,
                                       width=_width(terminalreporter)))
    terminalreporter.write_line(f"journal: {state.journal.path}")


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is not None:
        state.journal.close()
        if state.calibration_dir is not None and state.run is not None:
            from detbench.bench.models.postprocess import CACHE_ENV  # noqa: PLC0415 (imports torch)

            if os.environ.get(CACHE_ENV) == str(state.calibration_dir):
                del os.environ[CACHE_ENV]


def _width(reporter: Any) -> int:
    return max(int(getattr(getattr(reporter, "_tw", None), "fullwidth", 160) or 160), 160)
