"""The report's history section (``detbench-report RUN --history DB``): the report's runs against the store's bands,
the largest moves between each cell's last two runs, the steps found, and trend plots per cell. Built as plain view
objects; ``templates/history.html.j2`` lays them out with autoescaping like the rest of the page."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from detbench.reports import columns as C  # noqa: N812 - as in detbench.reports.html
from detbench.reports.history import analysis, trend_svg
from detbench.reports.history.store import DATABASE_ERRORS, closing_store, damaged
from detbench.reports.history.trends import judge_run, largest_moves, open_alerts, steps_table
from detbench.reports.html import TableView
from detbench.reports.load import Run

MAX_TREND_CELLS = 12  # trend figures drawn; every cell's figures are in the store
MOVES_SHOWN = 30


def _pair(a: str, b: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda row: "" if C.is_missing(row.get(a)) else f"{C.fmt_num(row.get(a))} → {C.fmt_num(row.get(b))}"


# the key columns first (what moved, by how much, against which band, the verdict, what changed), so they read at
# 1400 px without scrolling; long texts wrap (class "wrap")
MOVES = [
    C.Column("cell_id", "cell", kind="wrap"),
    C.Column("change", "change", C.fmt_signed_pct, "num"),
    C.Column("band_text", "band", kind="band"),
    C.Column("verdict", "verdict", kind="verdict"),
    C.Column("software", "what changed", kind="wrap"),
    C.Column("last_run", "last run", kind="wrap"),
    C.Column("last_ips", "img/s", display=_pair("previous_ips", "last_ips")),
    C.Column("band_runs", "band runs", C.fmt_int, "num"),
    C.Column("step", "latest step", kind="wrap"),
    C.Column("machine", "machine", kind="wrap"),
]
STEPS = [
    C.Column("cell_id", "cell", kind="wrap"),
    C.Column("change", "change", C.fmt_signed_pct, "num"),
    C.Column("interval", "95% interval", kind="band"),
    C.Column("cause", "cause"),
    C.Column("software", "what changed at that run", kind="wrap"),
    C.Column("first_run", "first run moved", kind="wrap"),
    C.Column("after_ips", "img/s", display=_pair("before_ips", "after_ips")),
    C.Column("runs_before", "runs before", C.fmt_int, "num"),
    C.Column("runs_after", "after", C.fmt_int, "num"),
    C.Column("machine", "machine", kind="wrap"),
]
ALERTS = [
    C.Column("cell_id", "cell", kind="wrap"),
    C.Column("kind", "kind"),
    C.Column("change", "size", display=lambda r: (f"{r['change']:+.1%}" if r["kind"] == "step"
                                                        else f"{r['change']:+.2%}/run")),
    C.Column("interval", "95% interval", kind="band"),
    C.Column("software", "what changed at that run", kind="wrap"),
    C.Column("first_run", "since", kind="wrap"),
    C.Column("detail", "detail", kind="wrap"),
    C.Column("machine", "machine", kind="wrap"),
]
JUDGED = [
    C.Column("cell_id", "cell", kind="wrap"),
    C.Column("status", "status", kind="status"),
    C.Column("throughput_ips", "img/s", C.fmt_num, "num"),
    C.Column("level_ips", "band level img/s", C.fmt_num, "num"),
    C.Column("band_text", "band", kind="band"),
    C.Column("band_runs", "band runs", C.fmt_int, "num"),
    C.Column("change", "change", C.fmt_signed_pct, "num"),
    C.Column("verdict", "verdict", kind="verdict"),
    C.Column("reason", "why", kind="reason"),
]


def history_view(path: str | Path, report_runs: list[Run], threshold: float) -> dict[str, Any]:
    """Everything the history section shows; raises StoreError for a store that cannot be read."""
    try:
        return _history_view(path, report_runs, threshold)
    except DATABASE_ERRORS as exc:
        raise damaged(Path(path), exc) from None


def _band_text(table: pd.DataFrame) -> pd.DataFrame:
    texts = [analysis.Band(0, 0, lv, None, lo, hi).text() if not (C.is_missing(lo) or C.is_missing(hi)) else ""
             for lv, lo, hi in zip(table["level_ips"], table["low_ips"], table["high_ips"], strict=True)]
    return table.assign(band_text=texts)


def _history_view(path: str | Path, report_runs: list[Run], threshold: float) -> dict[str, Any]:
    with closing_store(path, readonly=True) as store:
        runs = store.runs()
        series = store.series()
        counts = store.counts()
        moves = largest_moves(store, threshold, MOVES_SHOWN, series)
        steps = steps_table(store, series)
        alerts = open_alerts(store, series, steps)
        step_points = store.frame("SELECT machine, cell_id, run_id, change, cause FROM steps")
        bands = store.frame("SELECT * FROM bands")
        judged = [judge_run(store, run, threshold) for run in report_runs]
    per_machine = runs.groupby("machine", sort=False).size().sort_values(ascending=False)
    span = f", {str(runs['run_at'].min())[:10]} to {str(runs['run_at'].max())[:10]}" if len(runs) else ""
    summary = (f"{Path(path).name}: {counts['runs']} runs, {counts['cells']} cell results{span}; "
               + "; ".join(f"{machine}: {n} runs" for machine, n in per_machine.items()))
    undated = int((runs["run_at_source"] == "added").sum()) if len(runs) else 0
    figures, figures_note = _figures(series, step_points, bands, report_runs)
    judged_views = []
    for i, judgement in enumerate(judged):
        table_id = f"history-judged-{i}"
        judged_views.append({
            "label": judgement.label, "summary": judgement.summary(),
            "selects": {"verdict": sorted(judgement.table["verdict"].unique())},
            "table": TableView(table_id, JUDGED, C.records(_band_text(judgement.table)),
                               row_attrs=("verdict", "status")),
        })
    return {
        "summary": summary,
        "undated": undated,
        "threshold_pct": f"{threshold * 100:g}",
        "min_runs": analysis.MIN_BAND_RUNS,
        "alerts": TableView("history-alerts", ALERTS, C.records(alerts), row_attrs=()) if len(alerts) else None,
        "judged": judged_views,
        "moves": TableView("history-moves", MOVES, C.records(moves), row_attrs=("verdict",)) if len(moves) else None,
        "steps": TableView("history-steps", STEPS, C.records(steps), row_attrs=("cause",)) if len(steps) else None,
        "figures": figures,
        "figures_note": figures_note,
    }


def _figures(series: pd.DataFrame, step_points: pd.DataFrame, bands: pd.DataFrame,
             report_runs: list[Run]) -> tuple[list[trend_svg.Trend], str]:
    """Trends of up to MAX_TREND_CELLS cells: the report's cells first, cells with a step, then the largest last
    move."""
    if series.empty:
        return [], "No ok cell result in the store."
    wanted = {r.cell.id for run in report_runs for r in run.results}
    stepped = set(step_points.loc[step_points["cause"] == "level", "cell_id"])
    score: dict[str, tuple[bool, bool, float]] = {}
    for (_machine, cell_id), group in series.groupby(["machine", "cell_id"], sort=True):
        ips = list(group["throughput_ips"])
        move = abs(ips[-1] / ips[-2] - 1.0) if len(ips) > 1 else 0.0
        old = score.get(cell_id, (False, False, 0.0))
        score[cell_id] = (cell_id in wanted, cell_id in stepped, max(old[2], move))
    ordered = sorted(score, key=lambda c: (not score[c][0], not score[c][1], -score[c][2], c))
    shown = ordered[:MAX_TREND_CELLS]
    by_cell = dict(tuple(series.groupby("cell_id", sort=False)))
    band_of = {(row.env_key, row.cell_id): row for row in bands.itertuples()}
    figures = []
    for cell_id in shown:
        points = by_cell[cell_id]
        machine_bands = {}
        for machine, mine in points.groupby("machine", sort=False):
            row = band_of.get((mine.iloc[-1]["env_key"], cell_id))
            if row is not None and row.runs >= analysis.MIN_BAND_RUNS and not C.is_missing(row.low_ips):
                machine_bands[machine] = {"low_ips": row.low_ips, "high_ips": row.high_ips,
                                          "level_ips": row.level_ips, "runs": row.runs}
        figure = trend_svg.trend(cell_id, points, step_points[step_points["cell_id"] == cell_id], machine_bands)
        if figure is not None:
            figures.append(figure)
    note = (f"Trends of {len(shown)} of {len(ordered)} cells (the report's cells first, then cells with a step, then "
            "the largest last move); every cell is in the store (docs/history.md has the queries).")
    return figures, note
