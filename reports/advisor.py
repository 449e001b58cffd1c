"""``python -m detbench.reports.advisor RESULT...``: the advice table (detbench.bench.core.advice) over result files, on
the terminal.

The advice itself (what to use per detector, mode and GPU count, and the ranking rule) is
:mod:`detbench.bench.core.advice`; ``detbench-report`` shows the same rows in its HTML and summary.md, the run's closing
summary in the terminal. This module is only the command line: ``--json`` writes the advice, ``--goal`` says how
close a model came to a throughput goal, ``--p99-budget-ms X`` names per detector the fastest configuration at batch 1
whose p99 latency is at most X ms (detbench.bench.core.advice.within_latency), ``--trace-args MODEL`` prints the best
1-GPU inference configuration of MODEL as ``python -m detbench.bench.tools.trace`` arguments (scripts/tune_search.sh
profiles it).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict

from detbench.bench.core.advice import Advice, Candidate, LatencyAdvice, advise_runs, within_latency
from detbench.bench.core.schema import CellResult
from detbench.reports.columns import ADVICE_SHORT_KEYS, advice_columns, advice_rows, rich_table
from detbench.reports.load import LoadError, load_runs


def main(argv: list[str] | None = None) -> int:
    """Print the advice table; exit 2 on an unreadable file or a --trace-args model without an ok cell."""
    parser = argparse.ArgumentParser(prog="python -m detbench.reports.advisor",
                                     description="The advice table (what should I use?) over result files.")
    parser.add_argument("runs", nargs="+", metavar="RESULT")
    parser.add_argument("--json", default=None, help="write the advice (one object per detector, mode, GPU count)")
    parser.add_argument("--short", action="store_true", help="only model, configuration, images/s, gain, MFU, GPU util")
    parser.add_argument("--goal", action="append", default=[], metavar="MODEL=IMG_PER_S",
                        help="say how close MODEL's best 1-GPU inference came to a throughput goal (repeatable)")
    parser.add_argument("--p99-budget-ms", type=float, default=None, metavar="MS",
                        help="per detector, the fastest configuration at batch 1 (single stream) whose p99 latency is "
                             "at most MS milliseconds, instead of the throughput advice")
    parser.add_argument("--trace-args", default=None, metavar="MODEL",
                        help="print detbench.bench.tools.trace arguments for the best 1-GPU inference configuration "
                             "of MODEL and exit")
    args = parser.parse_args(argv)
    goals = {}
    for item in args.goal:
        name, _, value = item.partition("=")
        try:
            goals[name] = float(value)
        except ValueError:
            parser.error(f"bad --goal {item!r}; use MODEL=IMAGES_PER_S, e.g. retinanet_resnet50_fpn=310")
    try:
        runs = load_runs([(None, p) for p in args.runs])
    except LoadError as exc:
        print(f"detbench.reports.advisor: error: {exc}", file=sys.stderr)
        return 2
    if args.p99_budget_ms is not None:
        if not args.p99_budget_ms > 0:
            parser.error(f"bad --p99-budget-ms {args.p99_budget_ms!r}; give a positive number of milliseconds, e.g. 50")
        for line in latency_lines([a for run in runs for a in within_latency(run.results, args.p99_budget_ms,
                                                                               run.label)]):
            print(line)
        return 0
    advice = advise_runs(runs)
    if args.trace_args:
        best = best_inference(advice, args.trace_args)
        if best is None:
            print(f"detbench.reports.advisor: error: no ok 1-GPU inference cell of {args.trace_args} in these files",
                  file=sys.stderr)
            return 2
        by_id = {r.cell.id: r for run in runs for r in run.results}
        print(" ".join(trace_arguments(by_id[best.cell_id], best.batch_size)))
        return 0
    rows = advice_rows(advice)
    columns = advice_columns(with_run=len(runs) > 1, keys=ADVICE_SHORT_KEYS if args.short else None)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump([{**asdict(a), "display": {c.key: c.text(row) for c in columns}}
                       for a, row in zip(advice, rows)], handle, indent=1)
    print(terminal_text(rich_table(columns, rows, title="detbench: what should I use?")))
    for line in goal_lines(advice, goals):
        print(line)
    return 0


def latency_lines(advice: Sequence[LatencyAdvice]) -> list[str]:
    """``MODEL (run): use onnxruntime/fp32, p50 81.6 ms, p99 95.0 ms <= 100 ms`` per detector, or why none fits, with
    the configurations over the budget."""
    lines = []
    for item in advice:
        where = item.model + (f" ({item.run})" if item.run else "") + (f", {item.gpus} GPUs" if item.gpus > 1 else "")
        pick = item.pick
        if pick is None:
            lines.append(f"{where}: nothing at batch 1 has p99 <= {item.p99_budget_ms:g} ms")
        else:
            lines.append(f"{where}: use {pick.configuration}, p50 {pick.median_ms:.1f} ms, p99 {pick.p99_ms:.1f} ms "
                         f"<= {item.p99_budget_ms:g} ms")
        if item.over:
            over = ", ".join(f"{c.configuration} p99 {c.p99_ms:.1f} ms" for c in item.over)
            lines.append(f"  over the budget: {over}")
    return lines


def terminal_text(renderable: object, width: int = 220) -> str:
    """A rich renderable as plain text (no colour: the output is read by scripts and logs)."""
    from rich.console import Console  # noqa: PLC0415 (rich: only this command line needs it)

    buffer = io.StringIO()
    Console(file=buffer, force_terminal=False, color_system=None, width=width, highlight=False).print(renderable)
    return buffer.getvalue().rstrip("\n")


def best_inference(advice: Sequence[Advice], model: str) -> Candidate | None:
    """The best 1-GPU inference pick of ``model`` over every run's advice (the fastest if runs disagree)."""
    picks = [a.best for a in advice if a.model == model and a.mode == "infer" and a.gpus == 1 and a.best]
    return max(picks, key=lambda c: c.throughput_ips) if picks else None


def goal_lines(advice: Sequence[Advice], goals: dict[str, float]) -> list[str]:
    """``MODEL: best X img/s (config, batch) = N% of the goal G img/s`` per goal, or why there is no figure."""
    lines = []
    for model, goal in goals.items():
        best = best_inference(advice, model)
        if best is None:
            lines.append(f"{model}: no ok 1-GPU inference cell, goal {goal:g} img/s not assessed")
            continue
        lines.append(f"{model}: best {best.throughput_ips:.1f} img/s ({best.configuration}, batch {best.batch_size}) "
                     f"= {best.throughput_ips / goal:.0%} of the goal {goal:g} img/s")
    return lines


def trace_arguments(result: CellResult, batch_size: int | None = None) -> list[str]:
    """``python -m detbench.bench.tools.trace`` arguments that set up the same configuration as ``result``'s cell (at
    the batch its blocks ran at: for a ``bsmax`` cell the largest that fit)."""
    cell = result.cell
    batch = batch_size or result.measured_batch_size or 0
    args = ["--model", cell.model, "--mode", cell.mode, "--compile", cell.compile, "--precision", cell.precision,
            "--batch-size", str(batch), "--memory-format", cell.memory_format]
    if cell.image_size:
        args += ["--image-size", f"{cell.image_size[0]}x{cell.image_size[1]}"]
    return args


if __name__ == "__main__":
    raise SystemExit(main())
