"""The store's derived tables (``bands``, ``steps``, ``drifts``), refreshed per cell series: an ``add`` recomputes
only the series its cells touch, so its cost does not grow with the number of cells in the store.

A *series* is one cell on one machine kind measured with one method (:mod:`detbench.reports.history.method`): where the
method changes, a new series starts and the change is kept as a step whose cause is ``method changed``, never judged as
a move and never sharing a band. Steps and drifts are searched in the last :data:`ANALYSED_RUNS` runs of each series
(older ones stay as they were found); bands stand on the last :data:`ANALYSED_RUNS` runs of their environment.
"""

from __future__ import annotations

import sqlite3
import statistics
from collections.abc import Iterable

from detbench.reports.history import analysis

ANALYSED_RUNS = 300  # runs of a series searched for steps and drifts on every add
LEVEL = "level"
METHOD_CHANGED = "method changed"
NEAR = 4  # runs each side whose medians a method change is shown with

OK = "c.status = 'ok' AND c.throughput_ips > 0"


def refresh(conn: sqlite3.Connection, bands: Iterable[tuple[str, str]], series: Iterable[tuple[str, str]]) -> None:
    """Recompute the bands of ``(env_key, cell_id)`` and the steps and drifts of ``(machine, cell_id)``."""
    for env_key, cell_id in sorted(set(bands)):
        refresh_band(conn, env_key, cell_id)
    for machine, cell_id in sorted(set(series)):
        refresh_series(conn, machine, cell_id)


def refresh_all(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM bands")
    conn.execute("DELETE FROM steps")
    conn.execute("DELETE FROM drifts")
    bands = conn.execute("SELECT DISTINCT r.env_key, c.cell_id FROM cells c JOIN runs r USING (run_id)").fetchall()
    series = conn.execute("SELECT DISTINCT r.machine, c.cell_id FROM cells c JOIN runs r USING (run_id)").fetchall()
    refresh(conn, bands, series)


def refresh_band(conn: sqlite3.Connection, env_key: str, cell_id: str) -> None:
    """The band of the cell's newest method in this environment (a post-processing policy can change per cell)."""
    conn.execute("DELETE FROM bands WHERE env_key = ? AND cell_id = ?", (env_key, cell_id))
    rows = conn.execute(f"SELECT c.throughput_ips, c.method_key FROM cells c JOIN runs r USING (run_id) "
                        f"WHERE r.env_key = ? AND c.cell_id = ? AND {OK} ORDER BY r.run_at, r.seq",
                        (env_key, cell_id)).fetchall()
    if not rows:
        return
    newest = rows[-1][1]
    values = [float(v) for v, method in rows if method == newest][-ANALYSED_RUNS:]
    band = analysis.noise_band(values)
    if band is not None:
        conn.execute("INSERT INTO bands VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (env_key, cell_id, band.runs, band.segment_runs, band.level, band.sd, band.low, band.high,
                      band.half_width))


def refresh_series(conn: sqlite3.Connection, machine: str, cell_id: str) -> None:
    """Steps and drifts of one cell on one machine kind, each method's series apart."""
    rows = conn.execute(f"SELECT r.run_id, c.throughput_ips, c.method_key FROM cells c JOIN runs r USING (run_id) "
                        f"WHERE r.machine = ? AND c.cell_id = ? AND {OK} ORDER BY r.run_at, r.seq",
                        (machine, cell_id)).fetchall()
    conn.execute("DELETE FROM steps WHERE machine = ? AND cell_id = ? AND cause = ?", (machine, cell_id,
                                                                                     METHOD_CHANGED))
    by_method: dict[str, list[tuple[str, float]]] = {}
    previous: str | None = None
    for i, (run_id, ips, method) in enumerate(rows):
        if previous is not None and method != previous:
            _method_step(conn, machine, cell_id, rows, i, by_method.get(previous, []))
        by_method.setdefault(method, []).append((run_id, float(ips)))
        previous = method
    for points in by_method.values():
        _level_steps(conn, machine, cell_id, points[-ANALYSED_RUNS:])


def _method_step(conn: sqlite3.Connection, machine: str, cell_id: str, rows: list[tuple[str, float, str]], at: int,
                 before: list[tuple[str, float]]) -> None:
    method = rows[at][2]
    after = [float(ips) for _, ips, m in rows[at:] if m == method]
    old = statistics.median([ips for _, ips in before[-NEAR:]])
    new = statistics.median(after[:NEAR])
    conn.execute("INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, ?, ?)",
                 (machine, cell_id, rows[at][0], METHOD_CHANGED, old, new, new / old - 1.0, len(before), len(after)))


def _level_steps(conn: sqlite3.Connection, machine: str, cell_id: str, points: list[tuple[str, float]]) -> None:
    ids = [run_id for run_id, _ in points]
    conn.executemany("DELETE FROM steps WHERE machine = ? AND cell_id = ? AND run_id = ? AND cause = ?",
                     [(machine, cell_id, run_id, LEVEL) for run_id in ids])
    conn.executemany("DELETE FROM drifts WHERE machine = ? AND cell_id = ? AND first_run_id = ?",
                     [(machine, cell_id, run_id) for run_id in ids])
    found = analysis.analyse([ips for _, ips in points])
    for step in found.steps:
        conn.execute("INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (machine, cell_id, ids[step.index], LEVEL, step.before, step.after, step.change, step.change_low,
                      step.change_high, step.p_value, step.runs_before, step.runs_after))
    for drift in found.drifts:
        conn.execute("INSERT OR REPLACE INTO drifts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (machine, cell_id, ids[drift.start], ids[drift.end - 1], drift.runs, drift.rate, drift.rate_low,
                      drift.rate_high, drift.change, drift.p_value))
