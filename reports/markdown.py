"""A short Markdown summary for a CI job summary ($GITHUB_STEP_SUMMARY): verdict, runs, picks, regressions."""

from __future__ import annotations

import pandas as pd

from detbench.bench.core.advice import NOT_INTERLEAVED
from detbench.bench.core.serving import load_curve, serving_advice
from detbench.reports.columns import (
    COMPARISON_INCONCLUSIVE,
    COMPARISON_SUMMARY,
    FAILURES,
    advice_columns,
    advice_rows,
    fmt_num,
    markdown_table,
    md_cell,
)
from detbench.reports.compare import (
    CANARY_TOLERANCE,
    IMPROVEMENT,
    LEASE_MOVE_MAX,
    MIN_BLOCKS,
    REGRESSION,
    WEAK_NOT_GATING,
    Comparison,
    RunEvidence,
)
from detbench.reports.html import ReportData

MAX_ROWS = 20


def _env(value: object) -> str:
    return "n/a" if value is None or value == "" else str(value)


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return lines


def _missing(comp: Comparison) -> list[str]:
    """Baseline cells the candidate has no result for: they fail the gate, so each is named."""
    sel = comp.missing
    if sel.empty:
        return []
    out = [f"### Missing in candidate: {md_cell(comp.candidate)} vs {md_cell(comp.baseline)} ({len(sel)})", ""]
    out += _table(
        ["cell", "baseline status", "baseline images/s"],
        [[r["cell_id"], r["status_base"], fmt_num(r["throughput_base"])]
         for r in sel.head(MAX_ROWS).to_dict("records")],
    )
    if len(sel) > MAX_ROWS:
        out.append(f"\n... and {len(sel) - MAX_ROWS} more (see the HTML report or comparison.csv)")
    return [*out, ""]


def _host_notes(comp: Comparison) -> list[str]:
    """The hosts' differences first: every figure below depends on them."""
    out = []
    pair = f"({md_cell(comp.candidate)} vs {md_cell(comp.baseline)})"
    if comp.host.differs:
        out += [f"> **Host differs** {pair}: {md_cell(comp.host.describe())}, beyond ±{CANARY_TOLERANCE:.0%}. "
                "Regressions and improvements of host-bound cells (GPU utilisation below 80% or not measured) are "
                "reported as inconclusive.", ""]
    if comp.environment_changes:
        out += [f"> Environment differs {pair}: {md_cell(', '.join(comp.environment_changes))}. "
                "A change may come from the machine, not the code.", ""]
    return out


def _evidence_notes(comp: Comparison) -> list[str]:
    """How strong the verdicts are: weak block verdicts, and cells only the v1 noise band could judge."""
    out = []
    if comp.weak:
        out.append(f"{comp.weak} cells ({md_cell(comp.candidate)} vs {md_cell(comp.baseline)}) were judged on their "
                   f"timed blocks (at least {MIN_BLOCKS} per side): **weak** evidence, as one repeat on a side cannot "
                   "measure the noise between runs; `--repeats 3` on both runs, or `detbench-ab` (paired rounds on "
                   "one machine), is the strong test.")
    if comp.banded:
        out.append(f"{comp.banded} cells had no blocks on a side (v1 result) and were judged on the per-iteration "
                   "noise band, which misses the noise between runs.")
    weak = len(comp.weak_regressions)
    if weak:
        out.append(f"{weak} weak regression{'s' if weak != 1 else ''} do{'es' if weak == 1 else ''} not fail the "
                   f"gate ({WEAK_NOT_GATING}); a weak regression gates only when its move is beyond "
                   f"{LEASE_MOVE_MAX:.0%}, the widest lease-to-lease move measured for the same software, or with "
                   "`--between-run-band` stated.")
    if comp.between_run_band is not None:
        out.append(f"Stated between-run band: ±{comp.between_run_band:.0%}; every flag exceeds it.")
    return [" ".join(out), ""] if out else []


def _inconclusive(comp: Comparison) -> list[str]:
    """Cells the gate could not judge: neither passed nor failed, so each is named with why."""
    return _unjudged(comp, "Inconclusive", comp.inconclusive,
                     "Not judged either way (they do not fail the gate): too few blocks, too noisy, or the host "
                     "differs.")


def _invalid(comp: Comparison) -> list[str]:
    """Cells with a figure no run can produce: named with it, never judged."""
    return _unjudged(comp, "Invalid", comp.invalid,
                     "Not judged (they do not fail the gate): a figure on a side is not finite, not positive or "
                     "implausibly large; check the result file.")


def _unjudged(comp: Comparison, title: str, sel: pd.DataFrame, text: str) -> list[str]:
    if sel.empty:
        return []
    out = [f"### {title}: {md_cell(comp.candidate)} vs {md_cell(comp.baseline)} ({len(sel)})", "", text, ""]
    out += markdown_table(COMPARISON_INCONCLUSIVE, sel.head(MAX_ROWS).to_dict("records"))
    if len(sel) > MAX_ROWS:
        out.append(f"\n... and {len(sel) - MAX_ROWS} more (see the HTML report or comparison.csv)")
    return [*out, ""]


