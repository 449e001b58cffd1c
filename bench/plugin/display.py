"""Terminal display of a run: one rich line per cell as it starts and finishes, a summary table, and the advice
(bench.core.advice: what should I use?).

Rendering is kept apart from the data: functions return text (rendered by rich, with or without
colour) that the pytest face writes through its terminal reporter.
"""

from __future__ import annotations

import io
import statistics
from collections.abc import Iterable, Sequence
from typing import Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bench.core.advice import Advice, break_even_text, gain_text, runner_up_text
from bench.core.schema import CellResult

STATUS_STYLE = {"ok": "green", "partial": "yellow", "oom": "magenta", "error": "red", "skipped": "yellow",
                "timeout": "red"}


def render(renderable: object, color: bool, width: int = 160) -> str:
    """A rich renderable as a string (ANSI colours only when ``color``)."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=color, color_system="standard" if color else None,
                      width=width, highlight=False)
    console.print(renderable)
    return buffer.getvalue().rstrip("\n")


def group_line(label: str, cells: int, done: int, total: int, isolation: str) -> Text:
    """A group starts: its model, image size and GPU count, how many cells it measures, interleaved."""
    return Text.assemble(("▶ ", "cyan"), (f"[{done + 1}-{done + cells}/{total}] ", "dim"), (label, "bold"),
                         (f"  {cells} cell(s), interleaved rounds ({isolation})", "dim"))


def overhead_line(results: Iterable[CellResult]) -> str:
    """The median per-cell overhead (cell wall time minus its timed region), eager and compiled apart."""
    results = list(results)
    parts = []
    for kind in ("eager", "compiled"):
        values = [r.overhead_s for r in results if r.cell.compiled == (kind == "compiled") and r.overhead_s is not None]
        if values:
            parts.append(f"{kind} {statistics.median(values):.1f} s over {len(values)} cell(s)")
    measured = [r.measurement for r in results if r.measurement is not None and r.measurement.cell_wall_s]
    timed, wall = sum(m.timed_s for m in measured), sum(m.cell_wall_s or 0.0 for m in measured)
    share = f"; timed {timed:.1f} s of {wall:.1f} s wall ({timed / wall:.0%})" if wall > 0 else ""
    return ("median per-cell overhead (wall minus timed region): " + ("; ".join(parts) if parts else "no measured cell")
            + share)


def result_line(result: CellResult, index: int, total: int) -> Text:
    style = STATUS_STYLE[result.status]
    text = Text.assemble(("■ ", style), (f"[{index}/{total}] ", "dim"), (result.cell.id, "bold"), "  ",
                         (result.status.upper(), f"bold {style}"))
    if result.status == "ok" and result.latency is not None:
        text.append(f"  {result.throughput_ips:.1f} img/s  median {result.latency.median_ms:.2f} ms"
                    f"  p90 {result.latency.p90_ms:.2f} ms  n={result.latency.n}")
        if result.peak_memory_bytes is not None:
            text.append(f"  peak {result.peak_memory_bytes / 2**30:.2f} GiB")
        if result.ratio is not None and result.ratio.baseline_cell_id != result.cell.id:
            text.append(f"  ×{result.ratio.median:.2f} ({result.ratio.q1:.2f}-{result.ratio.q3:.2f}) vs eager fp32")
        if result.compile_s is not None:
            text.append(f"  compile {result.compile_s:.1f} s")
        if result.warmup_converged is False:
            text.append("  warm-up not converged", style="yellow")
    elif result.reason:
        text.append(f"  {result.reason[:200]}", style="dim")
    return text


def summary_table(results: Iterable[CellResult]) -> Table:
    """One row per cell: status, throughput, paired ratio to eager fp32, latency, memory, compile, MFU."""
    table = Table(title="detbench cells", show_lines=False, header_style="bold")
    table.add_column("cell", no_wrap=True)
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("status", "left"), ("img/s", "right"), ("ratio", "right"), ("median ms", "right"), ("p90 ms", "right"),
        ("CoV", "right"), ("peak GiB", "right"), ("compile s", "right"), ("MFU", "right"), ("det/img", "right"),
        ("note", "left"))
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=True)
    for r in results:
        lat = r.latency
        table.add_row(
            r.cell.id,
            Text(r.status, style=STATUS_STYLE[r.status]),
            _num(r.throughput_ips, ".1f"),
            _num(r.ratio.median if r.ratio else None, ".2f", "×"),
            _num(lat.median_ms if lat else None, ".2f"),
            _num(lat.p90_ms if lat else None, ".2f"),
            _num(lat.cov if lat else None, ".3f"),
            _num(r.peak_memory_bytes / 2**30 if r.peak_memory_bytes is not None else None, ".2f"),
            _num(r.compile_s, ".1f"),
            _num(r.mfu * 100 if r.mfu is not None else None, ".1f", "%"),
            _num(r.detections_per_image.get("mean") if r.detections_per_image else None, ".1f"),
            (r.reason or ("warm-up not converged" if r.warmup_converged is False else ""))[:80],
        )
    return table


def _num(value: float | None, fmt: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{suffix}"


# --- the advice (bench.core.advice); reports/columns.py writes the same rows for the HTML and summary.md --------

ADVICE_COLUMNS: tuple[tuple[str, Literal["left", "right"]], ...] = (
    ("detector", "left"), ("mode", "left"), ("GPUs", "right"), ("use", "left"), ("batch", "right"),
    ("img/s", "right"), ("vs eager fp32", "right"), ("runner-up", "left"), ("peak GiB", "right"),
    ("compile s", "right"), ("break-even", "right"), ("MFU", "right"), ("GPU util", "right"), ("not tried", "left"),
    ("failed (reason)", "left"), ("notes", "left"))


def not_tried_text(item: Advice) -> str:
    parts = list(item.not_tried)
    if item.best is not None and item.not_at_batch:
        parts.append(f"at batch {item.best.batch_size}: {', '.join(item.not_at_batch)}")
    return "; ".join(parts)


def failed_text(item: Advice) -> str:
    return "; ".join(f"{f.configuration} bs{f.batch_size} {f.status}: {f.reason}" for f in item.failures)


def advice_cells(item: Advice) -> list[str]:
    """One advice as the texts of :data:`ADVICE_COLUMNS`, in order."""
    best = item.best
    head = [item.model, item.mode, str(item.gpus)]
    tail = [runner_up_text(item)]
    if best is None:
        return [*head, "nothing ran ok", "-", "-", "-", *tail, "-", "-", "-", "-", "-", not_tried_text(item),
                failed_text(item), "; ".join(item.notes)]
    return [*head, best.configuration, str(best.batch_size), f"{best.throughput_ips:.1f}", gain_text(best.gain), *tail,
            _num(best.peak_memory_bytes / 2**30 if best.peak_memory_bytes is not None else None, ".2f"),
            _num(best.compile_s, ".1f"), break_even_text(best) or "-",
            _num(best.mfu * 100 if best.mfu is not None else None, ".1f", "%"),
            _num(best.gpu_util_pct, ".0f", "%"), not_tried_text(item), failed_text(item), "; ".join(item.notes)]


def advice_table(advice: Sequence[Advice]) -> Table:
    """The advice for the run's closing summary: one row per detector, mode and GPU count (text is not markup)."""
    table = Table(title="detbench: what should I use?", header_style="bold")
    for name, justify in ADVICE_COLUMNS:
        table.add_column(name, justify=justify, overflow="fold")
    for item in advice:
        table.add_row(*(Text(cell or "-") for cell in advice_cells(item)))
    return table
