"""Result files -> runs -> one tidy pandas table (one row per cell per run).

Reads pytest-benchmark JSON (``benchmarks[i].extra_info.detbench``) and the run journal (``*.jsonl``,
one cell result per line, so an interrupted run can still be reported). Every cell goes through
:meth:`bench.schema.CellResult.from_dict`; anything else raises :class:`LoadError` with a one-line reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from bench.schema import SCHEMA_NAME, CellResult, SchemaError


class LoadError(ValueError):
    """A result file that cannot be read as a detbench run; the message names the file and the problem."""


@dataclass
class Run:
    """One result file: its label, its cells and where it ran."""

    label: str
    path: Path
    kind: str  # "pytest-benchmark" or "journal"
    results: list[CellResult]
    environment: dict[str, Any] = field(default_factory=dict)
    datetime: str | None = None
    notes: list[str] = field(default_factory=list)  # non-fatal oddities worth showing (skipped lines, ...)

    def by_cell_id(self) -> dict[str, CellResult]:
        return {r.cell.id: r for r in self.results}


def load_run(path: str | Path, label: str | None = None) -> Run:
    """Read one pytest-benchmark JSON or journal JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadError(f"{path}: cannot read ({exc})") from exc
    if not text.strip():
        raise LoadError(f"{path}: file is empty")
    looks_like_journal = path.suffix == ".jsonl"
    if not looks_like_journal:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            # a journal saved under another name still has one object per line
            if text.lstrip().startswith("{") and "\n" in text.strip():
                looks_like_journal = True
            else:
                raise LoadError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if looks_like_journal:
        run = _load_journal(path, text)
    else:
        run = _load_benchmark_json(path, data)
    run.label = label or path.stem
    return run


def _load_benchmark_json(path: Path, data: Any) -> Run:
    if not isinstance(data, dict):
        raise LoadError(f"{path}: expected a pytest-benchmark JSON object, got a {type(data).__name__}")
    if "benchmarks" not in data or not isinstance(data["benchmarks"], list):
        keys = ", ".join(sorted(map(str, data))[:6]) or "none"
        raise LoadError(f"{path}: not a pytest-benchmark result (no 'benchmarks' list; top-level keys: {keys})")
    results: list[CellResult] = []
    foreign = 0
    for i, bench in enumerate(data["benchmarks"]):
        extra = bench.get("extra_info") if isinstance(bench, dict) else None
        cell = extra.get("detbench") if isinstance(extra, dict) else None
        if cell is None:
            foreign += 1
            continue
        name = bench.get("name", f"#{i}")
        results.append(_parse_cell(path, cell, f"benchmarks[{i}] ({name})"))
    # cells that measured nothing (oom, error, skipped, timeout) have no stats, so pytest-benchmark leaves
    # them out of "benchmarks"; bench/conftest.py keeps them beside it, in the top-level "detbench" block
    block = data.get("detbench")
    if block is not None and not isinstance(block, dict):
        raise LoadError(f"{path}: top-level 'detbench' must be an object, got a {type(block).__name__}")
    block = block or {}
    not_measured = block.get("not_measured") or []
    if not isinstance(not_measured, list):
        raise LoadError(f"{path}: detbench.not_measured must be a list")
    for i, cell in enumerate(not_measured):
        results.append(_parse_cell(path, cell, f"detbench.not_measured[{i}]"))
    if not results:
        what = f"{foreign} benchmark(s) without extra_info.detbench" if foreign else "an empty 'benchmarks' list"
        raise LoadError(f"{path}: no detbench results ({what})")
    notes = [f"{foreign} benchmark(s) without detbench results ignored"] if foreign else []
    results = _dedupe(results)
    planned = block.get("cell_ids")
    if isinstance(planned, list):
        have = {r.cell.id for r in results}
        missing = [str(c) for c in planned if c not in have]
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            notes.append(f"{len(missing)} planned cell(s) have no result (interrupted run?): {shown}")
    machine = data.get("machine_info") if isinstance(data.get("machine_info"), dict) else {}
    run = Run(label="", path=path, kind="pytest-benchmark", results=results, notes=notes)
    run.environment = _run_environment(run.results, machine)
    run.datetime = data.get("datetime") if isinstance(data.get("datetime"), str) else None
    return run


