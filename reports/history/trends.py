"""What the history says about runs and cells: a run judged against each cell's band, the largest recent moves, the
steps, and where the software changed. Pure functions over the store's tables (pandas), used by the CLI and the
HTML report alike."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from reports.history import analysis
from reports.history.store import Store, _cell_hash, run_fields
from reports.load import Run

# what a run's software is, for the marks on the trend plots and the "environment change" column
SOFTWARE_KEYS = (("torch", "torch"), ("image", "image"), ("driver", "driver"), ("cuda", "CUDA"), ("cudnn", "cuDNN"))
MARK_KEYS = ("torch", "image")  # the changes drawn on the trend plots

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
        return (f"history ({self.label} on {self.machine} vs the store's bands, threshold ±{self.threshold:.0%}): "
                f"{', '.join(parts) or 'no cells'}; {stands}; weak: fewer than {analysis.MIN_BAND_RUNS} runs")


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


def marks(runs: pd.DataFrame) -> pd.DataFrame:
    """Per machine, the runs where torch or the image changed from the machine's previous run."""
    rows = []
    for machine, group in runs.sort_values(["run_at", "seq"]).groupby("machine", sort=True):
        previous = None
        for _, row in group.iterrows():
            if previous is not None:
                text = software_change(previous, row, MARK_KEYS)
                if text:
                    rows.append({"machine": machine, "run_id": row["run_id"], "run_at": row["run_at"], "text": text})
            previous = row
    return pd.DataFrame(rows, columns=["machine", "run_id", "run_at", "text"])


MOVE_COLUMNS = ["cell_id", "machine", "previous_run", "last_run", "previous_ips", "last_ips", "change", "band",
                "band_runs", "verdict", "software", "step"]


def run_name(row: pd.Series) -> str:
    """A run as the tables name it: ``2026-11-24 13:16 h100-quick``."""
    return f"{str(row['run_at'])[:16].replace('T', ' ')} {row['label']}"


def largest_moves(store: Store, threshold: float, limit: int = 30) -> pd.DataFrame:
    """Per machine and cell, the move from the second-last to the last ok run, judged against the band of the
    same-environment runs before the last one; the ``limit`` largest moves first."""
    series = store.series()
    steps = store.frame("SELECT s.*, r.run_at, r.label FROM steps s JOIN runs r USING (run_id)")
    rows = []
    for (machine, cell_id), group in series.groupby(["machine", "cell_id"], sort=True):
        if len(group) < 2:
            continue
        previous, last = group.iloc[-2], group.iloc[-1]
        earlier = group.iloc[:-1]
        same = earlier[earlier["env_key"] == last["env_key"]]
        band = analysis.noise_band(list(same["throughput_ips"])) if len(same) else None
        verdict = analysis.judge(float(last["throughput_ips"]), band, threshold)
        cell_steps = steps[(steps["machine"] == machine) & (steps["cell_id"] == cell_id)].sort_values("run_at")
        step = ""
        if len(cell_steps):
            latest = cell_steps.iloc[-1]
            step = f"{run_name(latest)} ({latest['change']:+.1%})"
        rows.append({"cell_id": cell_id, "machine": machine, "previous_run": run_name(previous),
                     "last_run": run_name(last), "previous_ips": previous["throughput_ips"],
                     "last_ips": last["throughput_ips"],
                     "change": last["throughput_ips"] / previous["throughput_ips"] - 1.0,
                     "band": band.half_width if band and not band.weak else None,
                     "band_runs": band.runs if band else 0,
                     "verdict": verdict.verdict, "software": software_change(previous, last), "step": step})
    table = pd.DataFrame(rows, columns=MOVE_COLUMNS)
    if table.empty:
        return table
    order = table["change"].abs().sort_values(ascending=False, kind="stable").index
    return table.loc[order].head(limit).reset_index(drop=True)


STEP_COLUMNS = ["cell_id", "machine", "first_run", "before_ips", "after_ips", "change", "p_value", "runs_before",
                "runs_after", "software"]


def steps_table(store: Store) -> pd.DataFrame:
    """Every step the store found (first run of the new level), with what changed in the software at that run."""
    steps = store.frame("SELECT s.*, r.run_at, r.label, r.seq FROM steps s JOIN runs r USING (run_id) "
                        "ORDER BY r.run_at, r.seq, s.cell_id")
    series = store.series()
    rows = []
    for _, step in steps.iterrows():
        cell = series[(series["machine"] == step["machine"]) & (series["cell_id"] == step["cell_id"])]
        cell = cell.reset_index(drop=True)
        at = cell.index[cell["run_id"] == step["run_id"]]
        software = software_change(cell.iloc[at[0] - 1], cell.iloc[at[0]]) if len(at) and at[0] else ""
        rows.append({"cell_id": step["cell_id"], "machine": step["machine"], "first_run": run_name(step),
                     "before_ips": step["before_ips"], "after_ips": step["after_ips"], "change": step["change"],
                     "p_value": step["p_value"], "runs_before": step["runs_before"], "runs_after": step["runs_after"],
                     "software": software})
    return pd.DataFrame(rows, columns=STEP_COLUMNS)
