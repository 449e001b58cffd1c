"""The advisor: per detector, mode and GPU count, the fastest configuration measured, what it gains over eager
FP32 at the same batch (with the paired-ratio spread when both ran in one worker), what it costs (memory,
compile time, break-even), its MFU, the configurations that failed and why, and the axis values not tried.

Works on typed :class:`~bench.schema.CellResult` objects, so the run's closing summary (bench/conftest.py)
and ``detbench-report`` give the same advice. Renderers (terminal, Markdown, HTML) sit at the bottom.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.schema import BATCH_MAX, COMPILE_MODES, MEMORY_FORMATS, PRECISIONS, Cell, CellResult

REASON_CHARS = 240
INTERLEAVED = "interleaved"  # both cells timed in rounds by one worker: a paired ratio with its spread
NOT_INTERLEAVED = "not interleaved"  # timed by different workers: a plain throughput ratio, host drift included
BASELINE = "is the baseline"


@dataclass(frozen=True)
class Axis:
    """A configuration axis the advisor checks for values the run did not try."""

    name: str
    values: tuple[str, ...]
    of: Callable[[Cell], str]


AXES: tuple[Axis, ...] = (
    Axis("compile", COMPILE_MODES, lambda c: c.compile),
    Axis("precision", PRECISIONS, lambda c: c.precision),
    Axis("memory format", MEMORY_FORMATS, lambda c: c.memory_format),
    Axis("batch", (BATCH_MAX,), lambda c: BATCH_MAX if c.searches_batch else "given"),
)


@dataclass
class Gain:
    """Throughput over eager FP32 at the same batch, image size and GPU count; ``basis`` says how it was got."""

    value: float | None
    q1: float | None = None
    q3: float | None = None
    basis: str = ""  # INTERLEAVED | NOT_INTERLEAVED | BASELINE | why there is none


@dataclass
class Candidate:
    """One configuration that ran ok, with what the advice quotes."""

    cell_id: str
    configuration: str  # Cell.configuration, e.g. "compiled/amp-bf16/channels_last"
    batch_size: int
    throughput_ips: float
    gain: Gain
    peak_memory_bytes: int | None = None
    compile_s: float | None = None
    break_even_iterations: float | None = None
    break_even_basis: str | None = None
    graph_breaks: int | None = None
    mfu: float | None = None
    gpu_util_pct: float | None = None


@dataclass
class FailedConfiguration:
    """A configuration that did not run ok, and the recorded reason."""

    cell_id: str
    configuration: str
    batch_size: int
    status: str
    reason: str


@dataclass
class Advice:
    """The advice for one (run, detector, mode, GPU count)."""

    run: str
    model: str
    mode: str
    gpus: int
    ranked: list[Candidate] = field(default_factory=list)  # ok configurations, fastest first
    failures: list[FailedConfiguration] = field(default_factory=list)
    not_tried: list[str] = field(default_factory=list)  # "compile: max-autotune", ...
    notes: list[str] = field(default_factory=list)  # CUDA-graph fallbacks, recompilations, batch-search boundaries
    tie: bool = False  # the runner-up's paired range overlaps the pick's: a tie within the noise

    @property
    def best(self) -> Candidate | None:
        return self.ranked[0] if self.ranked else None

    @property
    def runner_up(self) -> Candidate | None:
        return self.ranked[1] if len(self.ranked) > 1 else None


def configuration(cell: Cell) -> str:
    """The configuration a cell ran, without the batch (:attr:`bench.schema.Cell.configuration`)."""
    return cell.configuration


def measured_batch(result: CellResult) -> int:
    """The batch size the cell's timed blocks ran at (for a ``bsmax`` cell the largest that fit; 0: none)."""
    return result.measured_batch_size or 0


def same_worker(a: CellResult, b: CellResult) -> bool:
    """Whether two cells were timed by one worker in interleaved rounds (only then is their ratio paired)."""
    ma, mb = a.measurement, b.measurement
    if ma is None or mb is None or not ma.blocks or not mb.blocks:
        return False
    return (ma.isolation != "cell" and ma.isolation == mb.isolation and ma.group == mb.group
            and ma.worker_attempt == mb.worker_attempt)


def _baseline_cell(cell: Cell, batch: int) -> Cell:
    return Cell(cell.model, cell.mode, "eager", "fp32", batch, cell.gpus, cell.image_size)


