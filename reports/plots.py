"""Matplotlib figures (Agg backend) for the report, returned as base64 PNG data URIs.

Plot counts are capped (facets, lines, bars) so thousands of cells still render in seconds; every
figure says what it left out, and the full numbers are always in the report's tables.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import matplotlib.lines  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402

MAX_FACETS = 12
MAX_LINES_PER_FACET = 24
MAX_BARS = 40
DPI = 80
_STYLES = ["-", "--", ":", "-."]
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
    handles: dict[str, object] = {}
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


def scaling_efficiency(frame: pd.DataFrame) -> Figure | None:
    """Throughput at N GPUs / (N x throughput at 1 GPU), same detector, mode, variant and per-GPU batch."""
    eff = scaling_table(frame)
    if eff.empty:
        return None
    keys = ["run", "model", "mode", "variant", "batch_size"]
    groups = list(eff.groupby(keys, sort=True))
    # one line per (run, model, mode, variant): its largest batch, so the plot stays readable
    best: dict[tuple, pd.DataFrame] = {}
    for key, group in groups:
        best[key[:4]] = group
    lines = list(best.items())[:MAX_LINES_PER_FACET]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for (run, model, mode, variant), group in lines:
        group = group.sort_values("gpus")
        label = f"{model} {mode} {variant} bs{int(group['batch_size'].iloc[0])}/GPU"
        if eff["run"].nunique() > 1:
            label += f" [{run}]"
        ax.plot([1, *group["gpus"]], [1.0, *group["scaling_efficiency"]], marker="o", label=label)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xlabel("GPUs", fontsize=8)
    ax.set_ylabel("scaling efficiency", fontsize=8)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower left")
    ax.set_title("Scaling efficiency vs GPU count", fontsize=10)
    fig.tight_layout()
    return Figure("Scaling efficiency", to_data_uri(fig), _cap_note(len(best), len(lines), "lines"))


def scaling_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows for cells with gpus > 1 and an ok 1-GPU twin: ``scaling_efficiency`` = T_N / (N * T_1)."""
    ok = frame[(frame["status"] == "ok") & frame["throughput_ips"].notna()]
    keys = ["run", "model", "mode", "compile", "precision", "variant", "batch_size", "image_size"]
    single = ok[ok["gpus"] == 1][keys + ["throughput_ips"]].rename(columns={"throughput_ips": "throughput_1gpu"})
    multi = ok[ok["gpus"] > 1]
    if multi.empty or single.empty:
        return pd.DataFrame(columns=keys + ["gpus", "throughput_ips", "throughput_1gpu", "scaling_efficiency"])
    merged = multi.merge(single, on=keys, how="inner")
    merged["scaling_efficiency"] = merged["throughput_ips"] / (merged["gpus"] * merged["throughput_1gpu"])
    return merged[keys + ["gpus", "throughput_ips", "throughput_1gpu", "scaling_efficiency"]]


def _cap_note(total: int, shown: int, what: str, dropped_lines: int = 0) -> str:
    notes = []
    if shown < total:
        notes.append(f"showing {shown} of {total} {what}")
    if dropped_lines:
        notes.append(f"{dropped_lines} lines left out")
    return "; ".join(notes) + ("; all numbers are in the tables" if notes else "")
