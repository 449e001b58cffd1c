"""Result files -> runs -> one tidy pandas table (one row per cell per run).

Reads pytest-benchmark JSON (``benchmarks[i].extra_info.detbench``), the run journal (``*.jsonl``, one
cell result per line, so an interrupted run can still be reported) and ``python -m detbench.bench.tools.interleaved``
results (their variants are cells too). Every cell goes through :meth:`detbench.bench.core.schema.CellResult.from_dict`,
which validates it (schema versions 1 and 2); anything else raises :class:`LoadError` with a one-line
reason naming the file and the field.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from detbench.bench.core import comparison as legacy
from detbench.bench.core import record
from detbench.bench.core.repeats import merge_repeats
from detbench.bench.core.schema import CellResult, SchemaError
from detbench.envcheck.redact import redact_tree


class LoadError(ValueError):
    """A result file that cannot be read as a detbench run; the message names the file and the problem."""


@dataclass
class Run:
    """One result file: its label, its cells and where it ran."""

    label: str
    path: Path
    kind: str  # "pytest-benchmark", "journal" or "interleaved"
    results: list[CellResult]
    environment: dict[str, Any] = field(default_factory=dict)
    datetime: str | None = None
    notes: list[str] = field(default_factory=list)  # non-fatal oddities worth showing (skipped lines, ...)
    run_id: str | None = None  # the run's id (detbench.bench.core.journal): a JSON and its own journal share it

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
    try:
        run = _parse(path, text)
    except RecursionError:  # json and the schema recurse per level: thousands of nested [[[...]]]
        raise LoadError(f"{path}: nested too deeply to be a detbench result (JSON nesting beyond Python's "
                        "recursion limit)") from None
    run.label = label or path.stem
    run.environment = redact_environment(run.environment)
    for result in run.results:
        if result.environment:
            result.environment = redact_environment(result.environment)
    return run


def _parse(path: Path, text: str) -> Run:
    """A benchmark JSON, an interleaved file or a journal (also one saved under another name)."""
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
    return _load_journal(path, text) if looks_like_journal else _load_benchmark_json(path, data)


def redact_environment(value: Any) -> Any:
    """An environment fingerprint (or any part of it) as it may be shown: :func:`detbench.envcheck.redact.redact_tree`
    (an older file may carry a registry URL with ``user:password@`` in ``image`` or a token in a setting, and everything
    a report shows or writes comes from here)."""
    return redact_tree(value)


def _load_benchmark_json(path: Path, data: Any) -> Run:
    if not isinstance(data, dict):
        raise LoadError(f"{path}: expected a pytest-benchmark JSON object, got a {type(data).__name__}")
    if data.get("schema") == legacy.SCHEMA_NAME:
        return _load_interleaved(path, data)
    if "benchmarks" not in data or not isinstance(data["benchmarks"], list):
        keys = ", ".join(sorted(map(str, data))[:6]) or "none"
        raise LoadError(f"{path}: not a pytest-benchmark result (no 'benchmarks' list; top-level keys: {keys})")
    foreign = sum(1 for b in data["benchmarks"] if not (
        isinstance(b, dict) and isinstance(b.get("extra_info"), dict) and "detbench" in b["extra_info"]))
    # cells that measured nothing (oom, error, skipped, timeout) have no stats, so pytest-benchmark leaves them out of
    # "benchmarks"; the run keeps them, with its options, in the top-level "detbench" block (detbench.bench.core.record)
    block = data.get("detbench")
    if block is not None and not isinstance(block, dict):
        raise LoadError(f"{path}: top-level 'detbench' must be an object, got a {type(block).__name__}")
    block = block or {}
    if not isinstance(block.get("not_measured") or [], list):
        raise LoadError(f"{path}: detbench.not_measured must be a list")
    try:
        results = record.results_of_benchmark_json(data, str(path))
    except (record.RecordError, SchemaError) as exc:
        raise LoadError(" ".join(str(exc).split())) from exc
    if not results:
        what = f"{foreign} benchmark(s) without extra_info.detbench" if foreign else "an empty 'benchmarks' list"
        raise LoadError(f"{path}: no detbench results ({what})")
    notes = [f"{foreign} benchmark(s) without detbench results ignored"] if foreign else []
    results = _dedupe(results)
    notes += _partial_note(results)
    planned = block.get("cell_ids")
    if isinstance(planned, list):
        have = {r.cell.id for r in results}
        missing = [str(c) for c in planned if c not in have]
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            notes.append(f"{len(missing)} planned cell(s) have no result (interrupted run?): {shown}")
    machine_info = data.get("machine_info")
    machine = machine_info if isinstance(machine_info, dict) else {}
    run = Run(label="", path=path, kind="pytest-benchmark", results=results, notes=notes)
    run.environment = _run_environment(run.results, machine)
    run.datetime = data.get("datetime") if isinstance(data.get("datetime"), str) else None
    run.run_id = block.get("run_id") if isinstance(block.get("run_id"), str) else None
    return run


def _load_interleaved(path: Path, data: dict[str, Any]) -> Run:
    """An old ``python -m detbench.bench.tools.interleaved`` file (detbench.bench.core.comparison reads its models
    as cells)."""
    results: list[CellResult] = []
    models = data.get("models")
    if not isinstance(models, list):
        raise LoadError(f"{path}: detbench.interleaved file without a 'models' list")
    for i, model in enumerate(models):
        if not isinstance(model, dict) or model.get("status") not in ("ok", "error", "timeout", "skipped"):
            continue  # a partial write of a killed run
        try:
            # a killed model's record (no ratios) holds the variants it had set up
            results.extend(legacy.model_results(model, data.get("schema_version")))
        except SchemaError as exc:
            raise LoadError(f"{path}: models[{i}]: {exc}") from exc
        except (legacy.ComparisonError, KeyError, TypeError, ValueError) as exc:
            raise LoadError(f"{path}: models[{i}]: malformed interleaved result ({exc})") from exc
    if not results:
        raise LoadError(f"{path}: interleaved file holds no measured model")
    run = Run(label="", path=path, kind="interleaved", results=_dedupe(results))
    run.environment = _run_environment(run.results, {})
    return run


def _load_journal(path: Path, text: str) -> Run:
    lines = [line for line in text.splitlines() if line.strip()]
    notes: list[str] = []
    try:
        json.loads(lines[-1])
    except (json.JSONDecodeError, IndexError):
        if len(lines) > 1:  # an interrupted run may leave its last line half-written
            notes.append(f"line {len(lines)} is truncated and was ignored")
    try:
        results = record.journal_results(text.splitlines(), str(path))
    except (record.RecordError, SchemaError) as exc:
        raise LoadError(" ".join(str(exc).split())) from exc
    if not results:
        raise LoadError(f"{path}: journal holds no detbench cell results")
    results = _dedupe(results)
    run = Run(label="", path=path, kind="journal", results=results, notes=notes + _partial_note(results),
              run_id=_journal_run_id(lines[0]))
    run.environment = _run_environment(run.results, {})
    return run


def _journal_run_id(first_line: str) -> str | None:
    """The ``run_id`` of a journal's header line (``detbench.run``), None for an older journal."""
    try:
        header = json.loads(first_line)
    except ValueError:
        return None
    if isinstance(header, dict) and header.get("schema") == record.RUN_SCHEMA and isinstance(header.get("run_id"), str):
        return header["run_id"]
    return None


