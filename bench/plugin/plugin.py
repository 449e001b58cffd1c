"""The pytest face: ``pytest bench/ --benchmark-json=results.json [--profile quick ...]``.

Options are validated before any GPU work (a bad one is a one-line usage error naming the valid
choices); the matrix's cells parametrise ``test_cell`` with ids = ``Cell.id``; after collection (and
``-k``/deselection) the selected cells form the run's groups, so the first cell of a group measures the
group and later ones return stored results (with ``--repeats N`` the first cell measures every group N
times, see bench/runtime/run.py). Results enter pytest-benchmark's JSON through its hooks (see
bench/plugin/bridge.py and docs/bench.md). Run state lives in ``config.stash``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bench.core import matrix
from bench.core.journal import Journal, JournalError, read_journal
from bench.core.options import ISOLATIONS, RoundsPolicy, RunOptions, import_model_modules
from bench.core.schema import BATCH_MAX, SCHEMA_NAME, SCHEMA_VERSION, Cell, CellResult


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
    run: Any = None  # bench.runtime.run.BenchRun, made on the first cell


STATE = pytest.StashKey[RunState]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("detbench", "detbench benchmark matrix")
    group.addoption("--profile", default="auto", help=f"matrix profile: {', '.join(matrix.PROFILES)} "
                    "(auto = smoke without CUDA, quick with CUDA)")
    group.addoption("--models", default=None, help="comma-separated model names (only these; see --list-models)")
    group.addoption("--modes", default=None, help="comma-separated: infer,train (replaces the profile's modes)")
    group.addoption("--precisions", default=None, help="comma-separated: fp32,amp-fp16,amp-bf16")
    group.addoption("--compile", default=None,
                    help=f"comma-separated compile modes: {', '.join(matrix.COMPILE_CHOICES)} "
                    "(compiled = --compile-mode's mode, both = eager,compiled; default: the profile's choice)")
    group.addoption("--memory-format", default=None, help="comma-separated: contiguous,channels_last (channels_last: "
                    "convolutional models only; default: the profile's choice)")
    group.addoption("--cudnn-benchmark", default="on", help="torch.backends.cudnn.benchmark: on (default) or off")
    group.addoption("--batch-sizes", default=None, help="comma-separated positive integers or max (the largest batch "
                    "that fits, searched), e.g. 1,8,max")
    group.addoption("--image-size", default=None, help="HEIGHTxWIDTH for every cell, e.g. 480x640")
    group.addoption("--weights", action="append", default=[], metavar="NAME=PATH",
                    help="local state dict for a model (repeatable); default random init, never downloads")
    group.addoption("--gpus", default=None, help="comma-separated GPU counts, e.g. 1,2,4 (default 1; the quick "
                    "profile adds every visible count on a multi-GPU machine)")
    group.addoption("--isolation", default=None, help="model (a worker per model group, variants interleaved; "
                    "default on GPU), cell (a process per cell) or inline (this process; default on CPU)")
    group.addoption("--rounds", type=int, default=None,
                    help="interleaved rounds per group (default 4 on GPU, 3 on CPU)")
    group.addoption("--block-s", type=float, default=None, help="seconds per timed block (default 0.5 on GPU, "
                    "0.1 on CPU)")
    group.addoption("--repeats", type=int, default=1, help="measure every cell N separate times at different "
                    "moments of the run (the whole matrix again per repeat, order rotated); the comparison then "
                    "judges by between-repeat spread (default 1)")
    group.addoption("--cell-timeout", type=float, default=600.0, help="seconds a worker may go without progress "
                    "before it is killed (the cell is recorded as timeout); default 600")
    group.addoption("--telemetry-hz", type=float, default=50.0, help="NVML sampling rate; 0 disables (default 50)")
    group.addoption("--compile-mode", default="default", help="the torch.compile mode --compile compiled stands for "
                    "(default 'default'; --compile can name modes directly)")
    group.addoption("--optimizer", default="sgd", help="training optimizer: sgd (momentum 0.9) or adamw")
    group.addoption("--seed", type=int, default=0, help="seed for weights and synthetic inputs")
    group.addoption("--detbench-journal", default=None, help="JSONL journal of finished cells (default: next to "
                    "--benchmark-json, else .detbench/journal-<time>.jsonl)")
    group.addoption("--detbench-resume", default=None, metavar="JOURNAL",
                    help="journal of an interrupted run with the same options: its finished cells and repeats are "
                    "taken as they are (copied into this run's journal), the rest is measured")
    group.addoption("--detbench-strict", action="store_true", help="fail (not xfail) oom/error/timeout cells")
    group.addoption("--model-modules", default=os.environ.get("DETBENCH_MODEL_MODULES"),
                    help="comma-separated modules to import that register extra models")
    group.addoption("--list-models", action="store_true", help="print the registered models and exit")


def runs_the_matrix(config: pytest.Config) -> bool:
    """Whether this pytest session collects the matrix (bench/plugin/test_cells.py): the plugin is installed for
    every pytest run of the environment and stays inert in the others."""
    here = Path(__file__).resolve().parent
    package = here.parent
    for arg in config.args:
        target = arg.split("::", 1)[0]
        if config.option.pyargs and not Path(target).exists():
            spec = importlib.util.find_spec(target) if target.split(".")[0] == "bench" else None
            origin = spec.origin if spec is not None else None
            if origin is None:
                continue
            path = Path(origin).resolve()
            path = path.parent if path.name == "__init__.py" else path
        else:
            path = (Path(config.invocation_params.dir) / target).resolve()
        if path == package or (package in path.parents and (path == here or here in path.parents)):
            return True
    return False


def pytest_configure(config: pytest.Config) -> None:
    if STATE in config.stash or not runs_the_matrix(config):
        return
    try:
        state = _build_state(config)
    except (ValueError, ImportError) as exc:  # MatrixError, unknown model/option: one line, valid choices
        raise pytest.UsageError(str(exc)) from None
    config.stash[STATE] = state
    if threading.current_thread() is threading.main_thread():
        # `timeout` and job schedulers stop a run with SIGTERM: end it as Ctrl-C does, so the launcher kills the
        # worker (its own session, which the signal does not reach) and pytest still writes what was measured
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)


def _interrupt_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum} (SIGTERM)")


def _build_state(config: pytest.Config) -> RunState:
    from bench.models import list_models  # noqa: PLC0415

    opt = config.option
    modules = matrix.parse_csv(opt.model_modules) or ()
    import_model_modules(modules)
    if opt.list_models:
        print("\n".join(list_models()))
        pytest.exit("listed models", returncode=0)
    if opt.models is not None and matrix.parse_csv(opt.models) is None:
        raise matrix.MatrixError("--models is empty; name at least one model, e.g. --models retinanet_resnet50_fpn "
                                 "(--list-models lists them)")
    filters = matrix.MatrixFilters(
        models=matrix.parse_csv(opt.models), modes=matrix.parse_csv(opt.modes),
        precisions=matrix.parse_csv(opt.precisions), compile=matrix.parse_compile(opt.compile, opt.compile_mode),
        batch_sizes=matrix.parse_batch_sizes(opt.batch_sizes), image_size=matrix.parse_image_size(opt.image_size),
        gpus=matrix.parse_gpus(opt.gpus), memory_formats=matrix.parse_memory_formats(opt.memory_format))
    if opt.cudnn_benchmark not in ("on", "off"):
        raise matrix.MatrixError(f"bad --cudnn-benchmark {opt.cudnn_benchmark!r}; valid: on, off")
    if opt.isolation is not None and opt.isolation not in ISOLATIONS and opt.isolation != "process":
        raise matrix.MatrixError(f"unknown isolation {opt.isolation!r}; valid: {', '.join(ISOLATIONS)}")
    rounds = None
    if opt.rounds is not None or opt.block_s is not None:
        default = RoundsPolicy()
        rounds = RoundsPolicy(rounds=opt.rounds if opt.rounds is not None else default.rounds,
                              block_s=opt.block_s if opt.block_s is not None else default.block_s)
    weights = _parse_weights(opt.weights, list_models())
    matrix.resolve_profile(opt.profile, cuda_available=False)  # validate the name before touching CUDA
    capabilities = matrix.probe_capabilities()
    profile = matrix.resolve_profile(opt.profile, capabilities.cuda_available)
    cells, added = matrix.add_gpu_twins(matrix.expand(profile, filters, list_models(), capabilities.gpu_count))
    if opt.repeats > 1 and any(c.searches_batch for c in cells):
        raise matrix.MatrixError(f"batch size {BATCH_MAX} is not repeated (each repeat may find another boundary); "
                                 "run the search without --repeats, then repeat the batch size it found")
    options = RunOptions(
        profile=profile, seed=opt.seed, weights=weights,
        isolation=opt.isolation or ("model" if capabilities.cuda_available else "inline"),
        cell_timeout_s=opt.cell_timeout, telemetry_hz=opt.telemetry_hz, cudnn_benchmark=opt.cudnn_benchmark == "on",
        optimizer=opt.optimizer, model_modules=modules, rounds=rounds, repeats=opt.repeats)
    resumed = _read_resume(opt.detbench_resume)  # before the claim, which renames a journal at the same path aside
    journal = Journal.claim(benchmark_json_path(config), opt.detbench_journal)
    return RunState(cells, options, capabilities, journal, filters, added, resumed=resumed)


def _read_resume(path: str | None) -> list[CellResult]:
    if path is None:
        return []
    try:
        return read_journal(path)
    except OSError as exc:
        raise JournalError(f"cannot read --detbench-resume {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # SchemaError or a torn line in the middle
        raise JournalError(f"--detbench-resume {path} is not a detbench journal ({exc})") from None


def benchmark_json_path(config: pytest.Config) -> str | None:
    """The ``--benchmark-json`` path: pytest-benchmark < 5 parses it as an open file (argparse.FileType),
    later releases as a path."""
    value = getattr(config.option, "benchmark_json", None)
    if value is None or isinstance(value, (str, os.PathLike)):
        return os.fspath(value) if value is not None else None
    return str(value.name)  # an open file: its path


def _parse_weights(items: list[str], known: list[str]) -> dict[str, str]:
    weights = {}
    for item in items:
        for part in item.split(","):
            name, sep, path = part.partition("=")
            if not sep or not name or not path:
                raise matrix.MatrixError(f"bad --weights {part!r}; use NAME=PATH, e.g. retinanet_resnet50_fpn=r.pth")
            if name not in known:
                raise matrix.MatrixError(f"unknown model {name!r} in --weights; valid: {', '.join(known)}")
            weights[name] = path
    return weights


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
        from bench.plugin.display import render  # noqa: PLC0415
        from bench.runtime.run import BenchRun  # noqa: PLC0415
        from envcheck.fingerprint import collect  # noqa: PLC0415

        reporter = config.pluginmanager.getplugin("terminalreporter")
        capture = config.pluginmanager.getplugin("capturemanager")

        def display(text: object) -> None:
            if reporter is None:
                return
            # Output capture is on while a test runs; step around it so the line reaches the terminal now.
            with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
                reporter.write_line(render(text, color=reporter.hasmarkup, width=_width(reporter)))

        cells = state.selected if state.selected is not None else state.cells
        state.run = BenchRun(state.options, state.capabilities, cells, state.journal, display, collect(), state.added,
                             resumed=state.resumed)
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
    from envcheck.fingerprint import collect  # noqa: PLC0415

    machine_info["detbench_environment"] = collect()


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: Any, output_json: dict[str, Any]) -> None:
    """Cells that measured nothing (skipped/oom/error/timeout) have no stats, so pytest-benchmark leaves
    them out of ``benchmarks``; they are kept here, beside it, with the run's configuration."""
    state = config.stash.get(STATE, None)
    if state is None:
        return
    run = state.run
    results = list(run.results.values()) if run else []
    output_json["detbench"] = {
        "schema": SCHEMA_NAME,
        "schema_version": SCHEMA_VERSION,
        "profile": state.options.profile,
        "options": state.options.to_dict(),
        "journal": str(state.journal.path),
        "run_id": state.journal.run_id,
        "cell_ids": [c.id for c in state.cells],
        "added_cells": state.added,
        "not_measured": [r.to_dict() for r in results if r.status != "ok"],
    }


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """pytest-benchmark writes no ``--benchmark-json`` when no cell measured anything (every cell OOM, error or
    skipped): write it here, through the same hooks, so the file still holds the run and its failed cells."""
    config = session.config
    state = config.stash.get(STATE, None)
    bench_session = getattr(config, "_benchmarksession", None)  # pytest-benchmark's, set at configure
    run = state.run if state else None
    if run is None or not run.results or any(r.status == "ok" for r in run.results.values()):
        return  # pytest-benchmark wrote the file (or nothing ran, or --benchmark-disable kept measured cells out)
    if bench_session is None or bench_session.benchmarks or not getattr(bench_session, "json", None):
        return
    hook = config.hook
    commit_info = hook.pytest_benchmark_generate_commit_info(config=config)
    hook.pytest_benchmark_update_commit_info(config=config, commit_info=commit_info)
    output_json = hook.pytest_benchmark_generate_json(config=config, benchmarks=[], include_data=True,
                                                      machine_info=bench_session.get_machine_info(),
                                                      commit_info=commit_info)
    hook.pytest_benchmark_update_json(config=config, benchmarks=[], output_json=output_json)
    bench_session.save_json(output_json)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None or state.run is None or not state.run.results:
        return
    from bench.core.advice import advise  # noqa: PLC0415
    from bench.plugin.display import advice_table, overhead_line, render, summary_table  # noqa: PLC0415

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


def _width(reporter: Any) -> int:
    return max(int(getattr(getattr(reporter, "_tw", None), "fullwidth", 160) or 160), 160)
