"""The self-contained HTML report: Jinja2 templates with autoescaping, inline CSS and JS, plots as data URIs.

This module builds plain view objects from :class:`ReportData`; ``templates/report.html.j2`` lays them out.
Every value from a result file reaches the page through Jinja2's autoescaping; the only unescaped text is
our own CSS, JS and the telemetry JSON, which :func:`script_json` makes safe inside ``<script>``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup

from detbench.bench.core.advice import INTERLEAVED, NOT_INTERLEAVED, Advice
from detbench.reports import columns as C  # noqa: N812 - `columns` is a parameter name throughout this module
from detbench.reports import plots
from detbench.reports.assets import CSS, JS

# Formatters used to live here; markdown.py (and others) still import them from this module.
from detbench.reports.columns import fmt_gib, fmt_num, fmt_pct, fmt_ratio, fmt_signed_pct  # noqa: F401
from detbench.reports.compare import (
    CANARY_TOLERANCE,
    GATE_NONE,
    GATE_PASS,
    IMPROVEMENT,
    INCONCLUSIVE,
    INVALID,
    ONLY_BASELINE,
    REGRESSION,
    Comparison,
    gate,
)
from detbench.reports.load import Run

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
# (anchor, link text): the anchors are stable, other tools link to them
NAV = [
    ("runs", "Runs"),
    ("environment", "Environment"),
    ("recommend", "What should I use?"),  # the advice; the old "#advisor" anchor points into the same section
    ("compare", "Comparison"),
    ("failures", "Not ok"),
    ("plots", "Plots"),
    ("scaling", "Scaling"),
    ("telemetry", "Telemetry"),
    ("matrix", "Matrix"),
]


@dataclass
class ReportData:
    """Everything the renderers need, computed once by the CLI."""

    title: str
    runs: list[Run]
    frame: pd.DataFrame  # tidy table with speedup_vs_eager_fp32
    advice: list[Advice]  # detbench.bench.core.advice: one per run, detector, mode and GPU count
    comparisons: list[Comparison]
    verdict: str
    threshold: float
    history: dict[str, Any] | None = None  # detbench.reports.history.view.history_view: the --history section
    generated: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


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


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The template environment: autoescape on for every template, undefined names are errors."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("detbench.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
    )
    env.filters["cell_text"] = C.fmt_text
    return env


# ---------- view objects handed to the templates ----------


@dataclass
class TableView:
    """A sortable table: the columns to show, the rows as dicts, its element id and the row data attributes."""

    id: str
    columns: Sequence[C.Column]
    rows: list[dict[str, Any]]
    row_attrs: Sequence[str] = ("status",)


def table_view(
    frame: pd.DataFrame, columns: Sequence[C.Column], table_id: str, row_attrs: Sequence[str] = ("status",)
) -> TableView:
    """Columns the frame lacks are left out (e.g. paired ratios in a file written before they existed)."""
    shown = [c for c in columns if c.key in frame.columns]
    return TableView(table_id, shown, C.records(frame), row_attrs)


@dataclass
class PlotView:
    heading: str
    figure: plots.Figure | None
    missing: str


def _status_summary(statuses: pd.Series) -> str:
    return ", ".join(f"{n} {s}" for s, n in statuses.value_counts().items())


def runs_view(runs: list[Run]) -> list[dict[str, Any]]:
    return [
        {
            "label": run.label,
            "file": run.path.name,
            "kind": run.kind,
            "datetime": run.datetime,
            "cells": len(run.results),
            "summary": _status_summary(pd.Series([r.status for r in run.results], dtype=object)),
            "notes": run.notes,
        }
        for run in runs
    ]


def environment_view(runs: list[Run]) -> dict[str, Any]:
    keys = [k for k in ENV_KEYS if any(k in r.environment for r in runs)]
    keys += sorted({k for r in runs for k in r.environment} - set(keys))
    rows = []
    for k in keys:
        values = [_env_value(r.environment.get(k)) for r in runs]
        rows.append({"key": k, "cells": values, "differs": len(runs) > 1 and len(set(values)) > 1})
    return {"rows": rows}


def _env_value(v: Any) -> str:
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return "n/a" if v is None else str(v)


def advice_view(advice: Sequence[Advice], with_run: bool) -> dict[str, Any]:
    """The "What should I use?" section: the advice table and which kinds of gain it quotes."""
    if not advice:
        return {"table": None, "any_pick": False, "interleaved": False, "not_interleaved": False}
    picks = [a.best for a in advice if a.best is not None]
    table = TableView("advice-table", C.advice_columns(with_run), C.advice_rows(advice), row_attrs=())
    return {
        "table": table,
        "any_pick": bool(picks),
        "interleaved": any(p.gain.basis == INTERLEAVED for p in picks),
        "not_interleaved": any(p.gain.basis == NOT_INTERLEAVED for p in picks),
    }


def comparisons_view(comparisons: list[Comparison]) -> list[dict[str, Any]]:
    out = []
    order = {REGRESSION: 0, ONLY_BASELINE: 1, INVALID: 2, INCONCLUSIVE: 3, IMPROVEMENT: 4}
    for i, comp in enumerate(comparisons):
        t = comp.table.assign(_o=comp.table["verdict"].map(order).fillna(5), _c=comp.table["change"].abs())
        t = t.sort_values(["_o", "_c"], ascending=[True, False]).drop(columns=["_o", "_c"])
        tid = f"compare-table-{i}"
        out.append(
            {
                "candidate": comp.candidate,
                "baseline": comp.baseline,
                "summary": _status_summary(comp.table["verdict"]),
                "weak": comp.weak,
                "banded": comp.banded,
                "repeats_note": comp.repeats_note,
                "selects": {"verdict": sorted(comp.table["verdict"].unique())},
                "table": table_view(t, C.COMPARISON, tid, row_attrs=("verdict",)),
            }
        )
    return out


def host_banners(comparisons: list[Comparison]) -> list[str]:
    """One line per pair whose hosts differ (canary beyond the tolerance, or the environment fingerprint)."""
    banners = []
    for comp in comparisons:
        pair = f"{comp.candidate} vs {comp.baseline}"
        if comp.host.differs:
            banners.append(f"Host differs ({pair}): {comp.host.describe()}, beyond ±{CANARY_TOLERANCE:.0%}. "
                           "Regressions and improvements of host-bound cells are reported as inconclusive.")
        if comp.environment_changes:
            banners.append(f"Environment differs ({pair}): {', '.join(comp.environment_changes)}. "
                           "A change may come from the machine, not the code.")
    return banners


def deploy_view(frame: pd.DataFrame) -> dict[str, Any] | None:
    """Cells of deployment runtimes (other than eager), with their eager twins' latency beside them; None: none."""
    deployed = frame[frame["runtime"] != "eager"]
    if deployed.empty:
        return None
    keys = set(zip(deployed["run"], deployed["model"], deployed["batch_size"], deployed["image_size"], strict=True))
    eager = frame[(frame["runtime"] == "eager") & (frame["compile"] == "eager") & (frame["precision"] == "fp32")]
    twins = eager[[k in keys for k in zip(eager["run"], eager["model"], eager["batch_size"], eager["image_size"],
                                            strict=True)]]
    ordered = pd.concat([twins, deployed]).sort_values(["run", "model", "batch_size"], kind="stable")
    return {"table": table_view(ordered, C.DEPLOY, "deploy-table", row_attrs=("status", "run", "model")),
            "disagree": int((deployed["parity"] == "disagree").sum())}


