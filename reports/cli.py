"""``detbench-report``: result files in, a self-contained HTML report, a Markdown summary and CSV out.

Exit codes: 0 report written (no regression, or --fail-on-regression not given); 2 bad input (unreadable,
malformed, foreign or too deeply nested file, the same file twice, one run twice (a JSON and its own journal),
bad option) or an output that cannot be written;
3 --fail-on-regression and a regression beyond the threshold and noise, or a baseline cell without a candidate
result (a weak regression, judged on one repeat a side with no --between-run-band, counts only beyond the widest
lease-to-lease move, detbench.reports.compare.LEASE_MOVE_MAX); 4 --fail-on-regression and two runs that share no cell
(nothing comparable).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

from detbench.bench.core.advice import advise_runs
from detbench.reports import html, markdown
from detbench.reports.columns import advice_rows, csv_text, with_speedup
from detbench.reports.compare import (
    GATE_FAIL,
    GATE_INCOMPARABLE,
    IMPROVEMENT,
    INCONCLUSIVE,
    INVALID,
    LEASE_MOVE_MAX,
    ONLY_BASELINE,
    REGRESSION,
    compare_runs,
    gate,
    verdict_line,
)
from detbench.reports.load import LoadError, check_distinct, load_runs, tidy
from detbench.reports.ratios import RatiosError, ratio_markdown

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_REGRESSION = 3
EXIT_NOTHING_COMPARABLE = 4
COMPARISON_FILES = ("comparison.csv", "comparison.json")  # written only when comparing; stale ones are removed
LISTED_CELLS = 10  # cells named per line on the terminal; summary.md and the HTML list them all


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detbench-report",
        description="Compare detbench result files (pytest-benchmark JSON or run journal JSONL) in one "
        "self-contained HTML report, a Markdown summary and CSV tables.",
        epilog="Exit codes: 0 ok; 2 bad input or an output that cannot be written; with --fail-on-regression: "
        "3 a regression or a baseline cell missing in a candidate (weak single-repeat regressions only beyond a "
        f"{LEASE_MOVE_MAX:.0%} move), 4 nothing comparable (the runs share no cell).",
    )
    parser.add_argument(
        "runs", nargs="*", metavar="RUN", help="result files (.json from --benchmark-json, or .jsonl journals)"
    )
    parser.add_argument(
        "--out", type=Path, help="output directory (created if missing; required unless --ratios-markdown)"
    )
    parser.add_argument(
        "--ratios-markdown",
        action="store_true",
        help="the RUN files are detbench.bench.tools.interleaved results: print their paired-ratio tables as Markdown "
        "(the tables of docs/results-h100.md) and exit",
    )
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
        "--between-run-band",
        type=float,
        metavar="F",
        help="the between-run (lease-to-lease) noise to assume, as a fold (0.3: one run up to 1.3x the other), e.g. "
        "from same-software reruns on other leases: every flag must exceed it, and single-repeat verdicts then gate "
        # %% once formatted: argparse %-formats help strings
        f"(default: unstated; such verdicts are weak and gate only beyond a {LEASE_MOVE_MAX:.0%}% move)",
    )
    parser.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit 3 when a regression beyond the threshold and the measured noise is found (weak single-repeat "
        "evidence alone does not fail it), or a baseline cell "
        "has no candidate result; exit 4 when two runs share no cell",
    )
    parser.add_argument(
        "--history",
        type=Path,
        metavar="DB",
        help="a detbench-history store: add its trend plots per cell, largest moves, steps, and the runs judged "
        "against each cell's between-run band (docs/history.md)",
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
    """(label, path) pairs in order, and the index of the baseline among them (None: no comparison).

    A file is known by its real path: the same file under two names, or with two labels, is a usage error
    (comparing a run with itself reads as a clean pass).
    """
    labels: dict[str, str] = {}  # real path -> label
    label_paths: list[str] = []
    for item in args.label:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--label expects NAME=FILE, got {item!r}")
        key = os.path.realpath(path)
        if labels.get(key, name) != name:
            parser.error(f"two labels for {path}: {labels[key]!r} and {name!r}; give one --label per file")
        if key not in labels:
            label_paths.append(path)
        labels[key] = name
    paths: list[str] = []
    seen: dict[str, str] = {}  # real path -> the name it was first given as
    for path in args.runs:
        key = os.path.realpath(path)
        if key in seen:
            parser.error(f"{path} given twice (also as {seen[key]}); a run compared with itself always passes")
        seen[key] = path
        paths.append(path)
    # --baseline and --label naming a RUN select that run; a file named only there is added
    for path in ([args.baseline] if args.baseline else []) + label_paths:
        if os.path.realpath(path) not in seen:
            seen[os.path.realpath(path)] = path
            paths.append(path)
    baseline = None
    if args.baseline and len(paths) < 2:
        parser.error(f"--baseline {args.baseline} has no run to compare with (it is the only result file); give the "
                     "candidate RUN files too")
    if args.baseline:
        key = os.path.realpath(args.baseline)
        baseline = next(i for i, p in enumerate(paths) if os.path.realpath(p) == key)
        if baseline == len(args.runs):  # given only as --baseline: it leads, as before
            paths.insert(0, paths.pop(baseline))
            baseline = 0
    elif len(paths) > 1:
        baseline = 0
    if not paths:
        parser.error("give at least one result file (RUN or --label NAME=FILE)")
    return [(labels.get(os.path.realpath(p)), p) for p in paths], baseline


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.ratios_markdown:
        return _ratios_markdown(args.runs, parser)
    if args.out is None:
        parser.error("--out is required")
    if not 0 <= args.threshold < 1:
        parser.error(f"--threshold must be a fraction in [0, 1) (0.05 = 5%), got {args.threshold}")
    band = args.between_run_band
    if band is not None and not (math.isfinite(band) and band >= 0):
        parser.error(f"--between-run-band must be a fraction >= 0 (0.3 = 30%), got {band}")
    sources, baseline_index = _sources(args, parser)
    try:
        runs = load_runs(sources)
        check_distinct(runs)
    except LoadError as exc:
        print(f"detbench-report: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    frame = with_speedup(tidy(runs))
    comparisons = []
    if baseline_index is not None:
        base = runs[baseline_index]
        comparisons = [
            compare_runs(frame, base.label, r.label, args.threshold, runs=(base, r), between_run_band=band)
            for r in runs
            if r.label != base.label
        ]
    verdict = verdict_line(comparisons, args.threshold)
    history = None
    if args.history is not None:
        from detbench.reports.history.store import StoreError  # noqa: PLC0415  (only with --history)
        from detbench.reports.history.view import history_view  # noqa: PLC0415

        try:
            history = history_view(args.history, runs, args.threshold)
        except StoreError as exc:
            print(f"detbench-report: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    data = html.ReportData(
        title=args.title,
        runs=runs,
        frame=frame,
        advice=advise_runs(runs),
        comparisons=comparisons,
        verdict=verdict,
        threshold=args.threshold,
        history=history,
    )
    files = render_outputs(data)
    try:
        written, removed = write_outputs(files, args.out)
    except OutputError as exc:
        print(f"detbench-report: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for path in written:
        print(f"wrote {path}")
    for path in removed:
        print(f"removed {path} (left by an earlier report; this one compares nothing)")
    _append_step_summary(files["summary.md"])
    for comp in comparisons:
        print(comp.repeats_note)
    for line in gate_lines(comparisons):
        print(line)
    print(verdict)
    state = gate(comparisons)
    if args.fail_on_regression and state == GATE_INCOMPARABLE:
        return EXIT_NOTHING_COMPARABLE
    if args.fail_on_regression and state == GATE_FAIL:
        return EXIT_REGRESSION
    return EXIT_OK


def _ratios_markdown(paths: list[str], parser: argparse.ArgumentParser) -> int:
    if not paths:
        parser.error("--ratios-markdown needs detbench.bench.tools.interleaved result files "
                     "(docs/examples/h100-ratios-*.json)")
    try:
        print(ratio_markdown(paths), end="")
    except RatiosError as exc:
        print(f"detbench-report: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def gate_lines(comparisons: list) -> list[str]:
    """One terminal line per kind of row against the gate: its count and the first cells' ids; then the weak
    regressions that do not gate."""
    lines = []
    for comp in comparisons:
        if not comp.shared:
            continue  # every cell would be listed; the verdict says the runs share none
        against = comp.against_gate
        for kind, rows in ((REGRESSION, against), (ONLY_BASELINE, against), (INVALID, comp.invalid)):
            ids = list(rows.loc[rows["verdict"] == kind, "cell_id"])
            if ids:
                more = f", ... (+{len(ids) - LISTED_CELLS}, see summary.md)" if len(ids) > LISTED_CELLS else ""
                what = f"{kind} (implausible figures, not judged)" if kind == INVALID else kind
                lines.append(
                    f"{what} ({comp.candidate} vs {comp.baseline}): {len(ids)} cell{'s' if len(ids) != 1 else ''}: "
                    + ", ".join(ids[:LISTED_CELLS])
                    + more
                )
        weak = list(comp.weak_regressions["cell_id"])
        if weak:
            more = f", ... (+{len(weak) - LISTED_CELLS}, see summary.md)" if len(weak) > LISTED_CELLS else ""
            lines.append(f"weak regression, not gating ({comp.candidate} vs {comp.baseline}): {len(weak)} "
                         f"cell{'s' if len(weak) != 1 else ''}: " + ", ".join(weak[:LISTED_CELLS]) + more)
    return lines


class OutputError(Exception):
    """An output file that could not be written, named in the message."""

    def __init__(self, path: Path, exc: OSError | str) -> None:
        reason = exc if isinstance(exc, str) else (exc.strerror or str(exc))
        super().__init__(f"cannot write {path} ({reason})")


def render_outputs(data: html.ReportData) -> dict[str, str]:
    """File name -> content: report.html, summary.md, cells.csv, recommendations.csv (the advice, one row per
    run, detector, mode and GPU count), comparison.csv (when comparing); text cells of the CSVs made safe for
    spreadsheets (:func:`detbench.reports.columns.csv_safe`)."""
    files = {
        "report.html": html.render(data),
        "summary.md": markdown.render(data, html_name="report.html"),
        "cells.csv": csv_text(data.frame),
        "recommendations.csv": csv_text(pd.DataFrame(advice_rows(data.advice))),
    }
    if data.comparisons:
        table = pd.concat([c.table.assign(baseline=c.baseline, candidate=c.candidate) for c in data.comparisons])
        files["comparison.csv"] = csv_text(table)
        files["comparison.json"] = json.dumps(comparison_summary(data.comparisons, data.verdict), indent=2) + "\n"
    return files


def comparison_summary(comparisons: list, verdict: str) -> dict:
    """The gate's outcome as data (``comparison.json``): state, verdict line, and per pair the repeats used,
    the verdict counts and the cell ids flagged (``regressions`` lists weak ones too; those of them that do not
    fail the gate are also in ``weak_regressions_not_gating``), left inconclusive, or invalid (an implausible
    figure: never judged)."""
    pairs = []
    for comp in comparisons:
        ids = {kind: list(comp.table.loc[comp.table["verdict"] == kind, "cell_id"])
               for kind in (REGRESSION, IMPROVEMENT, INCONCLUSIVE, ONLY_BASELINE, INVALID)}
        weak = list(comp.weak_regressions["cell_id"])
        pairs.append({"baseline": comp.baseline, "candidate": comp.candidate, "threshold": comp.threshold,
                      "repeats": {"baseline": comp.repeats[0], "candidate": comp.repeats[1]},
                      "repeats_note": comp.repeats_note, "host_notes": comp.host_notes,
                      "counts": {str(k): int(v) for k, v in comp.table["verdict"].value_counts().items()},
                      "between_run_band": comp.between_run_band,
                      "regressions": ids[REGRESSION], "weak_regressions_not_gating": weak,
                      "improvements": ids[IMPROVEMENT],
                      "inconclusive": ids[INCONCLUSIVE], "missing_in_candidate": ids[ONLY_BASELINE],
                      "invalid": ids[INVALID]})
    return {"schema": "detbench.comparison", "gate": gate(comparisons), "verdict": verdict, "comparisons": pairs}


def write_outputs(files: dict[str, str], out: Path) -> tuple[list[Path], list[Path]]:
    """Write every output (see :func:`render_outputs`) into a temporary folder inside ``out``, then move each into
    place, so a failure leaves the earlier report whole rather than a mix of old and new files.
    Returns (written, removed): a comparison.csv from an earlier report is removed when this one compares nothing."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(out, exc) from None
    for name in files:
        if (out / name).is_dir():
            raise OutputError(out / name, "a directory is in the way")
    try:
        staging = Path(tempfile.mkdtemp(prefix=".detbench-report-", dir=out))
    except OSError as exc:
        raise OutputError(out, exc) from None
    written = []
    try:
        for name, text in files.items():
            try:
                (staging / name).write_text(text, encoding="utf-8")
            except OSError as exc:
                raise OutputError(out / name, exc) from None
        for name in files:
            try:
                os.replace(staging / name, out / name)  # replaces a read-only file too: the folder is what counts
            except OSError as exc:
                raise OutputError(out / name, exc) from None
            written.append(out / name)
    finally:
        for leftover in staging.iterdir():
            leftover.unlink()
        staging.rmdir()
    removed = []
    for name in COMPARISON_FILES:
        stale = out / name
        if name not in files and stale.is_file():
            try:
                stale.unlink()
            except OSError as exc:
                raise OutputError(stale, exc) from None
            removed.append(stale)
    return written, removed


def _append_step_summary(summary: str) -> None:
    """Append summary.md to $GITHUB_STEP_SUMMARY; a failure there is a warning naming that file, the report
    itself is already written."""
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if not step_summary:
        return
    try:
        with open(step_summary, "a", encoding="utf-8") as handle:
            handle.write(summary)
    except OSError as exc:
        print(
            f"detbench-report: warning: cannot append to GITHUB_STEP_SUMMARY={step_summary} "
            f"({exc.strerror or exc}); the job summary is missing this report",
            file=sys.stderr,
        )
