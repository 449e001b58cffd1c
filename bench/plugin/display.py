"""Terminal display of a run: one rich line per cell as it starts and finishes, a summary table, and the advice
(detbench.bench.core.advice: what should I use?).

Rendering is kept apart from the data: functions return text (rendered by rich, with or without
colour) that the pytest face writes through its terminal reporter.
"""

from __future__ import annotations

import io
import statistics
import textwrap
from collections.abc import Iterable, Sequence
from typing import Literal

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from detbench.bench.core.advice import Advice, break_even_text, gain_text, runner_up_text
from detbench.bench.core.schema import Cell, CellResult

STATUS_STYLE = {"ok": "green", "partial": "yellow", "oom": "magenta", "error": "red", "skipped": "yellow",
                "timeout": "red", "not-supported": "yellow"}


def render(renderable: object, color: bool, width: int = 160) -> str:
    """A rich renderable as a string (ANSI colours only when ``color``)."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=color, color_system="standard" if color else None,
                      width=width, highlight=False)
    console.print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip("\n").splitlines())


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


WIDTH = 100  # the summary reads at 100 columns and in a log (no tty): ids are never wrapped, long texts are footnotes


def _config_id(cell: Cell) -> str:
    """A cell's id without its model (``infer-eager-fp32-bs8-gpu1``): the rows under a model's own line."""
    return cell.id[len(cell.model) + 1:] if cell.id.startswith(cell.model + "-") else cell.id


def summary_table(results: Iterable[CellResult]) -> Group:
    """One row per cell, under its model's line: status, throughput, paired ratio to eager fp32, latency, memory,
    compile, MFU (GiB: peak memory); a reason or note is a numbered footnote below the table (fits :data:`WIDTH`
    columns)."""
    table = Table(title="detbench cells", title_justify="left", header_style="bold", box=None, pad_edge=False,
                  padding=(0, 1, 0, 0))
    table.add_column("cell", no_wrap=True)
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("status", "left"), ("img/s", "right"), ("ratio", "right"), ("median ms", "right"), ("p90 ms", "right"),
        ("GiB", "right"), ("compile s", "right"), ("MFU", "right"), ("note", "left"))
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=True)
    notes: list[str] = []
    model = None
    for r in results:
        if r.cell.model != model:
            model = r.cell.model
            table.add_row(Text(model, style="bold"))
        lat = r.latency
        note = r.reason or ("warm-up not converged" if r.warmup_converged is False else "")
        if note:
            notes.append(note)
        table.add_row(
            "  " + _config_id(r.cell),
            Text(r.status, style=STATUS_STYLE[r.status]),
            _num(r.throughput_ips, ".1f"),
            _num(r.ratio.median if r.ratio else None, ".2f", "×"),
            _num(lat.median_ms if lat else None, ".2f"),
            _num(lat.p90_ms if lat else None, ".2f"),
            _num(r.peak_memory_bytes / 2**30 if r.peak_memory_bytes is not None else None, ".2f"),
            _num(r.compile_s, ".1f"),
            _num(r.mfu * 100 if r.mfu is not None else None, ".1f", "%"),
            f"[{len(notes)}]" if note else "",
        )
    return Group(table, *footnotes(notes))


def footnotes(texts: Sequence[str], width: int = WIDTH) -> list[Text]:
    """``[n] text`` wrapped at ``width`` with a hanging indent (a long reason never widens a table)."""
    out = []
    for n, text in enumerate(texts, 1):
        mark = f"[{n}] "
        wrapped = textwrap.wrap(" ".join(str(text).split()), width - len(mark), break_long_words=True) or [""]
        out.append(Text(mark + ("\n" + " " * len(mark)).join(wrapped), style="dim"))
    return out


def _num(value: float | None, fmt: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{suffix}"


# --- the advice (detbench.bench.core.advice); reports/columns.py writes the same rows for the HTML and summary.md
# --------

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


def wrap_parts(parts: Sequence[str], width: int = WIDTH, indent: str = "  ", separator: str = "; ") -> list[str]:
    """``parts`` on lines of at most ``width`` columns, broken between parts (a part longer than a line is wrapped
    between its words); every line but the first indented."""
    lines: list[str] = []
    line = ""
    for part in (p for p in parts if p):
        candidate = f"{line}{separator}{part}" if line else (indent if lines else "") + part
        if len(candidate) <= width or not line:
            line = candidate
            continue
        lines.append(line + separator.rstrip())
        line = indent + part
    if line:
        lines.append(line)
    out: list[str] = []
    for line in lines:  # a single part wider than a line: between its words
        out.extend(textwrap.wrap(line, width, subsequent_indent=indent + "  ", break_long_words=False,
                                 break_on_hyphens=False, drop_whitespace=True) if len(line) > width else [line])
    return out


def advice_table(advice: Sequence[Advice], width: int = WIDTH) -> Group:
    """The advice for the run's closing summary, one block per detector, mode and GPU count: the headline first, the
    rest wrapped at ``width`` between its parts (text is not markup)."""
    blocks: list[Text] = [Text("detbench: what should I use?", style="bold")]
    for item in advice:
        cells = dict(zip((name for name, _ in ADVICE_COLUMNS), advice_cells(item), strict=True))
        parts = [f"{cells['detector']} {cells['mode']}, {cells['GPUs']} GPU(s):"]
        if item.best is None:
            parts.append("nothing ran ok")
        else:
            parts += [f"use {cells['use']} at batch {cells['batch']},", f"{cells['img/s']} img/s",
                      f"({cells['vs eager fp32']} vs eager fp32)"]
        details = [f"{name}: {cells[name]}" for name in ("runner-up", "peak GiB", "compile s", "break-even", "MFU",
                                                          "GPU util", "not tried", "failed (reason)", "notes")
                   if cells.get(name) not in (None, "", "-")]
        head = wrap_parts(parts, width, separator=" ")
        body = wrap_parts(details, width - 2) if details else []
        blocks.append(Text("\n".join([*head, *("  " + line.lstrip() if i == 0 else "  " + line
                                                for i, line in enumerate(body))])))
    return Group(*blocks)