def gain_over_eager_fp32(result: CellResult, by_id: dict[str, CellResult]) -> Gain:
    """The gain of ``result`` over eager FP32 at the same batch: the paired ratio (median, IQR) when both ran in
    one worker, else a plain throughput ratio marked ``not interleaved``, else why there is none."""
    batch = measured_batch(result)
    base_id = _baseline_cell(result.cell, batch).id
    if result.cell.id == base_id:
        return Gain(1.0, 1.0, 1.0, BASELINE)
    base = by_id.get(base_id)
    if base is None or base.status != "ok" or not base.throughput_ips:
        why = "not measured" if base is None else base.status
        return Gain(None, basis=f"eager fp32 at batch {batch}: {why}")
    ratio = result.ratio
    if ratio is not None and ratio.baseline_cell_id == base_id and same_worker(result, base):
        return Gain(ratio.median, ratio.q1, ratio.q3, INTERLEAVED)
    assert result.throughput_ips is not None
    return Gain(result.throughput_ips / base.throughput_ips, basis=NOT_INTERLEAVED)


def _candidate(result: CellResult, by_id: dict[str, CellResult]) -> Candidate:
    assert result.throughput_ips is not None
    telemetry = result.telemetry_summary if isinstance(result.telemetry, dict) else None
    return Candidate(
        cell_id=result.cell.id, configuration=configuration(result.cell), batch_size=measured_batch(result),
        throughput_ips=float(result.throughput_ips), gain=gain_over_eager_fp32(result, by_id),
        peak_memory_bytes=result.peak_memory_bytes, compile_s=result.compile_s,
        break_even_iterations=result.break_even_iterations, break_even_basis=result.break_even_basis,
        graph_breaks=result.graph_breaks, mfu=result.mfu,
        gpu_util_pct=telemetry.gpu_util_pct_mean if telemetry is not None else None)


def _overlaps(best: Candidate, runner: Candidate) -> bool:
    """Paired ranges against the same baseline that overlap: the order of the two is within the noise."""
    a, b = best.gain, runner.gain
    if a.basis not in (INTERLEAVED, BASELINE) or b.basis not in (INTERLEAVED, BASELINE):
        return False
    if best.batch_size != runner.batch_size or None in (a.q1, b.q3):
        return False
    return b.q3 >= a.q1  # type: ignore[operator]


def _not_tried(results: Sequence[CellResult], axes: Sequence[Axis]) -> list[str]:
    out = []
    for axis in axes:
        seen = {axis.of(r.cell) for r in results}
        missing = [v for v in axis.values if v not in seen]
        if missing:
            out.append(f"{axis.name}: {', '.join(missing)}")
    return out


def advise(results: Iterable[CellResult], run: str = "", axes: Sequence[Axis] = AXES) -> list[Advice]:
    """One :class:`Advice` per (detector, mode, GPU count) of ``results``, in model, mode, GPU-count order.

    Ranking is by throughput (images/s, median over the cell's blocks): the question is which configuration
    processes the most images, and batch sizes differ. A runner-up whose paired range (same batch, same worker)
    overlaps the pick's is flagged as a tie within the noise."""
    results = list(results)
    by_id = {r.cell.id: r for r in results}
    groups: dict[tuple[str, str, int], list[CellResult]] = {}
    for result in results:
        groups.setdefault((result.cell.model, result.cell.mode, result.cell.gpus), []).append(result)
    advice = []
    for (model, mode, gpus), members in sorted(groups.items()):
        ok = [r for r in members if r.status == "ok" and r.throughput_ips]
        ranked = sorted((_candidate(r, by_id) for r in ok), key=lambda c: c.throughput_ips, reverse=True)
        failures = [FailedConfiguration(r.cell.id, configuration(r.cell), measured_batch(r), r.status,
                                        _one_line(r.reason or "no reason recorded"))
                    for r in members if r.status != "ok"]
        item = Advice(run, model, mode, gpus, ranked, failures, _not_tried(members, axes), _notes(members))
        item.tie = len(ranked) > 1 and _overlaps(ranked[0], ranked[1])
        advice.append(item)
    return advice


def _notes(results: Sequence[CellResult]) -> list[str]:
    """What a user should know besides the ranking: CUDA graphs that fell back, recompilations in steady state,
    and where each batch search found the OOM boundary."""
    notes = []
    for r in results:
        where = f"{r.cell.configuration} bs{r.cell.batch_size}"
        details = r.compile_details
        if details is not None and details.cudagraph_skips:
            notes.append(f"{where}: CUDA graphs skipped for {details.cudagraph_skips} graph(s)"
                         + (f" ({details.cudagraph_skip_reasons})" if details.cudagraph_skip_reasons else ""))
        if details is not None and details.recompilations:
            notes.append(f"{where}: {details.recompilations} recompilation(s) after the first call")
        search = r.batch_search
        if search is not None:
            oom = f", {search.smallest_oom} runs out of memory" if search.smallest_oom else ""
            notes.append(f"{where}: {search.largest_fit or 'no batch'} fits{oom} ({len(search.probes)} probes; "
                         f"{search.stop_reason})")
    return [_one_line(n) for n in notes]