def check_distinct(runs: list[Run]) -> None:
    """Refuse two files of one run (a JSON and its own journal share the ``run_id``): compared with itself, a run
    always passes the gate."""
    seen: dict[str, Run] = {}
    for run in runs:
        if run.run_id is None:
            continue
        if run.run_id in seen:
            raise LoadError(f"{seen[run.run_id].path} and {run.path} are the same run (run_id {run.run_id}: a "
                            "result file and its own journal?); a run compared with itself always passes")
        seen[run.run_id] = run


def _parse_cell(path: Path, data: Any, where: str) -> CellResult:
    """One validated cell; a SchemaError (which names the field) becomes the one-line LoadError."""
    try:
        return CellResult.from_dict(data, source=where)
    except SchemaError as exc:
        raise LoadError(f"{path}: {exc}") from exc


def _dedupe(results: list[CellResult]) -> list[CellResult]:
    """Keep the last result per cell id (a journal's progress lines, one per block, are each replaced by the next;
    a resumed run re-measures cells it already had). A ``--repeats`` journal cut short holds per-repeat lines
    without the merged cell: those repeats are merged here, ``partial`` when fewer than the run's repeats."""
    latest: dict[str, CellResult] = {}
    repeats: dict[str, dict[int, CellResult]] = {}
    for result in results:
        if result.repeat is not None:
            repeats.setdefault(result.cell.id, {})[result.repeat] = result
        latest.pop(result.cell.id, None)
        latest[result.cell.id] = result
    return [merge_repeats(list(repeats[cid].values()), _planned_repeats(r)) if r.repeat is not None else r
            for cid, r in latest.items()]


def _planned_repeats(result: CellResult) -> int | None:
    """The ``--repeats`` of the run that measured ``result`` (its options), None when it does not say."""
    options = result.config.get("options") if isinstance(result.config, dict) else None
    planned = options.get("repeats") if isinstance(options, dict) else None
    return planned if isinstance(planned, int) and not isinstance(planned, bool) and planned >= 1 else None


