"""The run record: one run's options and environment once, and its typed cell results; one serialiser.

A run file is pytest-benchmark's JSON layout (so ``pytest-benchmark compare`` and every tool that reads it keep
working): measured cells in ``benchmarks`` with their device-timed iterations as the stats and the cell result in
``extra_info.detbench``; cells that measured nothing in the top-level ``detbench.not_measured``; the run's
options, id and planned cells once, in the top-level ``detbench`` block, and its environment fingerprint once, in
pytest-benchmark's ``machine_info.detbench_environment``. A journal holds the same once, in its header line. The
pytest plugin fills the same blocks through pytest-benchmark's hooks (:func:`run_block`, :func:`cell_payload`);
tools that run cells without pytest (``detbench-ab``'s sides, the studies) write whole files with
:meth:`RunRecord.write`.

Readers get each cell back whole (:func:`load_results`): the run-level options and environment are put back
into every cell, and iterations stored once in the stats are restored to ``times_ms``. Files written before
the run record (options and environment in every cell, iterations twice) load unchanged.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detbench.bench.core.schema import SCHEMA_NAME, SCHEMA_VERSION, CellResult, SchemaError

RUN_SCHEMA = "detbench.run"


class RecordError(ValueError):
    """A file that is not a detbench run; one line naming the file and what is wrong."""


def cell_payload(result: CellResult, options: dict[str, Any] | None = None,
                 environment: dict[str, Any] | None = None, *, iterations_in_stats: bool = False) -> dict[str, Any]:
    """A cell's dict inside a run file: without what the run holds once (its options and environment, when equal)
    and, when the stats carry them, without its iterations."""
    data = result.to_dict()
    config = data.get("config")
    if options is not None and isinstance(config, dict) and _plain(config.get("options")) == _plain(options):
        config.pop("options")
    if environment is not None and _plain(data.get("environment")) == _plain(environment):
        data.pop("environment")
    if iterations_in_stats and result.status == "ok" and result.times_ms:
        data.pop("times_ms", None)
    return data


def _plain(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples become lists): what a file holds is what is compared."""
    return json.loads(json.dumps(value))


def cell_from_payload(data: dict[str, Any], run_block: dict[str, Any] | None, environment: dict[str, Any] | None,
                      stats_data_s: list[float] | None, source: str) -> CellResult:
    """A whole cell from its payload and what the run holds once (the inverse of :func:`cell_payload`)."""
    if not isinstance(data, dict):
        raise RecordError(f"{source}: a cell result must be an object, got a {type(data).__name__}")
    data = dict(data)
    block = run_block or {}
    if block.get("options") is not None and isinstance(data.get("config"), dict) and "options" not in data["config"]:
        data["config"] = {**data["config"], "options": block["options"]}
    if "environment" not in data and environment is not None:
        data["environment"] = environment
    if "times_ms" not in data and stats_data_s:
        data["times_ms"] = [t * 1000.0 for t in stats_data_s]
    return CellResult.from_dict(data, source=source)


