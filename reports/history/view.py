"""The report's history section (``detbench-report RUN --history DB``): the report's runs against the store's bands,
the largest moves between each cell's last two runs, the steps found, and trend plots per cell. Built as plain view
objects; ``templates/history.html.j2`` lays them out with autoescaping like the rest of the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from reports import columns as C  # noqa: N812 - as in reports.html
from reports import plots
from reports.history import analysis
from reports.history.store import DATABASE_ERRORS, closing_store, damaged
from reports.history.trends import judge_run, largest_moves, marks, steps_table
from reports.html import TableView
from reports.load import Run

MAX_TREND_CELLS = 12  # trend figures drawn; every cell's figures are in the store
MOVES_SHOWN = 30

MOVES = [
    C.Column("cell_id", "cell"),
    C.Column("machine", "machine"),
    C.Column("previous_run", "previous run"),
    C.Column("last_run", "last run"),
    C.Column("previous_ips", "previous img/s", C.fmt_num, "num"),
    C.Column("last_ips", "last img/s", C.fmt_num, "num"),
    C.Column("change", "change", C.fmt_signed_pct, "num"),
    C.Column("band", "band ±", C.fmt_pct, "num"),
    C.Column("band_runs", "band runs", C.fmt_int, "num"),
    C.Column("verdict", "verdict", kind="verdict"),
    C.Column("software", "software change"),
    C.Column("step", "latest step"),
]
STEPS = [
    C.Column("cell_id", "cell"),
    C.Column("machine", "machine"),
    C.Column("first_run", "first run moved"),
    C.Column("before_ips", "img/s before", C.fmt_num, "num"),
    C.Column("after_ips", "img/s after", C.fmt_num, "num"),
    C.Column("change", "change", C.fmt_signed_pct, "num"),
    C.Column("runs_before", "runs before", C.fmt_int, "num"),
    C.Column("runs_after", "runs after", C.fmt_int, "num"),
    C.Column("p_value", "p (adjusted)", lambda v: "" if C.is_missing(v) else f"{float(v):.2g}", "num"),
    C.Column("software", "software change at that run"),
]
JUDGED = [
    C.Column("cell_id", "cell"),
    C.Column("status", "status", kind="status"),
    C.Column("throughput_ips", "img/s", C.fmt_num, "num"),
    C.Column("level_ips", "band level img/s", C.fmt_num, "num"),
    C.Column("band", "band ±", C.fmt_pct, "num"),
    C.Column("band_runs", "band runs", C.fmt_int, "num"),
    C.Column("change", "change", C.fmt_signed_pct, "num"),
    C.Column("verdict", "verdict", kind="verdict"),
    C.Column("reason", "why", kind="reason"),
]


def _when(values: pd.Series) -> pd.Series:
    """The store's UTC text times as naive UTC datetimes (what matplotlib's date axis takes)."""
    return pd.to_datetime(values, utc=True, format="ISO8601").dt.tz_localize(None)


def history_view(path: str | Path, report_runs: list[Run], threshold: float) -> dict[str, Any]:
    """Everything the history section shows; raises StoreError for a store that cannot be read."""
    try:
        return _history_view(path, report_runs, threshold)
    except DATABASE_ERRORS as exc:
        raise damaged(Path(path), exc) from None


def _history_view(path: str | Path, report_runs: list[Run], threshold: float) -> dict[str, Any]:
    with closing_store(path, readonly=True) as store:
        runs = store.runs()
        series = store.series()
        counts = store.counts()
        moves = largest_moves(store, threshold, MOVES_SHOWN)
        steps = steps_table(store)
        step_points = store.frame("SELECT s.machine, s.cell_id, s.run_id FROM steps s")
        judged = [judge_run(store, run, threshold) for run in report_runs]
    per_machine = runs.groupby("machine", sort=False).size().sort_values(ascending=False)
    span = f", {str(runs['run_at'].min())[:10]} to {str(runs['run_at'].max())[:10]}" if len(runs) else ""
    summary = (f"{Path(path).name}: {counts['runs']} runs, {counts['cells']} cell results{span}; "
               + "; ".join(f"{machine}: {n} runs" for machine, n in per_machine.items()))
    figures, figures_note = _figures(runs, series, step_points, report_runs)
    judged_views = []
    for i, judgement in enumerate(judged):
        table_id = f"history-judged-{i}"
        judged_views.append({
            "label": judgement.label, "summary": judgement.summary(),
            "selects": {"verdict": sorted(judgement.table["verdict"].unique())},
            "table": TableView(table_id, JUDGED, C.records(judgement.table), row_attrs=("verdict", "status")),
        })
    return {
        "summary": summary,
        "threshold_pct": f"{threshold * 100:g}",
        "min_runs": analysis.MIN_BAND_RUNS,
        "judged": judged_views,
        "moves": TableView("history-moves", MOVES, C.records(moves), row_attrs=("verdict",)) if len(moves) else None,
        "steps": TableView("history-steps", STEPS, C.records(steps), row_attrs=()) if len(steps) else None,
        "figures": figures,
        "figures_note": figures_note,
    }


def _figures(runs: pd.DataFrame, series: pd.DataFrame, step_points: pd.DataFrame,
             report_runs: list[Run]) -> tuple[list[plots.Figure], str]:
    """Trend figures for up to MAX_TREND_CELLS cells: the report's cells first, cells with a step, then the largest
    last move."""
    if series.empty:
        return [], "No ok cell result in the store."
    series = series.assign(when=_when(series["run_at"]))
    wanted = {r.cell.id for run in report_runs for r in run.results}
    stepped = set(step_points["cell_id"])
    score: dict[str, tuple[bool, bool, float]] = {}
    for (_machine, cell_id), group in series.groupby(["machine", "cell_id"], sort=True):
        ips = list(group["throughput_ips"])
        move = abs(ips[-1] / ips[-2] - 1.0) if len(ips) > 1 else 0.0
        old = score.get(cell_id, (False, False, 0.0))
        score[cell_id] = (cell_id in wanted, cell_id in stepped, max(old[2], move))
    ordered = sorted(score, key=lambda c: (not score[c][0], not score[c][1], -score[c][2], c))
    shown = ordered[:MAX_TREND_CELLS]
    changes = marks(runs)
    changes = changes.assign(when=_when(changes["run_at"])) if len(changes) else changes.assign(when=pd.Series())
    figures = []
    for cell_id in shown:
        points = series[series["cell_id"] == cell_id]
        spans = points.groupby("machine")["when"].agg(["min", "max"])
        cell_marks = changes[changes["machine"].isin(spans.index)]
        if len(cell_marks):
            low = cell_marks["machine"].map(spans["min"])
            high = cell_marks["machine"].map(spans["max"])
            cell_marks = cell_marks[(cell_marks["when"] >= low) & (cell_marks["when"] <= high)]
        hits = step_points[step_points["cell_id"] == cell_id].merge(
            points[["machine", "run_id", "when", "throughput_ips"]], on=["machine", "run_id"])
        figure = plots.history_trend(
            cell_id,
            points[["machine", "when", "throughput_ips", "latency_median_ms"]].rename(columns={"when": "run_at"}),
            cell_marks[["machine", "when", "text"]].rename(columns={"when": "run_at"}),
            hits[["machine", "when", "throughput_ips"]].rename(columns={"when": "run_at"}),
        )
        if figure is not None:
            figures.append(figure)
    note = (f"Trends of {len(shown)} of {len(ordered)} cells (the report's cells first, then cells with a step, then "
            "the largest last move); every cell is in the store (docs/history.md has the queries).")
    return figures, note
