"""The self-contained HTML report: inline CSS, inline JS, plots as data URIs, everything escaped."""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from html import escape
from typing import Any, Callable, Iterable

import pandas as pd

from reports import plots
from reports.assets import CSS, JS
from reports.compare import GATE_NONE, GATE_PASS, IMPROVEMENT, ONLY_BASELINE, REGRESSION, Comparison, gate
from reports.load import Run

MAX_TELEMETRY_CELLS = 300
MAX_SERIES_POINTS = 200
ENV_KEYS = [
    "gpu",
    "gpu_count",
    "driver",
    "driver_cuda",
    "torch",
    "torchvision",
    "cuda",
    "cudnn",
    "nccl",
    "container",
    "image",
    "hostname",
    "python",
    "platform",
]


@dataclass
class ReportData:
    """Everything the renderers need, computed once by the CLI."""

    title: str
    runs: list[Run]
    frame: pd.DataFrame  # tidy table with speedup_vs_eager_fp32
    recommendations: pd.DataFrame
    comparisons: list[Comparison]
    verdict: str
    threshold: float
    generated: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def e(value: Any) -> str:
    """Escape anything for HTML text and attribute values."""
    return escape("" if value is None else str(value), quote=True)


def script_json(data: Any) -> str:
    """JSON safe inside ``<script>``: no ``<``, ``>``, ``&`` or line separators can end or break the tag."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    for raw, safe in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, safe)
    return text


# ---------- value formatting ----------


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def fmt_num(v: Any, digits: int = 3) -> str:
    if _missing(v):
        return ""
    v = float(v)
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:,.{max(digits - len(str(int(abs(v)))), 0)}f}"


def fmt_gib(v: Any) -> str:
    return "" if _missing(v) else f"{float(v) / 2**30:.2f} GiB"


def fmt_pct(v: Any) -> str:
    return "" if _missing(v) else f"{float(v) * 100:.1f}%"


def fmt_ratio(v: Any) -> str:
    return "" if _missing(v) else f"{float(v):.2f}x"


def fmt_signed_pct(v: Any) -> str:
    return "" if _missing(v) else f"{float(v) * 100:+.1f}%"


@dataclass
class Col:
    """A table column: key in the frame, header, formatter, numeric or not."""

    key: str
    header: str
    fmt: Callable[[Any], str] = str
    numeric: bool = False


def _text(v: Any) -> str:
    return "" if _missing(v) else str(v)


def _status(v: Any) -> str:
    return str(v)


MATRIX_COLS = [
    Col("run", "run", _text),
    Col("model", "detector", _text),
    Col("mode", "mode", _text),
    Col("variant", "variant", _text),
    Col("batch_size", "batch", _text, True),
    Col("gpus", "GPUs", _text, True),
    Col("image_size", "image", _text),
    Col("status", "status", _status),
    Col("throughput_ips", "images/s", fmt_num, True),
    Col("speedup_vs_eager_fp32", "vs eager fp32", fmt_ratio, True),
    Col("latency_median_ms", "p50 ms", fmt_num, True),
    Col("latency_p90_ms", "p90 ms", fmt_num, True),
    Col("latency_p99_ms", "p99 ms", fmt_num, True),
    Col("latency_cov", "CoV", fmt_pct, True),
    Col("peak_memory_bytes", "peak memory", fmt_gib, True),
    Col("achieved_tflops", "TFLOP/s", fmt_num, True),
    Col("mfu", "MFU", fmt_pct, True),
    Col("detections_mean", "dets/img", fmt_num, True),
    Col("first_call_s", "first call s", fmt_num, True),
    Col("graph_breaks", "graph breaks", fmt_num, True),
    Col("break_even_iterations", "break-even iters", fmt_num, True),
    Col("energy_per_image_j", "J/image", fmt_num, True),
    Col("mean_power_w", "power W", fmt_num, True),
    Col("gpu_util_pct_mean", "util %", fmt_num, True),
    Col("throttled", "throttled", lambda v: "" if _missing(v) else ("yes" if v else "no")),
    Col("reason", "reason", _text),
]


def table(
    frame: pd.DataFrame,
    cols: list[Col],
    table_id: str,
    row_attrs: Iterable[str] = ("status",),
    row_class: Callable[[dict], str] | None = None,
) -> str:
    """A sortable table; every value is escaped, numeric cells carry their raw value in ``data-v``."""
    head = "".join(f'<th data-col="{e(c.key)}"{" class=num" if c.numeric else ""}>{e(c.header)}</th>' for c in cols)
    out = [f'<div class="tablewrap"><table class="sortable" id="{e(table_id)}"><thead><tr>{head}</tr></thead><tbody>']
    for row in frame.to_dict("records"):
        attrs = "".join(f' data-{a}="{e(_text(row.get(a)))}"' for a in row_attrs if a in row)
        cls = row_class(row) if row_class else ""
        cells = []
        for c in cols:
            v = row.get(c.key)
            if c.key == "status":
                cells.append(f'<td><span class="status status-{e(v)}">{e(v)}</span></td>')
            elif c.key in ("reason", "note", "reason_cand"):
                cells.append(f'<td class="reason">{e(_text(v))}</td>')
            elif c.key == "verdict":
                cells.append(f'<td class="v-{e(str(v).replace(" ", "-"))}">{e(v)}</td>')
            elif c.numeric:
                raw = "" if _missing(v) else repr(float(v))
                cells.append(f'<td class="num" data-v="{raw}">{e(c.fmt(v))}</td>')
            else:
                cells.append(f"<td>{e(c.fmt(v))}</td>")
        out.append(f"<tr{attrs}{f' class={cls}' if cls else ''}>{''.join(cells)}</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def filters(table_id: str, selects: dict[str, list[str]]) -> str:
    """A search box plus one select per column (``data-<col>`` on each row) for the table ``table_id``."""
    parts = [
        f'<div class="filters" data-for="{e(table_id)}">',
        '<input type="search" placeholder="filter: words that must all appear (e.g. retinanet bf16)">',
    ]
    for col, values in selects.items():
        options = "".join(f'<option value="{e(v)}">{e(v)}</option>' for v in values)
        parts.append(
            f'<label class="small">{e(col)} <select data-col="{e(col)}"><option value="">all</option>'
            f"{options}</select></label>"
        )
    parts.append('<span class="count small muted"></span></div>')
    return "".join(parts)


# ---------- sections ----------


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{e(anchor)}"><h2>{e(title)}</h2>{body}</section>'


def runs_section(data: ReportData) -> str:
    cards = []
    for run in data.runs:
        counts = pd.Series([r.status for r in run.results]).value_counts()
        summary = ", ".join(f"{e(n)} {e(s)}" for s, n in counts.items())
        notes = "".join(f'<div class="small muted">{e(n)}</div>' for n in run.notes)
        cards.append(
            f'<div class="card"><b>{e(run.label)}</b><div class="small">{e(run.path.name)} '
            f"({e(run.kind)}{', ' + e(run.datetime) if run.datetime else ''})</div>"
            f'<div class="small">{len(run.results)} cells: {summary}</div>{notes}</div>'
        )
    return _section("runs", "Runs", f'<div class="cards">{"".join(cards)}</div>')


def environment_section(runs: list[Run]) -> str:
    keys = [k for k in ENV_KEYS if any(k in r.environment for r in runs)]
    keys += sorted({k for r in runs for k in r.environment} - set(keys))
    if not keys:
        return _section("environment", "Environment", '<p class="muted">No environment fingerprint in these files.</p>')
    head = "".join(f"<th>{e(r.label)}</th>" for r in runs)
    rows = []
    for k in keys:
        values = [_env_value(r.environment.get(k)) for r in runs]
        differs = len(runs) > 1 and len(set(values)) > 1
        cells = "".join(f"<td>{e(v)}</td>" for v in values)
        rows.append(f"<tr{' class=differs' if differs else ''}><th>{e(k)}</th>{cells}</tr>")
    note = '<p class="small muted">Rows that differ between runs are highlighted.</p>' if len(runs) > 1 else ""
    return _section(
        "environment",
        "Environment",
        f'{note}<div class="tablewrap"><table class="env"><thead><tr><th>key</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>",
    )


def _env_value(v: Any) -> str:
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return "n/a" if v is None else str(v)


def recommend_section(rec: pd.DataFrame) -> str:
    if rec.empty:
        return _section(
            "recommend", "What should I use?", '<p class="muted">No cell ran ok, so there is nothing to recommend.</p>'
        )
    cols = [
        Col("run", "run", _text),
        Col("model", "detector", _text),
        Col("mode", "mode", _text),
        Col("gpus", "GPUs", _text, True),
        Col("variant", "use", _text),
        Col("batch_size", "batch", _text, True),
        Col("throughput_ips", "images/s", fmt_num, True),
        Col("gain_over_eager_fp32", "vs eager fp32", fmt_ratio, True),
        Col("peak_memory_bytes", "peak memory", fmt_gib, True),
        Col("break_even_iterations", "break-even iters", fmt_num, True),
        Col("note", "note", _text),
    ]
    intro = (
        "<p>Per detector and mode: the configuration with the highest measured throughput among cells that ran ok "
        "(OOM, error, timeout and skipped cells are never picked); its gain over eager FP32 at the same batch "
        "size; for compiled picks, how many iterations it takes to earn back the compile time.</p>"
    )
    return _section("recommend", "What should I use?", intro + table(rec, cols, "recommend-table"))


def comparison_section(comparisons: list[Comparison], verdict: str) -> str:
    if not comparisons:
        return _section(
            "compare",
            "Comparison",
            '<p class="muted">A single run: nothing to compare. Pass two or more result files, or --baseline.</p>',
        )
    parts = []
    cols = [
        Col("cell_id", "cell", _text),
        Col("verdict", "verdict", _text),
        Col("change", "change", fmt_signed_pct, True),
        Col("noise_band", "noise band", fmt_pct, True),
        Col("ratio", "ratio", fmt_ratio, True),
        Col("throughput_base", "baseline images/s", fmt_num, True),
        Col("throughput_cand", "candidate images/s", fmt_num, True),
        Col("status_base", "baseline status", _text),
        Col("status_cand", "candidate status", _text),
        Col("reason_cand", "candidate reason", _text),
        Col("model", "detector", _text),
        Col("mode", "mode", _text),
        Col("variant", "variant", _text),
        Col("batch_size", "batch", _text, True),
        Col("gpus", "GPUs", _text, True),
    ]
    for i, comp in enumerate(comparisons):
        order = {REGRESSION: 0, ONLY_BASELINE: 1, IMPROVEMENT: 2}
        t = comp.table.assign(_o=comp.table["verdict"].map(order).fillna(3), _c=comp.table["change"].abs())
        t = t.sort_values(["_o", "_c"], ascending=[True, False]).drop(columns=["_o", "_c"])
        summary = ", ".join(f"{n} {e(v)}" for v, n in comp.table["verdict"].value_counts().items())
        tid = f"compare-table-{i}"
        verdicts = sorted(comp.table["verdict"].unique())
        parts.append(
            f"<h3>{e(comp.candidate)} vs baseline {e(comp.baseline)}</h3><p class=small>{summary}</p>"
            + filters(tid, {"verdict": verdicts})
            + table(t, cols, tid, row_attrs=("verdict",))
        )
    how = (
        '<p class="small muted">Ratio = candidate / baseline throughput. A change is flagged only when it exceeds '
        f"both the threshold ({comparisons[0].threshold * 100:g}%) and the noise band of the two runs "
        "(root-sum-square of each run's per-iteration IQR / median, or CoV when IQR is missing). "
        "A cell that was ok in the baseline and is not ok in the candidate is a regression; a baseline cell the "
        "candidate has no result for is listed as missing in candidate; both fail the gate. Two runs that share "
        "no cell are nothing comparable.</p>"
    )
    return _section("compare", "Comparison", how + "".join(parts))


def matrix_section(frame: pd.DataFrame) -> str:
    selects = {
        "status": sorted(frame["status"].unique()),
        "run": list(dict.fromkeys(frame["run"])),
        "model": sorted(frame["model"].unique()),
        "variant": sorted(frame["variant"].unique()),
    }
    ordered = frame.sort_values(["run", "model", "mode", "gpus", "variant", "batch_size"], kind="stable")
    body = filters("matrix-table", selects) + table(
        ordered, MATRIX_COLS, "matrix-table", row_attrs=("status", "run", "model", "variant")
    )
    return _section(
        "matrix",
        f"Benchmark matrix ({len(frame)} cells)",
        '<p class="small muted">Click a header to sort. '
        "Every cell is listed, including OOM, error, timeout and skipped ones with their reason.</p>" + body,
    )


def failures_section(frame: pd.DataFrame) -> str:
    bad = frame[frame["status"] != "ok"]
    if bad.empty:
        return _section("failures", "Cells that did not run ok", '<p class="muted">None: every cell ran ok.</p>')
    counts = ", ".join(f"{n} {e(s)}" for s, n in bad["status"].value_counts().items())
    cols = [
        Col("run", "run", _text),
        Col("cell_id", "cell", _text),
        Col("status", "status", _status),
        Col("reason", "reason", _text),
    ]
    return _section("failures", "Cells that did not run ok", f"<p>{counts}.</p>" + table(bad, cols, "failures-table"))


def _figure(fig: plots.Figure | None, missing: str) -> str:
    if fig is None:
        return f'<p class="muted">{e(missing)}</p>'
    note = f"<figcaption>{e(fig.note)}</figcaption>" if fig.note else ""
    return f'<figure><img alt="{e(fig.title)}" src="{fig.data_uri}">{note}</figure>'


def plots_section(frame: pd.DataFrame) -> str:
    p = []
    p.append(
        "<h3>Throughput vs batch size</h3>"
        + _figure(
            plots.metric_vs_batch(frame, "throughput_ips", "images/s", "Throughput (images/s) vs batch size"),
            "No ok cell with a throughput.",
        )
    )
    p.append(
        "<h3>Speedup over eager FP32</h3>"
        + _figure(
            plots.metric_vs_batch(
                frame[(frame["compile"] != "eager") | (frame["precision"] != "fp32")],
                "speedup_vs_eager_fp32",
                "x eager fp32",
                "Speedup of compile and AMP over eager FP32 (same batch size)",
                reference=1.0,
            ),
            "No variant had an ok eager FP32 twin at the same batch size.",
        )
    )
    p.append("<h3>Latency spread</h3>" + _figure(plots.latency_spread(frame), "No latency measured."))
    p.append(
        "<h3>Peak memory</h3>"
        + _figure(
            plots.metric_vs_batch(
                frame.assign(peak_memory_gib=frame["peak_memory_bytes"] / 2**30),
                "peak_memory_gib",
                "GiB",
                "Peak GPU memory (GiB) vs batch size",
            ),
            "No peak memory measured.",
        )
    )
    p.append(
        "<h3>Model FLOPs utilisation</h3>"
        + _figure(
            plots.metric_vs_batch(
                frame.assign(mfu_pct=frame["mfu"] * 100),
                "mfu_pct",
                "MFU %",
                "MFU (achieved / datasheet peak TFLOP/s) vs batch size",
            ),
            "No MFU: FLOPs or the GPU's datasheet peak were not available.",
        )
    )
    p.append(
        "<h3>Energy per image</h3>"
        + _figure(
            plots.metric_vs_batch(frame, "energy_per_image_j", "J / image", "Energy per image (J) vs batch size"),
            "No energy figures: telemetry was not available for these runs.",
        )
    )
    if (frame["gpus"] > 1).any():
        p.append(
            "<h3>Scaling efficiency</h3>"
            + _figure(
                plots.scaling_efficiency(frame), "Multi-GPU cells exist but none has an ok 1-GPU twin to compare with."
            )
        )
    else:
        p.append('<h3>Scaling efficiency</h3><p class="muted">No cells with more than one GPU were measured.</p>')
    return _section("plots", "Plots", "".join(p))


def telemetry_payload(runs: list[Run]) -> tuple[dict[str, Any], int]:
    """Per cell with series: downsampled series per device; returns (payload, cells with series in total)."""
    payload: dict[str, Any] = {}
    total = 0
    for run in runs:
        for r in run.results:
            devices = (r.telemetry or {}).get("devices") if isinstance(r.telemetry, dict) else None
            if not isinstance(devices, list):
                continue
            with_series = [
                d
                for d in devices
                if isinstance(d, dict)
                and isinstance(d.get("series"), dict)
                and isinstance(d["series"].get("t_s"), list)
                and d["series"]["t_s"]
            ]
            if not with_series:
                continue
            total += 1
            if len(payload) < MAX_TELEMETRY_CELLS:
                payload[f"{run.label} :: {r.cell.id}"] = {
                    "devices": [
                        {"name": str(d.get("name") or "GPU"), "series": _downsample(d["series"])} for d in with_series
                    ]
                }
    return payload, total


def _downsample(series: dict[str, Any]) -> dict[str, list]:
    n = len(series["t_s"])
    step = max(1, math.ceil(n / MAX_SERIES_POINTS))
    out = {}
    for k, values in series.items():
        if isinstance(values, list):
            out[str(k)] = [_clean(v) for v in values[::step]]
    return out


def _clean(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return round(float(v), 3)


def telemetry_section(runs: list[Run]) -> str:
    payload, total = telemetry_payload(runs)
    if not payload:
        reasons = {
            str((r.telemetry or {}).get("reason"))
            for run in runs
            for r in run.results
            if isinstance(r.telemetry, dict) and r.telemetry.get("reason")
        }
        why = f" Reported reason: {'; '.join(sorted(reasons))}." if reasons else ""
        return _section(
            "telemetry", "Telemetry over time", f'<p class="muted">No cell carries a telemetry time series.{e(why)}</p>'
        )
    options = "".join(f'<option value="{e(k)}">{e(k)}</option>' for k in payload)
    cap = f" (first {len(payload)} of {total} cells with series)" if total > len(payload) else ""
    body = (
        f'<p class="small muted">NVML samples over the timed region of one cell{e(cap)}.</p>'
        f'<label>cell <select id="telemetry-cell">{options}</select></label><div id="telemetry-plots"></div>'
        f'<script type="application/json" id="telemetry-data">{script_json(payload)}</script>'
    )
    return _section("telemetry", "Telemetry over time", body)


def render(data: ReportData) -> str:
    """The whole page as one string."""
    state = gate(data.comparisons)
    verdict_class = "none" if state == GATE_NONE else ("pass" if state == GATE_PASS else "fail")
    nav = "".join(
        f'<a href="#{a}">{t}</a>'
        for a, t in [
            ("runs", "Runs"),
            ("environment", "Environment"),
            ("recommend", "What should I use?"),
            ("compare", "Comparison"),
            ("failures", "Not ok"),
            ("plots", "Plots"),
            ("telemetry", "Telemetry"),
            ("matrix", "Matrix"),
        ]
    )
    sections = [
        runs_section(data),
        environment_section(data.runs),
        recommend_section(data.recommendations),
        comparison_section(data.comparisons, data.verdict),
        failures_section(data.frame),
        plots_section(data.frame),
        telemetry_section(data.runs),
        matrix_section(data.frame),
    ]
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(data.title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>{e(data.title)}</h1><div class="small muted">generated {e(data.generated)} by detbench-report'
        f' from {len(data.runs)} run(s)</div><div class="verdict {verdict_class}">{e(data.verdict)}</div>'
        f"<nav>{nav}</nav></header>{''.join(sections)}<script>{JS}</script></body></html>"
    )
