"""A short Markdown summary for a CI job summary ($GITHUB_STEP_SUMMARY): verdict, runs, picks, regressions."""

from __future__ import annotations

import pandas as pd

from reports.columns import COMPARISON_SUMMARY, FAILURES, RECOMMEND, fmt_num, markdown_table, md_cell
from reports.compare import IMPROVEMENT, REGRESSION, Comparison
from reports.html import ReportData

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
        [[r["cell_id"], r["status_base"], fmt_num(r["throughput_base"])] for r in sel.head(MAX_ROWS).to_dict("records")],
    )
    if len(sel) > MAX_ROWS:
        out.append(f"\n... and {len(sel) - MAX_ROWS} more (see the HTML report or comparison.csv)")
    return out + [""]


def render(data: ReportData, html_name: str | None = None) -> str:
    out = [f"## {md_cell(data.title)}", "", f"**{md_cell(data.verdict)}**", ""]
    for comp in data.comparisons:
        if comp.environment_changes:
            out += [
                f"> Environment differs ({md_cell(comp.candidate)} vs {md_cell(comp.baseline)}): "
                f"{md_cell(', '.join(comp.environment_changes))}. A change may come from the machine, not the code.",
                "",
            ]
    rows = []
    for run in data.runs:
        counts = pd.Series([r.status for r in run.results]).value_counts()
        env = run.environment
        rows.append(
            [
                run.label,
                *(_env(env.get(k)) for k in ("gpu", "torch", "cuda", "driver")),
                str(len(run.results)),
                ", ".join(f"{n} {s}" for s, n in counts.items()),
            ]
        )
    out += _table(["run", "GPU", "torch", "CUDA", "driver", "cells", "status"], rows) + [""]
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
        out += _missing(comp)
    rec = data.recommendations
    if not rec.empty:
        out.append("### What should I use?")
        out.append("")
        out += markdown_table(RECOMMEND, rec.head(MAX_ROWS * 2).to_dict("records"))
        out.append("")
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
