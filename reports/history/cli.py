"""``detbench-history``: keep every run in one SQLite file, judge a new run against each cell's between-run band.

Exit codes: 0 ok; 2 bad input (a result file that does not load, a store that is not one, truncated, or written by
a newer detbench, a bad option); 3 ``compare --fail-on-regression`` and a cell regressed beyond its band and the
threshold (or failed where the last same-environment run was ok). Every error is one line naming the file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

from detbench.reports.history import analysis
from detbench.reports.history.store import DATABASE_ERRORS, StoreError, closing_store, damaged, file_sha256, started_at
from detbench.reports.history.trends import judge_run, open_alerts, steps_table
from detbench.reports.load import LoadError, load_run

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_REGRESSION = 3
LISTED = 20  # cells printed per verdict
WIDTH = 100  # terminal output reads at 100 columns and in a log: an id on a line of its own, details below it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detbench-history",
        description="Result history in one SQLite file: every run kept, trends per cell, each cell's own noise band "
        "(docs/history.md). `detbench-report RUN --history DB` draws the trends.",
        epilog="Exit codes: 0 ok; 2 bad input or an unusable store; 3 compare --fail-on-regression and a regression.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add = sub.add_parser("add", help="add result files (pytest-benchmark JSON or journal JSONL); created if missing")
    add.add_argument("db", type=Path, metavar="DB")
    add.add_argument("files", nargs="+", type=Path, metavar="RUN")
    add.add_argument("--started", default="", metavar="UTC",
                     help="start time for a run whose files carry none (a journal from before its header), e.g. "
                     "2026-11-24T12:40Z")
    compare = sub.add_parser("compare", help="judge a run's cells against the bands of same-environment runs")
    compare.add_argument("db", type=Path, metavar="DB")
    compare.add_argument("run", type=Path, metavar="RUN")
    compare.add_argument("--threshold", type=float, default=0.05,
                         help="smallest relative throughput change to flag (default 0.05 = 5%%)")
    compare.add_argument("--fail-on-regression", action="store_true",
                         help="exit 3 when a cell regressed beyond its band and the threshold (weak verdicts, "
                         f"with fewer than {analysis.MIN_BAND_RUNS} runs behind the band, never do)")
    steps = sub.add_parser("steps", help="list the steps found in each cell's series (first run of the new level)")
    steps.add_argument("db", type=Path, metavar="DB")
    steps.add_argument("--cell", default="", help="only cells whose id contains this text")
    alerts = sub.add_parser("alerts", help="open steps and drifts: what set each cell's current level")
    alerts.add_argument("db", type=Path, metavar="DB")
    alerts.add_argument("--cell", default="", help="only cells whose id contains this text")
    info = sub.add_parser("info", help="runs per machine and row counts")
    info.add_argument("db", type=Path, metavar="DB")
    migrate = sub.add_parser("migrate", help="bring a store written by an older detbench to this version")
    migrate.add_argument("db", type=Path, metavar="DB")
    return parser


def _error(message: str) -> int:
    print(f"detbench-history: error: {' '.join(str(message).split())}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `detbench-history info DB | head -1`: the reader left; say nothing more
        with contextlib.suppress(OSError, ValueError, AttributeError):  # Python's own flush at exit would raise
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "add":
            started = started_at(args.started) if args.started else None
            if args.started and started is None:
                parser.error(f"--started must be an ISO time such as 2026-11-24T12:40Z, got {args.started!r}")
            return _add(args.db, args.files, started)
        if args.command == "compare":
            if not 0 <= args.threshold < 1:
                parser.error(f"--threshold must be a fraction in [0, 1) (0.05 = 5%), got {args.threshold}")
            return _compare(args.db, args.run, args.threshold, args.fail_on_regression)
        if args.command == "steps":
            return _steps(args.db, args.cell)
        if args.command == "alerts":
            return _alerts(args.db, args.cell)
        if args.command == "migrate":
            with closing_store(args.db):
                print(f"{args.db}: history schema is current")
            return EXIT_OK
        return _info(args.db)
    except (StoreError, LoadError) as exc:
        return _error(str(exc))
    except DATABASE_ERRORS as exc:  # damage SQLite found only while reading or writing (nothing was committed)
        return _error(str(damaged(args.db, exc)))


def block(head: str, parts: Iterable[str], width: int = WIDTH) -> str:
    """``head`` on its own line (an id is never wrapped), then ``parts`` joined by ``; `` and wrapped at ``width``
    with an indent (a break falls between words, never inside an id or a figure)."""
    body = "; ".join(p for p in parts if p)
    lines = textwrap.wrap(body, width, initial_indent="  ", subsequent_indent="    ", break_long_words=False,
                          break_on_hyphens=False)
    return "\n".join([head, *lines])


def say(text: str, width: int = WIDTH) -> None:
    """One message, wrapped at ``width`` between words (an id or a path is never cut), later lines indented."""
    print(textwrap.fill(text, width, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False))


def _add(db: Path, files: list[Path], started: str | None = None) -> int:
    # every file is loaded before the store is touched: one bad file adds nothing
    loaded = []
    for path in files:
        run = load_run(path)
        try:
            digest = file_sha256(path)
        except OSError as exc:
            raise LoadError(f"{path}: cannot read ({exc.strerror or exc})") from None
        loaded.append((run, digest))
    with closing_store(db, create=True) as store:
        outcomes = store.add(loaded, started)
        counts = store.counts()
    for outcome in outcomes:
        say(outcome.describe())
    say(f"{db}: {counts['runs']} runs, {counts['cells']} cells")
    return EXIT_OK


def _compare(db: Path, path: Path, threshold: float, fail: bool) -> int:
    run = load_run(path)
    with closing_store(db, readonly=True) as store:
        judged = judge_run(store, run, threshold)
    if judged.in_store:
        print(f"{path.name} is in the store: judged against the same-environment runs before it")
    for verdict in (analysis.REGRESSION, analysis.IMPROVEMENT, analysis.WEAK, analysis.NO_HISTORY):
        rows = judged.table[judged.table["verdict"] == verdict]
        for row in rows.head(LISTED).itertuples():
            print(f"{verdict}: {row.cell_id}: {row.reason}")
        if len(rows) > LISTED:
            print(f"{verdict}: ... and {len(rows) - LISTED} more")
    print(judged.summary())
    return EXIT_REGRESSION if fail and len(judged.regressions) else EXIT_OK


def _steps(db: Path, cell: str) -> int:
    with closing_store(db, readonly=True) as store:
        table = steps_table(store)
    table = table[table["cell_id"].str.contains(cell, regex=False)] if cell else table
    for row in table.itertuples():
        size = f"{row.change:+.1%}" + (f" ({row.interval})" if row.interval else "")
        how: tuple[str, ...]
        if row.cause == "level":
            how = (f"{row.before_ips:.4g} -> {row.after_ips:.4g} img/s", f"{row.runs_before} runs before, "
                   f"{row.runs_after} after", f"p={row.p_value:.2g}")
        else:
            how = (f"a new series: {row.before_ips:.4g} -> {row.after_ips:.4g} img/s, not judged as a move",)
        print(block(f"{row.cell_id} on {row.machine}",
                    [f"{row.cause}: {size} at {row.first_run}", *how, row.software]))
    say(f"{len(table)} step{'s' if len(table) != 1 else ''} (level: a change of level in one method's series, "
        "with its 95% interval; method changed: a new series)")
    return EXIT_OK


def _alerts(db: Path, cell: str) -> int:
    with closing_store(db, readonly=True) as store:
        table = open_alerts(store)
    table = table[table["cell_id"].str.contains(cell, regex=False)] if cell else table
    for row in table.itertuples():
        size = f"{row.change:+.1%}" if row.kind == "step" else f"{row.change:+.2%}/run"
        print(block(f"{row.cell_id} on {row.machine}",
                    [f"{row.kind} {size} ({row.interval}) from {row.first_run}", row.detail, row.software]))
    say(f"{len(table)} open alert{'s' if len(table) != 1 else ''} (the step that set each cell's current level, "
        "and drifts of the current level)")
    return EXIT_OK


def _info(db: Path) -> int:
    with closing_store(db, readonly=True) as store:
        counts = store.counts()
        machines = store.frame("SELECT machine, COUNT(*) AS runs, MIN(run_at) AS first, MAX(run_at) AS last "
                               "FROM runs GROUP BY machine ORDER BY runs DESC")
        version = store.conn.execute("SELECT version, written_by FROM detbench_schema").fetchone()
    say(f"{db}: history schema {version[0]} (written by detbench {version[1]}); "
        + ", ".join(f"{n} {t}" for t, n in counts.items() if t != "detbench_schema"))
    for row in machines.itertuples():
        print(f"{row.machine}: {row.runs} runs, {str(row.first)[:10]} .. {str(row.last)[:10]}")
        sys.stdout.flush()  # a closed pipe is seen here, inside main
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
