"""``detbench-report``: result files in, a self-contained HTML report, a Markdown summary and CSV out.

Exit codes: 0 report written (no regression, or --fail-on-regression not given); 2 bad input (unreadable,
malformed or foreign file, bad option); 3 --fail-on-regression and a regression beyond the threshold and noise.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from reports import html, markdown
from reports.compare import compare_runs, has_regression, verdict_line
from reports.load import LoadError, load_runs, tidy
from reports.recommend import recommend, with_speedup

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_REGRESSION = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detbench-report",
        description="Compare detbench result files (pytest-benchmark JSON or run journal JSONL) in one "
        "self-contained HTML report, a Markdown summary and CSV tables.",
        epilog="Exit codes: 0 ok; 2 bad input; 3 regression found with --fail-on-regression.",
    )
    parser.add_argument(
        "runs", nargs="*", metavar="RUN", help="result files (.json from --benchmark-json, or .jsonl journals)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory (created if missing)")
    parser.add_argument(
        "--baseline", metavar="FILE", help="compare every RUN against this file (default: the first RUN)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.05,
        help="smallest relative throughput change to flag, as a fraction (default 0.05 = 5%%)",
    )
    parser.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit 3 when a regression beyond the threshold and the measured noise is found",
    )
    parser.add_argument("--title", default="detbench report", help="report title")
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="name a run (default: the file name without extension); may repeat",
    )
    return parser


def _sources(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> tuple[list[tuple[str | None, str]], int | None]:
    """(label, path) pairs in order, and the index of the baseline among them (None: no comparison)."""
    labels: dict[str, str] = {}
    for item in args.label:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--label expects NAME=FILE, got {item!r}")
        labels[os.path.normpath(path)] = name
    paths = list(args.runs)
    for path in labels:
        if path not in {os.path.normpath(p) for p in paths}:
            paths.append(path)
    baseline = None
    if args.baseline:
        norm = [os.path.normpath(p) for p in paths]
        if os.path.normpath(args.baseline) in norm:
            baseline = norm.index(os.path.normpath(args.baseline))
        else:
            paths.insert(0, args.baseline)
            baseline = 0
    elif len(paths) > 1:
        baseline = 0
    if not paths:
        parser.error("give at least one result file (RUN or --label NAME=FILE)")
    return [(labels.get(os.path.normpath(p)), p) for p in paths], baseline


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.threshold < 1:
        parser.error(f"--threshold must be a fraction in [0, 1) (0.05 = 5%), got {args.threshold}")
    sources, baseline_index = _sources(args, parser)
    try:
        runs = load_runs(sources)
    except LoadError as exc:
        print(f"detbench-report: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    frame = with_speedup(tidy(runs))
    comparisons = []
    if baseline_index is not None:
        base = runs[baseline_index].label
        comparisons = [compare_runs(frame, base, r.label, args.threshold) for r in runs if r.label != base]
    verdict = verdict_line(comparisons, args.threshold)
    data = html.ReportData(
        title=args.title,
        runs=runs,
        frame=frame,
        recommendations=recommend(frame),
        comparisons=comparisons,
        verdict=verdict,
        threshold=args.threshold,
    )
    try:
        written = write_outputs(data, args.out)
    except OSError as exc:
        print(f"detbench-report: error: cannot write to {args.out} ({exc.strerror or exc})", file=sys.stderr)
        return EXIT_BAD_INPUT
    for path in written:
        print(f"wrote {path}")
    print(verdict)
    if args.fail_on_regression and has_regression(comparisons):
        return EXIT_REGRESSION
    return EXIT_OK


def write_outputs(data: html.ReportData, out: Path) -> list[Path]:
    """report.html, summary.md, cells.csv, recommendations.csv and comparison.csv (when comparing)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    page = out / "report.html"
    page.write_text(html.render(data), encoding="utf-8")
    written.append(page)
    summary = markdown.render(data, html_name=page.name)
    (out / "summary.md").write_text(summary, encoding="utf-8")
    written.append(out / "summary.md")
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as handle:
            handle.write(summary)
    data.frame.to_csv(out / "cells.csv", index=False)
    written.append(out / "cells.csv")
    data.recommendations.to_csv(out / "recommendations.csv", index=False)
    written.append(out / "recommendations.csv")
    if data.comparisons:
        table = pd.concat([c.table.assign(baseline=c.baseline, candidate=c.candidate) for c in data.comparisons])
        table.to_csv(out / "comparison.csv", index=False)
        written.append(out / "comparison.csv")
    return written