def advise_runs(runs: Iterable[Any]) -> list[Advice]:
    """Advice for every run (objects with ``label`` and ``results``, e.g. reports.load.Run)."""
    return [a for run in runs for a in advise(run.results, run.label)]


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


# --- rendering -------------------------------------------------------------------------------------------


def fmt_gain(gain: Gain) -> str:
    """``×1.42 (1.38–1.45)`` for a paired gain, ``×1.42 (not interleaved)``, or why there is none."""
    if gain.value is None:
        return gain.basis
    if gain.basis == INTERLEAVED and gain.q1 is not None and gain.q3 is not None:
        return f"×{gain.value:.2f} ({gain.q1:.2f}–{gain.q3:.2f})"
    if gain.basis == BASELINE:
        return "×1.00 (baseline)"
    return f"×{gain.value:.2f} ({gain.basis})"


def _num(value: float | None, fmt: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{suffix}"


def row(item: Advice) -> dict[str, str]:
    """The advice as display strings (one column spec for the terminal, Markdown and HTML)."""
    best = item.best
    base = {"run": item.run, "model": item.model, "mode": item.mode, "gpus": str(item.gpus),
            "not_tried": "; ".join(item.not_tried) or "-",
            "failed": "; ".join(f"{f.configuration} bs{f.batch_size} {f.status}: {f.reason}" for f in item.failures)
            or "-", "notes": "; ".join(item.notes) or "-"}
    if best is None:
        return {**base, "best": "nothing ran ok", "batch": "-", "img/s": "-", "gain": "-", "peak GiB": "-",
                "compile s": "-", "break-even": "-", "MFU": "-", "GPU util": "-", "runner-up": "-"}
    runner = item.runner_up
    runner_text = "-" if runner is None else (
        f"{runner.configuration} bs{runner.batch_size} {runner.throughput_ips:.1f} img/s"
        + (" (tie within the noise)" if item.tie else ""))
    return {**base, "best": best.configuration, "batch": str(best.batch_size),
            "img/s": f"{best.throughput_ips:.1f}", "gain": fmt_gain(best.gain),
            "peak GiB": _num(best.peak_memory_bytes / 2**30 if best.peak_memory_bytes is not None else None, ".2f"),
            "compile s": _num(best.compile_s, ".1f"),
            "break-even": _break_even(best),
            "MFU": _num(best.mfu * 100 if best.mfu is not None else None, ".1f", "%"),
            "GPU util": _num(best.gpu_util_pct, ".0f", "%"), "runner-up": runner_text}


def _break_even(best: Candidate) -> str:
    if best.compile_s is None:
        return "-"
    if best.break_even_iterations is not None:
        return f"{best.break_even_iterations:.0f} it"
    basis = best.break_even_basis or ""
    return "never (not faster than eager)" if "never pays off" in basis else (basis or "-")


SHORT = ("model", "mode", "gpus", "best", "batch", "img/s", "gain", "MFU", "GPU util")
COLUMNS = ("model", "mode", "gpus", "best", "batch", "img/s", "gain", "peak GiB", "compile s", "break-even", "MFU",
           "GPU util", "runner-up", "not_tried", "failed", "notes")
HEADINGS = {"gain": "gain vs eager fp32", "not_tried": "not tried", "failed": "failed (reason)"}


def terminal_table(advice: Sequence[Advice], columns: Sequence[str] = COLUMNS) -> Any:
    """A rich Table for the run's closing summary."""
    from rich.table import Table  # noqa: PLC0415

    table = Table(title="detbench advisor: the fastest configuration measured", header_style="bold")
    for key in columns:
        numeric = key in ("gpus", "batch", "img/s", "peak GiB", "compile s", "MFU", "GPU util")
        table.add_column(HEADINGS.get(key, key), overflow="fold", justify="right" if numeric else "left")
    for item in advice:
        values = row(item)
        table.add_row(*(values[k] for k in columns))
    return table


def markdown_lines(advice: Sequence[Advice], with_run: bool = False) -> list[str]:
    """The advice as a Markdown table (cells escaped for pipes and line breaks)."""
    from reports.columns import md_cell  # noqa: PLC0415 (pandas; the terminal path does not need it)

    if not advice:
        return []
    keys = (("run",) if with_run else ()) + COLUMNS
    lines = ["| " + " | ".join(HEADINGS.get(k, k) for k in keys) + " |", "|" + "---|" * len(keys)]
    for item in advice:
        values = row(item)
        lines.append("| " + " | ".join(md_cell(" ".join(values[k].split())) for k in keys) + " |")
    return lines


def html_section(advice: Sequence[Advice], with_run: bool = False) -> str:
    """The advisor section for the HTML report, from ``templates/advisor.html.j2`` (autoescaped)."""
    from reports.html import environment  # noqa: PLC0415 (pulls in pandas and plots; the terminal path does not)

    keys = (("run",) if with_run else ()) + COLUMNS
    return environment().get_template("advisor.html.j2").render(
        headings=[HEADINGS.get(k, k) for k in keys], keys=keys, rows=[row(a) for a in advice],
        interleaved=any(a.best and a.best.gain.basis == INTERLEAVED for a in advice),
        not_interleaved=any(a.best and a.best.gain.basis == NOT_INTERLEAVED for a in advice))


# --- command line ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m reports.advisor RESULT...``: the advice table over result files (JSON or journal JSONL);
    ``--json`` also writes it; ``--trace-args MODEL`` prints the best configuration of MODEL's inference as
    ``python -m bench.trace`` arguments (the GPU script profiles it). Exit 2 on an unreadable file."""
    import argparse  # noqa: PLC0415
    import json  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from dataclasses import asdict  # noqa: PLC0415

    from bench.progress import render  # noqa: PLC0415
    from reports.load import LoadError, load_runs  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m reports.advisor",
                                     description="The advice table over result files.")
    parser.add_argument("runs", nargs="+", metavar="RESULT")
    parser.add_argument("--json", default=None, help="write the advice (one object per detector, mode, GPU count)")
    parser.add_argument("--short", action="store_true", help="only model, configuration, images/s, gain, MFU, GPU util")
    parser.add_argument("--goal", action="append", default=[], metavar="MODEL=IMG_PER_S",
                        help="say how close MODEL's best 1-GPU inference came to a throughput goal (repeatable)")
    parser.add_argument("--trace-args", default=None, metavar="MODEL", help="print bench.trace arguments for the "
                        "best 1-GPU inference configuration of MODEL and exit")
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
        print(f"reports.advisor: error: {exc}", file=sys.stderr)
        return 2
    advice = advise_runs(runs)
    if args.trace_args:
        by_id = {r.cell.id: r for run in runs for r in run.results}
        picks = [a.best for a in advice if a.model == args.trace_args and a.mode == "infer" and a.gpus == 1 and a.best]
        if not picks:
            print(f"reports.advisor: error: no ok 1-GPU inference cell of {args.trace_args} in these files",
                  file=sys.stderr)
            return 2
        best = max(picks, key=lambda c: c.throughput_ips)
        print(" ".join(trace_arguments(by_id[best.cell_id])))
        return 0
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump([{**asdict(a), "display": row(a)} for a in advice], handle, indent=1)
    print(render(terminal_table(advice, SHORT if args.short else COLUMNS), color=False, width=220))
    for line in goal_lines(advice, goals):
        print(line)
    return 0


def goal_lines(advice: Sequence[Advice], goals: dict[str, float]) -> list[str]:
    """``MODEL: best X img/s (config, batch) = N% of the goal G img/s`` per goal, or why there is no figure."""
    lines = []
    for model, goal in goals.items():
        picks = [a.best for a in advice if a.model == model and a.mode == "infer" and a.gpus == 1 and a.best]
        if not picks:
            lines.append(f"{model}: no ok 1-GPU inference cell, goal {goal:g} img/s not assessed")
            continue
        best = max(picks, key=lambda c: c.throughput_ips)
        lines.append(f"{model}: best {best.throughput_ips:.1f} img/s ({best.configuration}, batch {best.batch_size}) "
                     f"= {best.throughput_ips / goal:.0%} of the goal {goal:g} img/s")
    return lines


def trace_arguments(result: CellResult) -> list[str]:
    """``python -m bench.trace`` arguments that set up the same configuration as ``result``'s cell."""
    cell = result.cell
    args = ["--model", cell.model, "--mode", cell.mode, "--compile", cell.compile, "--precision", cell.precision,
            "--batch-size", str(measured_batch(result)), "--memory-format", cell.memory_format]
    if cell.image_size:
        args += ["--image-size", f"{cell.image_size[0]}x{cell.image_size[1]}"]
    return args


if __name__ == "__main__":
    raise SystemExit(main())