def _partial_note(results: list[CellResult]) -> list[str]:
    cut = [r.cell.id for r in results if r.status == "partial"]
    if not cut:
        return []
    shown = ", ".join(cut[:5]) + (", ..." if len(cut) > 5 else "")
    return [f"{len(cut)} cell(s) cut short, kept with the rounds they finished (partial; --detbench-resume "
            f"continues them): {shown}"]


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
    "ratio",
    "ratio_q1",
    "ratio_q3",
    "ratio_baseline",
    "blocks",
    "block_spread",
    "cell_wall_s",
    "overhead_s",
    "scaling_efficiency",
    "rank_step_ms",
    "comm_wait_share",
    "energy_per_image_j",
    "images_per_s_per_w",
    "mean_power_w",
    "gpu_util_pct_mean",
    "throttled",
    "telemetry_available",
    "has_series",
    "device",
    "gpu",
    # deployment runtimes (schema v4; None for eager cells)
    "runtime",
    "deploy_exported",
    "deploy_provider",
    "export_s",
    "export_break_even_requests",
    "artifact_bytes",
    "load_s",
    "cold_start_s",
    "cold_import_s",
    "serving_peak_rss_bytes",
    "parity",
    "parity_matched",
    "parity_count_diff",
    "parity_min_box_iou",
    "parity_max_score_diff",
    "parity_min_mask_iou",
]


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
    tel = r.telemetry_summary
    measured = r.measurement
    block_ms = sorted(b.median_ms for b in measured.blocks) if measured else []
    env = r.environment or run.environment
    return {
        "run": run.label,
        "cell_id": cell.id,
        "model": cell.model,
        "mode": cell.mode,
        "compile": cell.compile,
        "precision": cell.precision,
        "batch_size": r.measured_batch_size or 0,  # bsmax: the largest that fit (0: nothing fit)
        "gpus": cell.gpus,
        "image_size": f"{cell.image_size[0]}x{cell.image_size[1]}" if cell.image_size else "native",
        "variant": cell.configuration,
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
        "ratio": r.ratio.median if r.ratio else None,
        "ratio_q1": r.ratio.q1 if r.ratio else None,
        "ratio_q3": r.ratio.q3 if r.ratio else None,
        "ratio_baseline": r.ratio.baseline_cell_id if r.ratio else "",
        "blocks": len(block_ms) if measured else None,
        "block_spread": _block_spread(block_ms),
        "cell_wall_s": measured.cell_wall_s if measured else None,
        "overhead_s": measured.overhead_s if measured else None,
        "scaling_efficiency": r.distributed.scaling_efficiency if r.distributed else None,
        "rank_step_ms": [rank.median_ms for rank in r.distributed.ranks] if r.distributed else None,
        "comm_wait_share": r.distributed.allreduce_wait_share if r.distributed else None,
        "energy_per_image_j": tel.energy_per_image_j if tel else None,
        "images_per_s_per_w": tel.images_per_s_per_w if tel else None,
        "mean_power_w": tel.mean_power_w if tel else None,
        "gpu_util_pct_mean": tel.gpu_util_pct_mean if tel else None,
        "throttled": tel.throttled if tel and tel.available else None,
        "telemetry_available": bool(tel and tel.available),
        "has_series": bool(tel and any(d.has_series for d in tel.devices)),
        "device": r.device or "",
        "gpu": str(env.get("gpu") or ""),
        "runtime": cell.runtime,
        **_deploy_columns(r),
    }


def _deploy_columns(r: CellResult) -> dict[str, Any]:
    """The deployment runtime's figures (detbench.bench.core.schema.DeployInfo); None where the cell has none."""
    d = r.deploy
    p = d.parity if d is not None else None
    return {
        "deploy_exported": d.exported if d else None, "deploy_provider": d.provider if d else None,
        "export_s": _num(d.export_s) if d else None,
        "export_break_even_requests": _num(d.break_even_requests) if d else None,
        "artifact_bytes": _num(d.artifact_bytes) if d else None, "load_s": _num(d.load_s) if d else None,
        "cold_start_s": _num(d.cold_start_s) if d else None, "cold_import_s": _num(d.cold_import_s) if d else None,
        "serving_peak_rss_bytes": _num(d.serving_peak_rss_bytes) if d else None,
        "parity": p.verdict if p else None, "parity_matched": p.matched if p else None,
        "parity_count_diff": p.detections - p.reference_detections if p else None,
        "parity_min_box_iou": _num(p.min_box_iou) if p else None,
        "parity_max_score_diff": _num(p.max_score_diff) if p else None,
        "parity_min_mask_iou": _num(p.min_mask_iou) if p else None,
    }


def _block_spread(block_ms: list[float]) -> float | None:
    """Between-block spread: interquartile range of the block medians over their median (None below 2)."""
    if len(block_ms) < 2:
        return None
    from detbench.bench.core.stats import percentile  # noqa: PLC0415

    median = statistics.median(block_ms)
    return (percentile(block_ms, 75) - percentile(block_ms, 25)) / median if median > 0 else None


def _num(value: Any) -> float | None:
    """A finite float, or None for missing / non-numeric / NaN values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None