def _load_journal(path: Path, text: str) -> Run:
    lines = text.splitlines()
    results: list[CellResult] = []
    notes: list[str] = []
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == last and results:
                # an interrupted run may leave its last line half-written
                notes.append(f"line {i + 1} is truncated and was ignored")
                continue
            raise LoadError(f"{path}: line {i + 1} is not valid JSON ({exc.msg})") from exc
        schema = record.get("schema") if isinstance(record, dict) else None
        if isinstance(schema, str) and schema.startswith("detbench.") and schema != SCHEMA_NAME:
            continue  # other detbench records (run headers, ...) carry no cell
        results.append(_parse_cell(path, record, f"line {i + 1}"))
    if not results:
        raise LoadError(f"{path}: journal holds no detbench cell results")
    run = Run(label="", path=path, kind="journal", results=_dedupe(results), notes=notes)
    run.environment = _run_environment(run.results, {})
    return run


_OBJECT_FIELDS = ("telemetry", "environment", "detections_per_image", "postprocess", "config")


def _parse_cell(path: Path, data: Any, where: str) -> CellResult:
    try:
        result = CellResult.from_dict(data, source=where)
    except SchemaError as exc:
        raise LoadError(f"{path}: {exc}") from exc
    for name in _OBJECT_FIELDS:
        value = getattr(result, name)
        if value is not None and not isinstance(value, dict):
            raise LoadError(f"{path}: {where}: {name} must be an object, got {type(value).__name__}")
    if not isinstance(result.times_ms, list):
        raise LoadError(f"{path}: {where}: times_ms must be a list, got {type(result.times_ms).__name__}")
    return result


def _dedupe(results: list[CellResult]) -> list[CellResult]:
    """Keep the last result per cell id (a resumed run re-measures cells it already had)."""
    latest: dict[str, CellResult] = {}
    for result in results:
        latest.pop(result.cell.id, None)
        latest[result.cell.id] = result
    return list(latest.values())


def _run_environment(results: list[CellResult], machine_info: dict[str, Any]) -> dict[str, Any]:
    fingerprint = machine_info.get("detbench_environment")
    env: dict[str, Any] = dict(fingerprint) if isinstance(fingerprint, dict) else {}
    for result in results if not env else ():
        if result.environment:
            env = dict(result.environment)
            break
    fallbacks = {"hostname": machine_info.get("node"), "python": machine_info.get("python_version")}
    for key, value in fallbacks.items():
        if value and not env.get(key):
            env[key] = value
    return env


def load_runs(sources: Iterable[tuple[str | None, str | Path]]) -> list[Run]:
    """Load ``(label or None, path)`` pairs; labels are made unique (``name``, ``name-2``, ...)."""
    runs: list[Run] = []
    seen: set[str] = set()
    for label, path in sources:
        run = load_run(path, label)
        base, n = run.label, 2
        while run.label in seen:
            run.label = f"{base}-{n}"
            n += 1
        seen.add(run.label)
        runs.append(run)
    return runs


# The tidy table's columns, in display order; a reader can rely on every one being present.
COLUMNS = [
    "run",
    "cell_id",
    "model",
    "mode",
    "compile",
    "precision",
    "batch_size",
    "gpus",
    "image_size",
    "variant",
    "status",
    "reason",
    "throughput_ips",
    "throughput_ips_p10",
    "throughput_ips_p90",
    "latency_median_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "latency_iqr_ms",
    "latency_cov",
    "latency_n",
    "peak_memory_bytes",
    "flops_per_image",
    "achieved_tflops",
    "mfu",
    "detections_mean",
    "detections_min",
    "detections_max",
    "first_call_s",
    "compile_s",
    "graph_breaks",
    "break_even_iterations",
    "energy_per_image_j",
    "images_per_s_per_w",
    "mean_power_w",
    "gpu_util_pct_mean",
    "throttled",
    "telemetry_available",
    "has_series",
    "device",
    "gpu",
]


