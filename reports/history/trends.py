"""What the history says about runs and cells: a run judged against each cell's band, the largest recent moves, the
steps, and where the software changed. Pure functions over the store's tables (pandas), used by the CLI and the
HTML report alike."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from detbench.reports.history import analysis
from detbench.reports.history import method as method_module
from detbench.reports.history.store import Store, _cell_hash, run_fields
from detbench.reports.load import Run

# what a run's software is, for the marks on the trend plots and the "environment change" column
SOFTWARE_KEYS = (("torch", "torch"), ("image", "image"), ("driver", "driver"), ("cuda", "CUDA"), ("cudnn", "cuDNN"))

JUDGED_COLUMNS = ["cell_id", "model", "mode", "variant", "status", "throughput_ips", "level_ips", "low_ips", "high_ips",
                  "band", "band_runs", "change", "verdict", "gating", "reason"]


@dataclass
class RunJudgement:
    """A run's cells against the bands of the store's same-environment runs."""

    label: str
    machine: str
    in_store: bool  # the run itself is in the store (left out of its own bands, with every later run)
    table: pd.DataFrame  # JUDGED_COLUMNS
    threshold: float

    def count(self, verdict: str) -> int:
        return int((self.table["verdict"] == verdict).sum())

    @property
    def regressions(self) -> pd.DataFrame:
        return self.table[self.table["gating"].astype(bool)]

    def summary(self) -> str:
        counts = self.table["verdict"].value_counts()
        order = [analysis.REGRESSION, analysis.IMPROVEMENT, analysis.UNCHANGED, analysis.WEAK, analysis.NO_HISTORY,
                 analysis.NOT_OK]
        parts = [f"{int(counts[v])} {v}" for v in order if v in counts]
        runs = self.table.loc[self.table["band_runs"] > 0, "band_runs"]
        stands = (f"bands stand on {int(runs.min())}-{int(runs.max())} same-environment runs" if len(runs)
                  else "no same-environment run in the store")
        weak = f"; weak: fewer than {analysis.MIN_BAND_RUNS} runs" if analysis.WEAK in counts else ""
        return (f"history ({self.label} on {self.machine} vs the store's bands, threshold ±{self.threshold:.0%}): "
                f"{', '.join(parts) or 'no cells'}; {stands}{weak}")


def judge_run(store: Store, run: Run, threshold: float) -> RunJudgement:
    """Judge every cell of ``run`` against its band in the store (same environment: machine, driver, torch,
    torchvision, CUDA, cuDNN, image). A run already in the store is judged against the runs before it."""
    fields = run_fields(run)
    own = store.run_of_results(_cell_hash(r) for r in run.results)
    series = store.series(ok_only=False)
    runs = store.runs()
    same = series[series["env_key"] == fields["env_key"]]
    if own is not None:
        position = runs.index[runs["run_id"] == own][0]
        earlier = set(runs.loc[: position - 1, "run_id"]) if position > 0 else set()
        same = same[same["run_id"].isin(earlier)]
    elif fields["started_at"]:
        same = same[same["run_at"] < fields["started_at"]]
    rows = []
    judged: dict[int, tuple[float, analysis.Band | None]] = {}
    for result in run.results:
        cell = result.cell
        history = same[same["cell_id"] == cell.id]
        ok = history[(history["status"] == "ok") & (history["throughput_ips"] > 0)]
        row = {"cell_id": cell.id, "model": cell.model, "mode": cell.mode, "variant": cell.configuration,
               "status": result.status, "throughput_ips": result.throughput_ips, "level_ips": None, "low_ips": None,
               "high_ips": None, "band": None, "band_runs": len(ok), "change": None, "gating": False}
        if result.status != "ok" or not result.throughput_ips:
            if len(ok) and history.iloc[-1]["status"] == "ok":
                row.update(verdict=analysis.REGRESSION, gating=True,
                           reason=f"{result.status} now ({result.reason or 'no reason given'}); ok in the last "
                                  "same-environment run")
            else:
                row.update(verdict=analysis.NOT_OK, reason=f"{result.status} now, and not ok before either")
            rows.append(row)
            continue
        band = analysis.noise_band(list(ok["throughput_ips"]))
        if band is not None:  # a band on fewer than 3 runs is not shown (t with 1 degree of freedom: +-1000 %)
            row.update(level_ips=band.level)
            if not band.weak:
                row.update(low_ips=band.low, high_ips=band.high, band=band.half_width)
        judged[len(rows)] = (float(result.throughput_ips), band)
        rows.append(row)
    # the run's cells judged together (one judge for every verdict, Holm across the cells)
    for index, verdict in analysis.judge_cells({str(i): vb for i, vb in judged.items()}, threshold).items():
        rows[int(index)].update(change=verdict.change, verdict=verdict.verdict, reason=verdict.reason,
                                gating=verdict.verdict == analysis.REGRESSION)
    table = pd.DataFrame(rows, columns=JUDGED_COLUMNS)
    return RunJudgement(run.label, fields["machine"], own is not None, table, threshold)


def software_change(before: pd.Series, after: pd.Series, keys: tuple[str, ...] | None = None) -> str:
    """``torch 2.10.0 -> 2.11.0; image a -> b`` between two runs' rows, or ``""``."""
    parts = []
    for key, name in SOFTWARE_KEYS:
        if keys is not None and key not in keys:
            continue
        old, new = before.get(key), after.get(key)
        old = None if pd.isna(old) else str(old)
        new = None if pd.isna(new) else str(new)
        if old != new:
            parts.append(f"{name} {old or 'n/a'} -> {new or 'n/a'}")
    return "; ".join(parts)


