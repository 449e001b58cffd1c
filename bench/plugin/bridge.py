"""How a measured cell enters pytest-benchmark: our device-timed iterations become the fixture's stats.

pytest-benchmark times calls with a host clock; our cells are timed by CUDA events (or perf_counter +
sync on CPU) inside the cell process. So the fixture is not asked to call anything: its stats object
is made the way ``pedantic`` makes it (``_make_stats(1)``: one iteration per round) and fed one round
per measured iteration, in seconds. min/max/median/ops and ``pytest-benchmark compare`` then describe
exactly the iterations detbench measured. tests/bench/plugin/test_smoke_e2e.py guards this use of the
fixture's internals against pytest-benchmark changes. Every use of pytest-benchmark's private parts (the fixture's
``_mode``/``_make_stats``, the session on ``config._benchmarksession``) is in this module.
"""

from __future__ import annotations

from typing import Any

import pytest

from detbench.bench.core.record import cell_payload
from detbench.bench.core.schema import CellResult

FIXTURE_MODE = "detbench: device-timed iterations"


def feed_benchmark(benchmark: Any, result: CellResult, options: dict[str, Any] | None = None,
                   environment: dict[str, Any] | None = None) -> None:
    """Attach the result as ``extra_info["detbench"]`` and, for ok cells, its times as the stats. The run's options
    and environment, held once by the run (detbench.bench.core.record), and the iterations the stats hold are left
    out."""
    feeds = result.status == "ok" and bool(result.times_ms) and not getattr(benchmark, "disabled", False)
    benchmark.extra_info["detbench"] = cell_payload(result, options, environment, iterations_in_stats=feeds)
    benchmark.extra_info["detbench_status"] = result.status
    if not feeds:
        return
    if getattr(benchmark, "_mode", None):
        raise RuntimeError(f"the benchmark fixture was already used ({benchmark._mode})")
    benchmark._mode = FIXTURE_MODE
    stats = benchmark._make_stats(1)
    for ms in result.times_ms:
        stats.update(ms / 1000.0)


def conclude(result: CellResult, strict: bool) -> None:
    """The test outcome: ok passes, skipped and not-supported skip; oom/error/timeout are recorded results that xfail
    (the run goes on and exits 0) unless ``strict`` (``--detbench-strict``), which fails them."""
    if result.status == "ok":
        return
    if result.status in ("skipped", "not-supported"):  # not-supported: a runtime that cannot take the model
        pytest.skip(f"{result.status}: {result.reason}" if result.status != "skipped" else result.reason or "skipped")
    message = f"{result.status}: {result.reason or 'no reason given'}"
    if strict:
        pytest.fail(message, pytrace=False)
    pytest.xfail(message)


def benchmark_session(config: pytest.Config) -> Any | None:
    """pytest-benchmark's session (set when its plugin configures; None when it is not loaded)."""
    return getattr(config, "_benchmarksession", None)


def quiet_benchmark_table(config: pytest.Config) -> None:
    """pytest-benchmark's own results table off while detbench prints its summary (``--detbench-benchmark-table``
    keeps it): the same figures in a table wider than a log. Its ``quiet`` flag (``--benchmark-quiet``) keeps the
    JSON, the saved runs and ``--benchmark-compare-fail``."""
    session = benchmark_session(config)
    if session is not None and not config.getoption("detbench_benchmark_table", default=False):
        session.quiet = True


def take_over_json(config: pytest.Config) -> None:
    """Turn pytest-benchmark's ``--benchmark-json`` writer off: detbench writes the file itself (whole or absent)."""
    session = benchmark_session(config)
    if session is None or not getattr(session, "json", None):
        return
    if hasattr(session.json, "close"):  # pytest-benchmark < 5 opened the file while parsing the options
        session.json.close()
    session.json = None


def writes_json(config: pytest.Config) -> bool:
    """Whether pytest-benchmark is on for this run (``--benchmark-disable`` and no plugin: off)."""
    session = benchmark_session(config)
    return session is not None and not getattr(session, "disabled", False)


def fed_benchmarks(config: pytest.Config) -> list[Any]:
    """The benchmarks the run's tests fed (pytest-benchmark's list)."""
    session = benchmark_session(config)
    return list(session.benchmarks) if session is not None else []


def run_json(config: pytest.Config, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The run file in pytest-benchmark's layout, from its hooks, with ``entries`` (benchmarks no test fed) added
    before its ``update_json`` hook runs."""
    session = benchmark_session(config)
    assert session is not None
    hook = config.hook
    commit_info = hook.pytest_benchmark_generate_commit_info(config=config)
    hook.pytest_benchmark_update_commit_info(config=config, commit_info=commit_info)
    output_json = hook.pytest_benchmark_generate_json(config=config, benchmarks=session.benchmarks,
                                                      include_data=True, machine_info=session.get_machine_info(),
                                                      commit_info=commit_info)
    output_json["benchmarks"] += entries
    hook.pytest_benchmark_update_json(config=config, benchmarks=session.benchmarks, output_json=output_json)
    return output_json


def dumps(data: dict[str, Any]) -> str:
    """The run file's text as pytest-benchmark writes it (its NaN-safe dumps, ASCII, indent 4)."""
    from pytest_benchmark.utils import safe_dumps  # noqa: PLC0415

    return str(safe_dumps(data, ensure_ascii=True, indent=4))