def failures_view(frame: pd.DataFrame) -> dict[str, Any] | None:
    bad = frame[frame["status"] != "ok"]
    if bad.empty:
        return None
    return {"counts": _status_summary(bad["status"]), "table": table_view(bad, C.FAILURES, "failures-table")}


def serving_plot_view(runs: Sequence[Run]) -> list[PlotView]:
    """The Server cells' load curves (detbench serve), where a run has any."""
    figure = plots.serving_curves([(run.label, r) for run in runs for r in run.results])
    return [] if figure is None else [PlotView("Serving: p99 vs offered load", figure, "")]


def plots_view(frame: pd.DataFrame) -> list[PlotView]:
    return [
        PlotView(
            "Throughput vs batch size",
            plots.metric_vs_batch(frame, "throughput_ips", "images/s", "Throughput (images/s) vs batch size"),
            "No ok cell with a throughput.",
        ),
        PlotView(
            "Speedup over eager FP32",
            plots.metric_vs_batch(
                frame[(frame["compile"] != "eager") | (frame["precision"] != "fp32")],
                "speedup_vs_eager_fp32",
                "x eager fp32",
                "Speedup of compile and AMP over eager FP32 (same batch size)",
                reference=1.0,
            ),
            "No variant had an ok eager FP32 twin at the same batch size.",
        ),
        PlotView("Latency spread", plots.latency_spread(frame), "No latency measured."),
        PlotView(
            "Peak memory",
            plots.metric_vs_batch(
                frame.assign(peak_memory_gib=frame["peak_memory_bytes"] / 2**30),
                "peak_memory_gib",
                "GiB",
                "Peak GPU memory (GiB) vs batch size",
            ),
            "No peak memory measured.",
        ),
        PlotView(
            "Model FLOPs utilisation",
            plots.metric_vs_batch(
                frame.assign(mfu_pct=frame["mfu"] * 100),
                "mfu_pct",
                "MFU %",
                "MFU (achieved / datasheet peak TFLOP/s) vs batch size",
            ),
            "No MFU: FLOPs or the GPU's datasheet peak were not available.",
        ),
        PlotView(
            "Energy per image",
            plots.metric_vs_batch(frame, "energy_per_image_j", "J / image", "Energy per image (J) vs batch size"),
            "No energy figures: telemetry was not available for these runs.",
        ),
    ]