MOVE_COLUMNS = ["cell_id", "machine", "previous_run", "last_run", "previous_ips", "last_ips", "change", "band",
                "band_text", "band_runs", "verdict", "software", "step"]
METHOD_CHANGED = "method changed"


def run_name(row: pd.Series) -> str:
    """A run as the tables name it: ``2026-11-24 13:16 h100-quick``."""
    return f"{str(row['run_at'])[:16].replace('T', ' ')} {row['label']}"


def what_changed(before: pd.Series, after: pd.Series) -> str:
    """The software change and the method change between two runs' rows (``series`` rows), or ``""``."""
    parts = [software_change(before, after)]
    if "method" in before and before.get("method") != after.get("method"):
        parts.append(method_module.describe_change(json.loads(before["method"] or "{}"),
                                                   json.loads(after["method"] or "{}")))
    if "method_key" in before and before.get("method_key") != after.get("method_key") and not parts[-1]:
        parts.append("post-processing policy")
    return "; ".join(p for p in parts if p)


def largest_moves(store: Store, threshold: float, limit: int = 30, series: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per machine and cell, the move from the second-last to the last ok run, judged against the band of the
    same-environment, same-method runs before the last one; the ``limit`` largest moves first. Two runs of another
    method are not a move: their verdict is ``method changed``."""
    series = store.series() if series is None else series
    steps = store.frame("SELECT s.*, r.run_at, r.label FROM steps s JOIN runs r USING (run_id) WHERE s.cause = 'level'")
    latest_step = {(m, c): g.sort_values("run_at").iloc[-1] for (m, c), g in steps.groupby(["machine", "cell_id"])}
    rows = []
    for (machine, cell_id), group in series.groupby(["machine", "cell_id"], sort=True):
        if len(group) < 2:
            continue
        previous, last = group.iloc[-2], group.iloc[-1]
        earlier = group.iloc[:-1]
        same = earlier[(earlier["env_key"] == last["env_key"]) & (earlier["method_key"] == last["method_key"])]
        band = analysis.noise_band(list(same["throughput_ips"])) if len(same) else None
        verdict = analysis.judge(float(last["throughput_ips"]), band, threshold).verdict
        if previous["method_key"] != last["method_key"]:
            verdict = METHOD_CHANGED
        step = ""
        if (machine, cell_id) in latest_step:
            latest = latest_step[(machine, cell_id)]
            step = f"{latest['change']:+.1%} at {run_name(latest)}"
        shown = band if band is not None and not band.weak else None
        rows.append({"cell_id": cell_id, "machine": machine, "previous_run": run_name(previous),
                     "last_run": run_name(last), "previous_ips": previous["throughput_ips"],
                     "last_ips": last["throughput_ips"],
                     "change": last["throughput_ips"] / previous["throughput_ips"] - 1.0,
                     "band": shown.half_width if shown else None, "band_text": shown.text() if shown else "",
                     "band_runs": band.runs if band else 0,
                     "verdict": verdict, "software": what_changed(previous, last), "step": step})
    table = pd.DataFrame(rows, columns=MOVE_COLUMNS)
    if table.empty:
        return table
    order = table["change"].abs().sort_values(ascending=False, kind="stable").index
    return table.loc[order].head(limit).reset_index(drop=True)


STEP_COLUMNS = ["cell_id", "machine", "first_run", "cause", "before_ips", "after_ips", "change", "change_low",
                "change_high", "interval", "p_value", "runs_before", "runs_after", "software", "run_at"]


def interval_text(low: float | None, high: float | None) -> str:
    """``-12.1%..-8.0%`` (a 95 % interval), or ``""``."""
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return ""
    return f"{low:+.1%}..{high:+.1%}"


def steps_table(store: Store, series: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every step the store found (first run of the new level; ``method changed``: the first run of a new method),
    with what changed in the software or the method at that run."""
    steps = store.frame("SELECT s.*, r.run_at, r.label, r.seq FROM steps s JOIN runs r USING (run_id) "
                        "ORDER BY r.run_at, r.seq, s.cell_id")
    series = store.series() if series is None else series
    position = {key: group.reset_index(drop=True) for key, group in series.groupby(["machine", "cell_id"])}
    rows = []
    for _, step in steps.iterrows():
        cell = position.get((step["machine"], step["cell_id"]))
        at = cell.index[cell["run_id"] == step["run_id"]] if cell is not None else []
        software = ""
        if cell is not None and len(at) and at[0]:
            software = what_changed(cell.iloc[at[0] - 1], cell.iloc[at[0]])
        rows.append({"cell_id": step["cell_id"], "machine": step["machine"], "first_run": run_name(step),
                     "cause": step["cause"], "before_ips": step["before_ips"], "after_ips": step["after_ips"],
                     "change": step["change"], "change_low": step["change_low"], "change_high": step["change_high"],
                     "interval": interval_text(step["change_low"], step["change_high"]), "p_value": step["p_value"],
                     "runs_before": step["runs_before"], "runs_after": step["runs_after"], "software": software,
                     "run_at": step["run_at"]})
    return pd.DataFrame(rows, columns=STEP_COLUMNS)


ALERT_COLUMNS = ["cell_id", "machine", "kind", "first_run", "change", "interval", "detail", "software"]


def open_alerts(store: Store, series: pd.DataFrame | None = None, steps: pd.DataFrame | None = None) -> pd.DataFrame:
    """What a team should look at now, per machine and cell, in the series of the cell's newest method: the step
    that set the current level (slowdowns first, then the largest), and a drift of the current level with its rate.
    An alert stays until a later step sets another level."""
    series = store.series() if series is None else series
    steps = steps_table(store, series) if steps is None else steps
    drifts = store.frame("SELECT d.*, r.run_at, r.label, l.run_at AS last_at FROM drifts d JOIN runs r ON "
                         "r.run_id = d.first_run_id JOIN runs l ON l.run_id = d.last_run_id")
    newest = {key: group.iloc[-1] for key, group in series.groupby(["machine", "cell_id"])}
    rows = []
    level = steps[steps["cause"] == "level"]
    for (machine, cell_id), group in level.groupby(["machine", "cell_id"]):
        last = newest.get((machine, cell_id))
        step = group.sort_values("run_at").iloc[-1]
        later_method = steps[(steps["machine"] == machine) & (steps["cell_id"] == cell_id)
                             & (steps["cause"] == METHOD_CHANGED) & (steps["run_at"] > step["run_at"])]
        if last is None or len(later_method):
            continue  # the cell's newest runs are another method's series
        rows.append({"cell_id": cell_id, "machine": machine, "kind": "step", "first_run": step["first_run"],
                     "change": step["change"], "interval": step["interval"],
                     "detail": f"{step['before_ips']:.4g} -> {step['after_ips']:.4g} img/s, {step['runs_after']} "
                               "runs since", "software": step["software"]})
    for _, drift in drifts.iterrows():
        last = newest.get((drift["machine"], drift["cell_id"]))
        if last is None or last["run_id"] != drift["last_run_id"]:
            continue  # a drift of an earlier level (or method)
        rows.append({"cell_id": drift["cell_id"], "machine": drift["machine"], "kind": "drift",
                     "first_run": run_name(drift), "change": drift["rate"],
                     "interval": interval_text(drift["rate_low"], drift["rate_high"]),
                     "detail": f"{drift['rate']:+.2%} per run over {drift['runs']} runs "
                               f"({drift['change']:+.1%} in all)",
                     "software": ""})
    table = pd.DataFrame(rows, columns=ALERT_COLUMNS)
    if table.empty:
        return table
    table = table.assign(_order=table["change"].map(lambda c: (c >= 0, -abs(c))))
    return table.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
