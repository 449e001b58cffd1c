"""A generated history store, and what an ``add`` and the history report cost on it
(``python -m detbench.reports.history.generate``).

Every run is a copy of one committed result file's ok cells (``--template``, 15 cells by default) with each cell's
throughput moved by run-to-run noise (3 %), a slowdown on a few cells two thirds of the way, and one start time per
night. The store is filled in one transaction (each run through the same ``_add_run`` as ``add``, the derived tables
computed once at the end), then ``--adds`` more runs are added one at a time through :meth:`Store.add`, each in its
own open/add/close as ``detbench-history add`` does, and timed. ``--report`` also times ``detbench-report TEMPLATE
--history DB`` in this process. docs/history.md quotes the committed figures (``docs/examples/history-perf-*.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from detbench.reports.history import derive
from detbench.reports.history.store import closing_store
from detbench.reports.load import Run, load_run

TEMPLATE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "h100-quick-v2-part2.json"
NOISE = 0.03
SLOWDOWN = -0.10
START = dt.datetime(2026, 1, 1, 2, 0, tzinfo=dt.timezone.utc)


def template_run(path: Path, cells: int) -> Run:
    run = load_run(path)
    ok = [r for r in run.results if r.status == "ok" and r.throughput_ips]
    if len(ok) < cells:
        raise SystemExit(f"{path}: {len(ok)} ok cells, fewer than --cells {cells}")
    run.results = ok[:cells]
    return run


def generated_run(template: Run, index: int, total: int, rng: np.random.Generator) -> tuple[Run, str]:
    """Run ``index`` of ``total``: every cell's throughput times noise; the first three cells 10 % slower from two
    thirds on. The digest stands for the file's sha256 (each generated run is its own file)."""
    results = []
    for i, result in enumerate(template.results):
        factor = float(np.exp(rng.normal(0.0, NOISE))) * (1.0 + SLOWDOWN if i < 3 and index >= 2 * total // 3 else 1.0)
        results.append(dataclasses.replace(result, throughput_ips=float(result.throughput_ips or 0.0) * factor))
    when = START + dt.timedelta(days=index / 4)
    run = Run(label=f"generated-{index:05d}", path=Path(f"generated-{index:05d}.json"), kind="pytest-benchmark",
              results=results, environment=template.environment, datetime=when.isoformat())
    return run, f"generated-{index:05d}-{rng.integers(1 << 62):x}"


def fill(db: Path, template: Run, runs: int, rng: np.random.Generator) -> float:
    """``runs`` generated runs in one transaction; returns the seconds it took."""
    started = time.perf_counter()
    with closing_store(db, create=True) as store:
        store.conn.execute("BEGIN IMMEDIATE")
        for index in range(runs):
            run, digest = generated_run(template, index, runs, rng)
            store._add_run(run, digest, None)
        derive.refresh_all(store.conn)
        store.conn.execute("COMMIT")
    return time.perf_counter() - started


def time_adds(db: Path, template: Run, first: int, total: int, adds: int, rng: np.random.Generator,
              cpu: list[float] | None = None) -> list[float]:
    """Wall seconds of each add (``cpu``: filled with the process's CPU seconds of each, which a busy machine does not
    inflate)."""
    seconds = []
    for index in range(first, first + adds):
        run, digest = generated_run(template, index, total, rng)
        started, started_cpu = time.perf_counter(), time.process_time()
        with closing_store(db) as store:
            store.add([(run, digest)])
        seconds.append(time.perf_counter() - started)
        if cpu is not None:
            cpu.append(time.process_time() - started_cpu)
    return seconds


def time_quick_check(db: Path) -> tuple[float, float]:
    """The damage check every add runs first (it reads the whole file): wall and CPU seconds."""
    with closing_store(db, readonly=True) as store:
        started, started_cpu = time.perf_counter(), time.process_time()
        store.conn.execute("PRAGMA quick_check(3)").fetchall()
        return time.perf_counter() - started, time.process_time() - started_cpu


def time_report(db: Path | None, template: Path, out: Path) -> tuple[float, float]:
    """``detbench-report TEMPLATE [--history DB]`` in this process (its output silenced): wall and CPU seconds."""
    import contextlib  # noqa: PLC0415
    import io  # noqa: PLC0415

    from detbench.reports.cli import main as report_main  # noqa: PLC0415 - only with --report

    history = ["--history", str(db)] if db else []
    started, started_cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        report_main([str(template), *history, "--out", str(out)])
    return time.perf_counter() - started, time.process_time() - started_cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detbench.reports.history.generate",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--cells", type=int, default=15)
    parser.add_argument("--adds", type=int, default=5, help="runs added one at a time and timed (default 5)")
    parser.add_argument("--report", action="store_true", help="also time detbench-report --history on the store")
    parser.add_argument("--template", type=Path, default=TEMPLATE)
    parser.add_argument("--db", type=Path, default=None, help="the store to write (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="--db is a store this tool generated: time the adds "
                        "(and the report) on it without filling it again")
    parser.add_argument("--seed", type=int, default=20261205)
    parser.add_argument("--json", default="", help="write the figures here as JSON")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    template = template_run(args.template, args.cells)
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "history.db"
        if db.exists() and not args.reuse:
            raise SystemExit(f"{db}: exists; the generator writes a new store (--reuse times adds on it)")
        fill_s = None if args.reuse else fill(db, template, args.runs, rng)
        with closing_store(db, readonly=True) as store:
            runs = int(store.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
        cpu: list[float] = []
        rng = np.random.default_rng([args.seed, runs])  # new measurements, also on a reused store
        adds = time_adds(db, template, runs, runs + args.adds, args.adds, rng, cpu)
        reports = {}
        if args.report:  # without the history first (the same page's other sections), then with it
            time_report(None, args.template, Path(tmp) / "warm")  # imports and caches, not counted
            reports = {"without": time_report(None, args.template, Path(tmp) / "without"),
                       "with": time_report(db, args.template, Path(tmp) / "with")}
        size = db.stat().st_size
        check_s, check_cpu_s = time_quick_check(db)
    figures = {"runs": runs, "cells": args.cells, "fill_s": None if fill_s is None else round(fill_s, 2),
               "add_s": [round(s, 3) for s in adds], "add_median_s": round(statistics.median(adds), 3),
               "add_max_s": round(max(adds), 3), "add_cpu_s": [round(s, 3) for s in cpu],
               "add_cpu_median_s": round(statistics.median(cpu), 3), "quick_check_s": round(check_s, 3),
               "quick_check_cpu_s": round(check_cpu_s, 3),
               "report_s": {k: {"wall": round(w, 2), "cpu": round(c, 2)} for k, (w, c) in reports.items()} or None,
               "load_average_1min": round(os.getloadavg()[0], 1), "cpus": os.cpu_count(),
               "store_bytes": size, "template": args.template.name, "seed": args.seed}
    print(f"{runs} runs x {args.cells} cells ({size / 2**20:.0f} MiB): add median {figures['add_median_s']} s wall, "
          f"{figures['add_cpu_median_s']} s CPU over {args.adds} adds (SQLite's quick_check alone {check_s:.2f} s "
          f"wall, {check_cpu_s:.2f} s CPU); load average {figures['load_average_1min']} on {os.cpu_count()} CPUs"
          + "".join(f"; report {k} --history {w:.2f} s wall, {c:.2f} s CPU" for k, (w, c) in reports.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