def run_block(*, options: dict[str, Any] | None, run_id: str | None, cell_ids: list[str],
              not_measured: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """The top-level ``detbench`` block of a run file (the environment goes to ``machine_info``)."""
    return {"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "run_schema": RUN_SCHEMA, "options": options,
            "run_id": run_id, "cell_ids": cell_ids, "not_measured": not_measured, **extra}


def iteration_stats(times_ms: list[float]) -> dict[str, Any]:
    """pytest-benchmark's statistics of one benchmark, from our device-timed iterations (seconds)."""
    data = [t / 1000.0 for t in times_ms]
    ordered = sorted(data)
    n = len(ordered)
    q1, q3 = ordered[n // 4], ordered[(3 * n) // 4]
    mean = statistics.fmean(ordered)
    return {"min": ordered[0], "max": ordered[-1], "mean": mean,
            "stddev": statistics.stdev(ordered) if n > 1 else 0.0, "rounds": n, "median": statistics.median(ordered),
            "iqr": q3 - q1, "q1": q1, "q3": q3, "iterations": 1, "ops": 1.0 / mean if mean > 0 else 0.0,
            "total": sum(ordered), "data": data}


@dataclass
class RunRecord:
    """One run written without pytest: its results, options and environment (each once)."""

    results: list[CellResult]
    options: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None
    run_id: str | None = None
    tool: str = "detbench"
    extra: dict[str, Any] = field(default_factory=dict)  # the tool's own run-level facts (an A/B side's label ...)

    def benchmark_json(self) -> dict[str, Any]:
        benchmarks, not_measured = [], []
        for result in self.results:
            if result.status == "ok" and result.times_ms:
                benchmarks.append(benchmark_entry(result, self.options, self.environment,
                                                  f"{self.tool}::{result.cell.id}"))
            else:
                not_measured.append(cell_payload(result, self.options, self.environment))
        return {"machine_info": {"detbench_environment": self.environment}, "commit_info": {},
                "benchmarks": benchmarks, "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "version": self.tool,
                "detbench": run_block(options=self.options, run_id=self.run_id,
                                      cell_ids=[r.cell.id for r in self.results], not_measured=not_measured,
                                      tool=self.tool, **self.extra)}

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (a reader never sees half a file)."""
        return write_file_atomically(path, json.dumps(self.benchmark_json(), indent=1, allow_nan=False))


def benchmark_entry(result: CellResult, options: dict[str, Any] | None, environment: dict[str, Any] | None,
                    fullname: str, param: str | None = None) -> dict[str, Any]:
    """One measured (ok) cell as a pytest-benchmark ``benchmarks`` entry: its iterations are the stats."""
    payload = cell_payload(result, options, environment, iterations_in_stats=True)
    return {"group": None, "name": f"test_cell[{result.cell.id}]", "fullname": fullname, "params": None,
            "param": param, "extra_info": {"detbench": payload, "detbench_status": result.status},
            "options": {"timer": result.timer or "device"}, "stats": iteration_stats(result.times_ms)}


def write_file_atomically(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` so that ``path`` never holds half a file: into a temporary file beside it, synced, then renamed
    over it (the temporary file is removed on any failure, e.g. a full disk, and the OSError raised).

    A symbolic link is written through: the file it points to is replaced and the link stays a link. A special
    path (:func:`is_special_path`) is written in place: ``/dev/stdout``, ``/dev/stderr`` and ``/dev/fd/N`` through
    the process's own descriptor (a log that stdout is redirected to gets the text where the output stands, never
    truncated or replaced), a device or a pipe opened for writing."""
    if is_special_path(path):
        descriptor = _descriptor_named(path)
        if descriptor is None:
            with open(path, "w", encoding="utf-8") as sink:
                sink.write(text)
        else:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            data = text.encode("utf-8")
            while data:
                data = data[os.write(descriptor, data):]
        return Path(path)
    target = Path(os.path.realpath(path))  # through any link: renaming over a link would replace the link itself
    descriptor, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        with open(descriptor, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~_umask())  # as a plain open would make it, not mkstemp's 0600
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return Path(path)


def is_special_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names something other than a regular file: anything under ``/dev`` or ``/proc``
    (``/dev/stdout``, ``/dev/full``: judged before links are followed, since ``/dev/stdout`` resolves to whatever
    stdout is redirected to), or, links followed, an existing device, pipe or socket. Such a path is written in
    place and gets no file beside it (no journal, no temporary file)."""
    named = os.path.abspath(path)
    if named.startswith(("/dev/", "/proc/")):
        return True
    real = os.path.realpath(path)
    return os.path.exists(real) and not os.path.isfile(real) and not os.path.isdir(real)


def _descriptor_named(path: str | os.PathLike[str]) -> int | None:
    """The file descriptor a ``/dev/stdout``-like path names (1, 2, N of ``/dev/fd/N`` or ``/proc/self/fd/N``)."""
    named = os.path.abspath(path)
    if named in ("/dev/stdout", "/dev/stderr"):
        return 1 if named.endswith("out") else 2
    for prefix in ("/dev/fd/", "/proc/self/fd/"):
        if named.startswith(prefix) and named[len(prefix):].isdigit():
            return int(named[len(prefix):])
    return None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def results_of_benchmark_json(data: dict[str, Any], source: str) -> list[CellResult]:
    """Every cell of a pytest-benchmark JSON written by detbench, whole (see the module docstring)."""
    block = data.get("detbench")
    if block is not None and not isinstance(block, dict):
        raise RecordError(f"{source}: top-level 'detbench' must be an object, got a {type(block).__name__}")
    machine = data.get("machine_info")
    found = machine.get("detbench_environment") if isinstance(machine, dict) else None
    environment = found if isinstance(found, dict) else None
    results = []
    for i, bench in enumerate(data.get("benchmarks") or []):
        extra = bench.get("extra_info") if isinstance(bench, dict) else None
        payload = extra.get("detbench") if isinstance(extra, dict) else None
        if not isinstance(payload, dict):
            continue
        stats = bench.get("stats") if isinstance(bench.get("stats"), dict) else {}
        samples = stats.get("data") if isinstance(stats.get("data"), list) else None
        results.append(cell_from_payload(payload, block, environment, samples, f"{source}: benchmarks[{i}]"))
    for i, payload in enumerate((block or {}).get("not_measured") or []):
        if not isinstance(payload, dict):
            raise RecordError(f"{source}: detbench.not_measured[{i}] must be an object")
        results.append(cell_from_payload(payload, block, environment, None, f"{source}: detbench.not_measured[{i}]"))
    return results


def journal_results(lines: list[str], source: str) -> list[CellResult]:
    """The cells of a journal's lines, whole: the header line (``detbench.run``) holds the run's options and
    environment once; a torn last line (a crash mid-write) is ignored; other detbench records are skipped."""
    header: dict[str, Any] = {}
    results: list[CellResult] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            if number == len(lines) and results:
                break  # the write the crash interrupted
            where = f", column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
            detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise RecordError(f"{source}: line {number}{where} is not valid JSON ({detail})") from None
        schema = record.get("schema") if isinstance(record, dict) else None
        if schema == RUN_SCHEMA:
            header = record
            continue
        if isinstance(schema, str) and schema.startswith("detbench.") and schema != SCHEMA_NAME:
            continue
        results.append(cell_from_payload(record, header, header.get("environment"), None,
                                         f"{source}: line {number}"))
    return results


def latest_lines(results: list[CellResult]) -> list[CellResult]:
    """The last result of each (cell, repeat) in journal order: a cell's progress lines (``partial``, one per block)
    are each replaced by the next, and its final line by a later run's re-measurement."""
    latest: dict[tuple[str, int | None], CellResult] = {}
    for result in results:
        key = (result.cell.id, result.repeat)
        latest.pop(key, None)
        latest[key] = result
    return list(latest.values())


def load_results(path: str | os.PathLike[str]) -> list[CellResult]:
    """The cells of a run file (pytest-benchmark JSON) or a journal (JSON lines); RecordError on anything else."""
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{target}: cannot read ({exc})") from exc
    try:
        if target.suffix == ".jsonl":
            return journal_results(text.splitlines(), str(target))
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
            raise RecordError(f"{target}: not a pytest-benchmark result (no 'benchmarks' list)")
        return results_of_benchmark_json(data, str(target))
    except (ValueError, SchemaError) as exc:
        if isinstance(exc, RecordError):
            raise
        raise RecordError(f"{target}: {exc}") from exc
