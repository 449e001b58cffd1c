"""Matplotlib figures (Agg backend) for the report, returned as base64 PNG data URIs.

Plot counts are capped (facets, lines, bars) so thousands of cells still render in seconds; every
figure says what it left out, and the full numbers are always in the report's tables.
"""

from __future__ import annotations

import base64
import io
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported: reports render on machines without a display
import matplotlib.dates
import matplotlib.lines
import matplotlib.pyplot as plt
import matplotlib.ticker
import pandas as pd

from detbench.bench.core.schema import CellResult
from detbench.bench.core.serving import load_curve

if TYPE_CHECKING:  # matplotlib.typing is 3.8+; the package accepts 3.6
    from matplotlib.artist import Artist
    from matplotlib.typing import LineStyleType

MAX_FACETS = 12
MAX_LINES_PER_FACET = 24
MAX_BARS = 40
DPI = 80
_STYLES: list[LineStyleType] = ["-", "--", ":", "-."]
_MARKERS = ["o", "s", "^", "D"]


@dataclass
class Figure:
    """One rendered plot: an ``<img>`` source and a note on what was capped (empty if nothing)."""

    title: str
    data_uri: str
    note: str = ""


def to_data_uri(fig: plt.Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def metric_vs_batch(
    frame: pd.DataFrame, metric: str, ylabel: str, title: str, reference: float | None = None, logy: bool = False
) -> Figure | None:
    """``metric`` against batch size: one panel per (detector, mode), a line per variant and run."""
    data = frame[(frame["status"] == "ok") & frame[metric].notna() & (frame["gpus"] == frame["gpus"].min())]
    if data.empty:
        return None
    facets = list(data.groupby(["model", "mode"], sort=True).groups)
    shown = facets[:MAX_FACETS]
    runs = list(dict.fromkeys(frame["run"]))
    variants = sorted(data["variant"].unique())
    colors = {v: plt.cm.tab10(i % 10) for i, v in enumerate(variants)}
    cols = min(3, len(shown))
    rows = (len(shown) + cols - 1) // cols
    entries = len(variants) + (len(runs) if len(runs) > 1 else 0)
    width, panel_h, legend_h = 4.6 * cols, 2.9, 0.2 * ((entries + 3) // 4) + 0.2
    height = panel_h * rows + legend_h + 0.9
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
    # fixed margins: tight_layout / bbox_inches="tight" lay text out twice and dominate the render time
    fig.subplots_adjust(
        left=0.6 / width,
        right=1 - 0.15 / width,
        top=1 - 0.75 / height,
        bottom=(legend_h + 0.45) / height,
        hspace=0.55,
        wspace=0.28,
    )
    dropped_lines = 0
    handles: dict[str, Artist] = {}
    for ax, (model, mode) in zip(axes.flat, shown):
        panel = data[(data["model"] == model) & (data["mode"] == mode)]
        lines = list(panel.groupby(["run", "variant"], sort=False))
        dropped_lines += max(0, len(lines) - MAX_LINES_PER_FACET)
        for (run, variant), line in lines[:MAX_LINES_PER_FACET]:
            line = line.sort_values("batch_size")
            run_i = runs.index(run) % len(_STYLES) if run in runs else 0
            ax.plot(
                line["batch_size"],
                line[metric],
                _STYLES[run_i],
                marker=_MARKERS[run_i],
                color=colors[variant],
                markersize=4,
            )
        if reference is not None:
            ax.axhline(reference, color="grey", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%d"))
        if logy:
            ax.set_yscale("log")
        ax.set_title(f"{model} ({mode})", fontsize=9)
        ax.set_xlabel("batch size", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    # colour = variant, line style and marker = run
    for variant in variants:
        handles[variant] = matplotlib.lines.Line2D([], [], color=colors[variant], marker="o", markersize=4)
    if len(runs) > 1:
        for i, run in enumerate(runs):
            handles[f"run: {run}"] = matplotlib.lines.Line2D(
                [],
                [],
                color="black",
                linestyle=_STYLES[i % len(_STYLES)],
                marker=_MARKERS[i % len(_MARKERS)],
                markersize=4,
            )
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=11)
    return Figure(title, to_data_uri(fig), _cap_note(len(facets), len(shown), "panels", dropped_lines))


def latency_spread(frame: pd.DataFrame) -> Figure | None:
    """p50 / p90 / p99 per-iteration latency: for each run, detector, mode and variant, its largest ok batch."""
    data = frame[
        (frame["status"] == "ok") & frame["latency_median_ms"].notna() & (frame["gpus"] == frame["gpus"].min())
    ]
    if data.empty:
        return None
    picked = data.sort_values("batch_size").groupby(["run", "model", "mode", "variant"], sort=True).tail(1)
    picked = picked.sort_values(["model", "mode", "variant", "run"])
    total = len(picked)
    picked = picked.head(MAX_BARS)
    labels = [
        f"{r.model} {r.mode} {r.variant} bs{r.batch_size}" + (f" [{r.run}]" if frame["run"].nunique() > 1 else "")
        for r in picked.itertuples()
    ]
    y = list(range(len(picked)))
    height = 0.24 * len(picked) + 1.4
    fig, ax = plt.subplots(figsize=(10, height))
    fig.subplots_adjust(left=0.42, right=0.98, top=1 - 0.45 / height, bottom=0.75 / height)
    p50 = picked["latency_median_ms"]
    p90 = picked["latency_p90_ms"].fillna(p50)
    p99 = picked["latency_p99_ms"].fillna(p90)
    ax.hlines(y, p50, p99, color="#9aa5b4", linewidth=2)
    ax.plot(p50, y, "o", color="#2f6db5", markersize=5, label="p50 (median)")
    ax.plot(p90, y, "|", color="#d08c00", markersize=10, markeredgewidth=2, label="p90")
    ax.plot(p99, y, "|", color="#c0392b", markersize=10, markeredgewidth=2, label="p99")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_ylim(len(picked) - 0.5, -0.5)
    ax.set_xscale("log")
    ax.set_xlabel("per-iteration latency (ms, log scale)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title("Latency spread per iteration (largest ok batch per variant)", fontsize=10)
    return Figure("Latency spread", to_data_uri(fig), _cap_note(total, len(picked), "bars"))


SCALING_KEYS = ["run", "model", "mode", "compile", "precision", "variant", "batch_size", "image_size"]
SCALING_COLUMNS = [
    *SCALING_KEYS,
    "gpus", "throughput_ips", "throughput_1gpu", "scaling_efficiency", "efficiency_source",
]


def scaling_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per ok cell on more than one GPU with a scaling efficiency, T_N / (N * T_1).

    The efficiency the run recorded (column ``scaling_efficiency``) wins; otherwise it is computed from the ok
    1-GPU cell of the same run and configuration (same per-GPU batch). Cells with neither are left out.
    """
    ok = frame[(frame["status"] == "ok") & frame["throughput_ips"].notna()]
    single = ok[ok["gpus"] == 1][[*SCALING_KEYS, "throughput_ips"]]
    single = single.rename(columns={"throughput_ips": "throughput_1gpu"})
    multi = ok[ok["gpus"] > 1]
    if multi.empty:
        return pd.DataFrame(columns=SCALING_COLUMNS)
    merged = multi.merge(single.drop_duplicates(SCALING_KEYS), on=SCALING_KEYS, how="left")
    computed = merged["throughput_ips"] / (merged["gpus"] * merged["throughput_1gpu"])
    recorded = (
        pd.to_numeric(merged["scaling_efficiency"], errors="coerce")
        if "scaling_efficiency" in merged.columns
        else pd.Series(float("nan"), index=merged.index)
    )
    merged["scaling_efficiency"] = recorded.fillna(computed)
    merged["efficiency_source"] = [
        "recorded by the run" if pd.notna(r) else ("1-GPU cell of this run" if pd.notna(c) else "")
        for r, c in zip(recorded, computed)
    ]
    merged = merged[merged["scaling_efficiency"].notna()]
    return merged[SCALING_COLUMNS].sort_values(["run", "model", "mode", "variant", "batch_size", "gpus"]).reset_index(
        drop=True
    )


def scaling(frame: pd.DataFrame) -> Figure | None:
    """Throughput (left) and scaling efficiency (right) against GPU count, one line per detector and mode: its
    fastest configuration (variant, per-GPU batch) at the largest GPU count it ran ok on. Every configuration's
    figures are in the scaling table."""
    ok = frame[(frame["status"] == "ok") & frame["throughput_ips"].notna()]
    multi = ok[ok["gpus"] > 1]
    if multi.empty:
        return None
    keys = ["run", "model", "mode", "variant", "batch_size"]
    picks = []
    for _, group in multi.groupby(["run", "model", "mode"], sort=True):
        top = group[group["gpus"] == group["gpus"].max()]
        picks.append(tuple(top.loc[top["throughput_ips"].idxmax(), keys]))
    shown = picks[:MAX_LINES_PER_FACET]
    eff = scaling_table(frame)
    several_runs = frame["run"].nunique() > 1
    legend_h = 0.22 * ((len(shown) + 1) // 2) + 0.3
    height = 3.6 + legend_h
    fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(11, height))
    fig.subplots_adjust(left=0.07, right=0.98, top=1 - 0.6 / height, bottom=(legend_h + 0.5) / height, wspace=0.25)
    handles: dict[str, Artist] = {}
    for i, key in enumerate(shown):
        run, model, mode, variant, batch = key
        color = plt.cm.tab10(i % 10)
        style = _STYLES[(i // 10) % len(_STYLES)]
        points = ok[(ok[keys] == pd.Series(key, index=keys)).all(axis=1)].sort_values("gpus")
        label = f"{model} {mode} {variant} bs{int(batch)}/GPU" + (f" [{run}]" if several_runs else "")
        (handles[label],) = ax_t.plot(points["gpus"], points["throughput_ips"], style, marker="o", color=color)
        one = points[points["gpus"] == 1]
        if not one.empty:
            # ideal linear scaling from the 1-GPU cell, for the eye
            top, ideal = points["gpus"].max(), float(one["throughput_ips"].iloc[0])
            ax_t.plot([1, top], [ideal, ideal * top], ":", color=color, linewidth=0.8)
        line = eff[(eff[keys] == pd.Series(key, index=keys)).all(axis=1)].sort_values("gpus")
        if not line.empty:
            xs = ([1] if not one.empty else []) + list(line["gpus"])
            ys = ([1.0] if not one.empty else []) + list(line["scaling_efficiency"])
            ax_e.plot(xs, ys, style, marker="o", color=color)
    for ax, ylabel in ((ax_t, "images/s (all GPUs)"), (ax_e, "scaling efficiency")):
        ax.set_xticks(sorted(int(g) for g in ok["gpus"].unique()))
        ax.set_xlabel("GPUs", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    ax_t.set_title("Throughput vs GPU count (dotted: linear from 1 GPU)", fontsize=9)
    ax_e.set_title("Scaling efficiency = T(N) / (N x T(1))", fontsize=9)
    ax_e.axhline(1.0, color="grey", linewidth=0.8)
    top_eff = float(eff["scaling_efficiency"].max()) if not eff.empty else 1.0
    ax_e.set_ylim(0, max(1.1, top_eff * 1.05))  # superlinear scaling happens (caches); keep it in view
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.suptitle("Scaling over GPUs: the fastest configuration per detector and mode", fontsize=11)
    # the title is the <img alt>, which tests and users search for
    return Figure("Scaling efficiency", to_data_uri(fig), _cap_note(len(picks), len(shown), "lines"))


RANK_COLUMNS = [
    "run",
    "cell_id",
    "ranks",
    "fastest_ms",
    "median_ms",
    "slowest_ms",
    "slowest_rank",
    "spread",
    "comm_wait_share",
]
# keys a per-rank record may use for its median step time, most specific first
_RANK_MEDIAN_KEYS = ("step_ms_median", "median_step_ms", "median_ms", "step_ms", "p50_ms", "median")


def rank_steps(value: object) -> list[tuple[int, float]]:
    """(rank, median step ms) pairs from a cell's ``rank_step_ms``: a list of numbers (index = rank) or of
    records with a ``rank`` and a median under one of a few names; anything else gives no pairs."""
    if not isinstance(value, (list, tuple)):
        return []
    out = []
    for i, item in enumerate(value):
        rank, ms = i, item
        if isinstance(item, dict):
            rank = item.get("rank", i)
            ms = next((item[k] for k in _RANK_MEDIAN_KEYS if k in item), None)
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms <= 0:
            continue
        out.append((int(rank) if isinstance(rank, (int, float)) else i, float(ms)))
    return out


def rank_spread(frame: pd.DataFrame) -> pd.DataFrame:
    """Per multi-rank cell: fastest, median and slowest rank's step time and the slowest rank; empty when no
    cell carries per-rank figures (column ``rank_step_ms``)."""
    if "rank_step_ms" not in frame.columns:
        return pd.DataFrame(columns=RANK_COLUMNS)
    rows = []
    for row in frame.to_dict("records"):
        steps = rank_steps(row.get("rank_step_ms"))
        if len(steps) < 2:
            continue
        ordered = sorted(ms for _, ms in steps)
        slowest_rank, slowest = max(steps, key=lambda p: p[1])
        share = row.get("comm_wait_share")
        rows.append(
            {
                "run": row["run"],
                "cell_id": row["cell_id"],
                "ranks": len(steps),
                "fastest_ms": ordered[0],
                "median_ms": statistics.median(ordered),
                "slowest_ms": slowest,
                "slowest_rank": slowest_rank,
                "spread": slowest / ordered[0] - 1.0,
                "comm_wait_share": share if isinstance(share, (int, float)) and not isinstance(share, bool) else None,
            }
        )
    out = pd.DataFrame(rows, columns=RANK_COLUMNS)
    # a column no cell measured would only say "not measured" on every row
    return out.drop(columns="comm_wait_share") if out["comm_wait_share"].isna().all() else out


def _cap_note(total: int, shown: int, what: str, dropped_lines: int = 0) -> str:
    notes = []
    if shown < total:
        notes.append(f"showing {shown} of {total} {what}")
    if dropped_lines:
        notes.append(f"{dropped_lines} lines left out")
    return "; ".join(notes) + ("; all numbers are in the tables" if notes else "")


def serving_curves(results: Sequence[tuple[str, CellResult]]) -> Figure | None:
    """Server cells (detbench serve) with their runs' labels: p99 latency against the offered Poisson rate, a panel
    per (detector, bound), a line per run and configuration (runtime, batching); the bound dashed, each line's knee
    (x) and sustainable rate (o)."""
    groups: dict[tuple[str, float], list[tuple[str, CellResult]]] = {}
    for run, result in results:
        if result.serve is not None and result.cell.scenario == "server" and result.cell.latency_bound_ms:
            groups.setdefault((result.cell.model, result.cell.latency_bound_ms), []).append((run, result))
    several_runs = len({run for run, _ in results}) > 1
    if not groups:
        return None
    total = len(groups)
    keys = sorted(groups)[:MAX_FACETS]
    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 3.2 * len(keys)), squeeze=False)
    for ax, (model, bound) in zip(axes[:, 0], keys, strict=True):
        for i, (run, result) in enumerate(groups[model, bound][:MAX_LINES_PER_FACET]):
            assert result.serve is not None
            points = [p for p in load_curve(result.serve) if p.p99_ms]
            if not points:
                continue
            line, = ax.plot([p.offered_qps for p in points], [p.p99_ms for p in points],
                            linestyle=_STYLES[i % len(_STYLES)], marker=".",
                            label=result.cell.configuration + (f" [{run}]" if several_runs else ""))
            for p in points:
                if p.knee:
                    ax.plot(p.offered_qps, p.p99_ms, "x", color=line.get_color(), markersize=9, markeredgewidth=2)
                if p.offered_qps == result.serve.sustainable_qps:
                    ax.plot(p.offered_qps, p.p99_ms, "o", color=line.get_color(), markersize=8, fillstyle="none")
        ax.axhline(bound, color="#c0392b", linestyle="--", linewidth=1, label=f"p99 bound {bound:g} ms")
        ax.set_yscale("log")
        ax.set_xlabel("offered rate (queries/s, Poisson)", fontsize=8)
        ax.set_ylabel("p99 latency (ms, log)", fontsize=8)
        ax.set_title(f"{model}: p99 vs offered load (x knee, o sustainable)", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return Figure("Serving: p99 vs offered load", to_data_uri(fig), _cap_note(total, len(keys), "panels"))