def variant_of(compile_mode: str, precision: str) -> str:
    """Short label for a (compile, precision) variant, e.g. ``compiled/amp-bf16``."""
    return f"{compile_mode}/{precision}"


def tidy(runs: list[Run]) -> pd.DataFrame:
    """One row per cell per run, columns as in :data:`COLUMNS`."""
    rows = [_row(run, result) for run in runs for result in run.results]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("batch_size", "gpus"):
        frame[col] = frame[col].astype(int)
    return frame


def _row(run: Run, r: CellResult) -> dict[str, Any]:
    cell = r.cell
    lat = r.latency
    det = r.detections_per_image if isinstance(r.detections_per_image, dict) else {}
    tel = r.telemetry if isinstance(r.telemetry, dict) else {}
    devices = [d for d in tel.get("devices") or [] if isinstance(d, dict)]
    util = [_num(_dig(d, "metrics", "gpu_util_pct", "mean")) for d in devices]
    util = [u for u in util if u is not None]
    env = r.environment or run.environment
    return {
        "run": run.label,
        "cell_id": cell.id,
        "model": cell.model,
        "mode": cell.mode,
        "compile": cell.compile,
        "precision": cell.precision,
        "batch_size": cell.batch_size,
        "gpus": cell.gpus,
        "image_size": f"{cell.image_size[0]}x{cell.image_size[1]}" if cell.image_size else "native",
        "variant": variant_of(cell.compile, cell.precision),
        "status": r.status,
        "reason": r.reason or "",
        "throughput_ips": _num(r.throughput_ips),
        "throughput_ips_p10": _num(r.throughput_ips_p10),
        "throughput_ips_p90": _num(r.throughput_ips_p90),
        "latency_median_ms": _num(lat.median_ms) if lat else None,
        "latency_p90_ms": _num(lat.p90_ms) if lat else None,
        "latency_p99_ms": _num(lat.p99_ms) if lat else None,
        "latency_iqr_ms": _num(lat.iqr_ms) if lat else None,
        "latency_cov": _num(lat.cov) if lat else None,
        "latency_n": lat.n if lat else None,
        "peak_memory_bytes": _num(r.peak_memory_bytes),
        "flops_per_image": _num(r.flops_per_image),
        "achieved_tflops": _num(r.achieved_tflops),
        "mfu": _num(r.mfu),
        "detections_mean": _num(det.get("mean")),
        "detections_min": _num(det.get("min")),
        "detections_max": _num(det.get("max")),
        "first_call_s": _num(r.first_call_s),
        "compile_s": _num(r.compile_s),
        "graph_breaks": _num(r.graph_breaks),
        "break_even_iterations": _num(r.break_even_iterations),
        "energy_per_image_j": _num(tel.get("energy_per_image_j")),
        "images_per_s_per_w": _num(tel.get("images_per_s_per_w")),
        "mean_power_w": _num(tel.get("mean_power_w")),
        "gpu_util_pct_mean": sum(util) / len(util) if util else None,
        "throttled": bool(tel.get("throttled")) if tel.get("available") else None,
        "telemetry_available": bool(tel.get("available")),
        "has_series": any(isinstance(d.get("series"), dict) and d["series"].get("t_s") for d in devices),
        "device": r.device or "",
        "gpu": str(env.get("gpu") or ""),
    }


def _dig(data: Any, *keys: str) -> Any:
    """``data[k1][k2]...`` or None where any level is missing or not a dict."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _num(value: Any) -> float | None:
    """A finite float, or None for missing / non-numeric / NaN values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None
