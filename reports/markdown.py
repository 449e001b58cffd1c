"""A short Markdown summary for a CI job summary ($GITHUB_STEP_SUMMARY): verdict, runs, picks, regressions."""

from __future__ import annotations

import pandas as pd

from reports.compare import IMPROVEMENT, REGRESSION, Comparison
from reports.html import ReportData, fmt_gib, fmt_num, fmt_ratio, fmt_signed_pct, fmt_pct

MAX_ROWS = 20


def md_cell(value: object) -> str:
    """Table-safe text: no pipes, newlines or HTML that GitHub would render."""
    text = "" if value is None else str(value)
    for raw, safe in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("\n", " "), ("\r", " ")):
        text = text.replace(raw, safe)
    return text


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
            out += _table(
                ["cell", "baseline images/s", "candidate images/s", "change", "noise band", "candidate status"],
                [
                    [
                        r["cell_id"],
                        fmt_num(r["throughput_base"]),
                        fmt_num(r["throughput_cand"]),
                        fmt_signed_pct(r["change"]),
                        fmt_pct(r["noise_band"]),
                        r["status_cand"] + (f" ({r['reason_cand']})" if r["reason_cand"] else ""),
                    ]
                    for r in sel.head(MAX_ROWS).to_dict("records")
                ],
            )
            if len(sel) > MAX_ROWS:
                out.append(f"\n... and {len(sel) - MAX_ROWS} more (see the HTML report)")
            out.append("")
        out += _missing(comp)
    rec = data.recommendations
    if not rec.empty:
        out.append("### What should I use?")
        out.append("")
        out += _table(
            [
                "run",
                "detector",
                "mode",
                "GPUs",
                "use",
                "batch",
                "images/s",
                "gain vs eager fp32",
                "peak memory",
                "compile break-even (iters)",
            ],
            [
                [
                    r["run"],
                    r["model"],
                    r["mode"],
                    str(r["gpus"]),
                    r["variant"],
                    str(r["batch_size"]),
                    fmt_num(r["throughput_ips"]),
                    fmt_ratio(r["gain_over_eager_fp32"]) or r["note"],
                    fmt_gib(r["peak_memory_bytes"]),
                    fmt_num(r["break_even_iterations"]),
                ]
                for r in rec.to_dict("records")
            ][: MAX_ROWS * 2],
        )
        out.append("")
    bad = data.frame[data.frame["status"] != "ok"]
    if not bad.empty:
        out.append(f"### Cells that did not run ok ({len(bad)})")
        out.append("")
        out += _table(
            ["run", "cell", "status", "reason"],
            [[r["run"], r["cell_id"], r["status"], r["reason"]] for r in bad.head(MAX_ROWS).to_dict("records")],
        )
        if len(bad) > MAX_ROWS:
            out.append(f"\n... and {len(bad) - MAX_ROWS} more (see the HTML report)")
        out.append("")
    if html_name:
        out.append(f"Full report: `{md_cell(html_name)}` (self-contained HTML; open it from the job's artifacts).")
    return "\n".join(out) + "\n"