def scaling_view(frame: pd.DataFrame) -> dict[str, Any]:
    multi = bool((frame["gpus"] > 1).any())
    if not multi:
        return {"multi": False}
    eff = plots.scaling_table(frame)
    ranks = plots.rank_spread(frame)
    return {
        "multi": True,
        "figure": plots.scaling(frame),
        "table": None if eff.empty else table_view(eff, C.SCALING, "scaling-table", row_attrs=()),
        "ranks": None if ranks.empty else table_view(ranks, C.RANK_SPREAD, "rank-table", row_attrs=()),
    }


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


def telemetry_view(runs: list[Run]) -> dict[str, Any]:
    payload, total = telemetry_payload(runs)
    if not payload:
        reasons = {
            str((r.telemetry or {}).get("reason"))
            for run in runs
            for r in run.results
            if isinstance(r.telemetry, dict) and r.telemetry.get("reason")
        }
        return {"payload": None, "why": "; ".join(sorted(reasons))}
    return {
        # script_json leaves no <, > or & in the text, so it cannot end the <script> element it sits in
        "payload": Markup(script_json(payload)),
        "cells": list(payload),
        "cap": total > len(payload),
        "shown": len(payload),
        "total": total,
    }


def matrix_view(frame: pd.DataFrame) -> dict[str, Any]:
    selects = {
        "status": sorted(frame["status"].unique()),
        "run": list(dict.fromkeys(frame["run"])),
        "model": sorted(frame["model"].unique()),
        "variant": sorted(frame["variant"].unique()),
    }
    ordered = frame.sort_values(["run", "model", "mode", "gpus", "variant", "batch_size"], kind="stable")
    return {
        "selects": selects,
        "table": table_view(ordered, C.MATRIX, "matrix-table", row_attrs=("status", "run", "model", "variant")),
    }


def render(data: ReportData) -> str:
    """The whole page as one string."""
    state = gate(data.comparisons)
    verdict_class = "none" if state == GATE_NONE else ("pass" if state == GATE_PASS else "fail")
    threshold = data.comparisons[0].threshold if data.comparisons else data.threshold
    return (
        environment()
        .get_template("report.html.j2")
        .render(
            title=data.title,
            generated=data.generated,
            verdict=data.verdict,
            verdict_class=verdict_class,
            host_banners=host_banners(data.comparisons),
            nav=NAV if data.history is None else [*NAV[:4], ("history", "History"), *NAV[4:]],
            css=Markup(CSS),
            js=Markup(JS),
            runs=runs_view(data.runs),
            env=environment_view(data.runs),
            advice=advice_view(data.advice, with_run=len(data.runs) > 1),
            comparisons=comparisons_view(data.comparisons),
            threshold_pct=f"{threshold * 100:g}",
            failures=failures_view(data.frame),
            deploy=deploy_view(data.frame),
            plots=[*plots_view(data.frame), *serving_plot_view(data.runs)],
            scaling=scaling_view(data.frame),
            telemetry=telemetry_view(data.runs),
            matrix=matrix_view(data.frame),
            history=data.history,
        )
    )