def _advice(data: ReportData) -> list[str]:
    """The advice table (detbench.bench.core.advice; the same rows as the HTML section and the terminal)."""
    if not data.advice:
        return []
    out = ["### What should I use?", ""]
    out += markdown_table(advice_columns(with_run=len(data.runs) > 1), advice_rows(data.advice[: MAX_ROWS * 2]))
    if len(data.advice) > MAX_ROWS * 2:
        out.append(f"\n... and {len(data.advice) - MAX_ROWS * 2} more (see the HTML report or recommendations.csv)")
    out.append("")
    basis = {a.best.gain.basis for a in data.advice if a.best is not None}
    if NOT_INTERLEAVED in basis:
        out += ["Gains marked *not interleaved* divide two cells timed by different workers (host drift included); "
                "a gain with a range is a paired ratio (median and IQR over interleaved rounds).", ""]
    return out


def _serving(data: ReportData) -> list[str]:
    """Serving cells (detbench serve): the advisor's line per detector and bound, then each Server cell's
    latency-vs-offered-load curve with the knee (detbench.bench.core.serving.load_curve) and the sustainable rate
    marked."""
    advice = [a for run in data.runs for a in serving_advice(run.results, run.label)]
    if not advice:
        return []
    out = ["### Serving: queries/s under a p99 bound", ""]
    for item in advice:
        out.append(f"- {md_cell(item.line)}" + (f" (others: {md_cell('; '.join(item.others))})" if item.others else ""))
    out.append("")
    rows = []
    for run in data.runs:
        for result in run.results:
            if result.serve is None or result.cell.scenario != "server":
                continue
            for point in load_curve(result.serve):
                mark = " (sustainable)" if point.offered_qps == result.serve.sustainable_qps else ""
                rows.append([result.cell.configuration + (f" [{run.label}]" if len(data.runs) > 1 else ""),
                             result.cell.model,
                             f"{point.offered_qps:.3g}", fmt_num(point.achieved_qps) or "n/a",
                             fmt_num(point.p50_ms) or "n/a", fmt_num(point.p99_ms) or "n/a",
                             ("meets" if point.met_bound else "over") + mark, "knee" if point.knee else ""])
    if rows:
        headers = ["configuration", "model", "offered /s", "done /s", "p50 ms", "p99 ms", "bound", "knee"]
        out += [*_table(headers, rows), ""]
        out += ["Knee: the first offered rate whose p99 is more than twice the lightest load's; latencies from each "
                "query's scheduled arrival (MLPerf LoadGen), queueing included.", ""]
    return out


def render(data: ReportData, html_name: str | None = None) -> str:
    out = [f"## {md_cell(data.title)}", "", f"**{md_cell(data.verdict)}**", ""]
    for comp in data.comparisons:
        out += [f"> {md_cell(comp.repeats_note)}", ""]
        out += _host_notes(comp)
    rows = []
    for run in data.runs:
        counts = pd.Series([r.status for r in run.results]).value_counts()
        env = run.environment
        rows.append(
            [
                run.label,
                *(_env(env.get(k)) for k in ("gpu", "torch", "cuda", "driver", "cpu", "cpu_count")),
                fmt_num(RunEvidence.of(run).canary_ms) or "n/a",
                str(len(run.results)),
                ", ".join(f"{n} {s}" for s, n in counts.items()),
            ]
        )
    header = ["run", "GPU", "torch", "CUDA", "driver", "CPU", "CPUs", "host canary ms", "cells", "status"]
    out += [*_table(header, rows), ""]
    for comp in data.comparisons:
        for label, kind in (("Regressions", REGRESSION), ("Improvements", IMPROVEMENT)):
            sel = comp.table[comp.table["verdict"] == kind]
            if sel.empty:
                continue
            sel = sel.assign(_c=sel["change"].abs()).sort_values("_c", ascending=False, na_position="first")
            out.append(f"### {label}: {md_cell(comp.candidate)} vs {md_cell(comp.baseline)} ({len(sel)})")
            out.append("")
            out += markdown_table(COMPARISON_SUMMARY, sel.head(MAX_ROWS).to_dict("records"))
            if len(sel) > MAX_ROWS:
                out.append(f"\n... and {len(sel) - MAX_ROWS} more (see the HTML report)")
            out.append("")
        out += _inconclusive(comp)
        out += _invalid(comp)
        out += _missing(comp)
        out += _evidence_notes(comp)
    out += _advice(data)
    out += _serving(data)
    bad = data.frame[data.frame["status"] != "ok"]
    if not bad.empty:
        out.append(f"### Cells that did not run ok ({len(bad)})")
        out.append("")
        out += markdown_table(FAILURES, bad.head(MAX_ROWS).to_dict("records"))
        if len(bad) > MAX_ROWS:
            out.append(f"\n... and {len(bad) - MAX_ROWS} more (see the HTML report)")
        out.append("")
    if html_name:
        out.append(f"Full report: `{md_cell(html_name)}` (self-contained HTML; open it from the job's artifacts).")
    return "\n".join(out) + "\n"
