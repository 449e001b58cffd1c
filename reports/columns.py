"""One column specification for every table the reports print: HTML (templates), Markdown and the terminal.

A :class:`Column` says which value of a row it shows, its title, how the value is formatted and how it is
aligned; the named column sets (:data:`MATRIX`, :data:`FAILURES`, :data:`ADVICE`, :data:`COMPARISON`, ...)
are the tables themselves. Formatting lives here and only here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from detbench.bench.core.advice import Advice, break_even_text, gain_text, runner_up_text

# ---------- value formatting (the only copy) ----------


def is_missing(v: Any) -> bool:
    """None, NaN and pandas' NA all mean "not measured"."""
    if v is None or v is pd.NA:
        return True
    try:
        return isinstance(v, (float, int)) and not isinstance(v, bool) and math.isnan(v)
    except TypeError:
        return False


def fmt_text(v: Any) -> str:
    return "" if is_missing(v) else str(v)


# A spreadsheet reads a cell starting with one of these as a formula (or, tab and CR, a cell it then re-parses)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(v: Any) -> Any:
    """A text value a spreadsheet will not run: one starting like a formula gets a leading ``'``; numbers and
    everything else unchanged."""
    return "'" + v if isinstance(v, str) and v.startswith(FORMULA_STARTS) else v


def csv_text(frame: pd.DataFrame) -> str:
    """``frame`` as CSV with every text cell through :func:`csv_safe` (names come from result files)."""
    text_columns = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    return frame.assign(**{c: frame[c].map(csv_safe) for c in text_columns}).to_csv(index=False)


def fmt_num(v: Any, digits: int = 3) -> str:
    """About ``digits`` significant figures; thousands separated, never scientific notation above 1."""
    if is_missing(v):
        return ""
    v = float(v)
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:,.{max(digits - len(str(int(abs(v)))), 0)}f}"


def fmt_int(v: Any) -> str:
    return "" if is_missing(v) else f"{int(v)}"


def fmt_gib(v: Any) -> str:
    return "" if is_missing(v) else f"{float(v) / 2**30:.2f} GiB"


def fmt_mib(v: Any) -> str:
    return "" if is_missing(v) else f"{float(v) / 2**20:,.0f} MiB"


def fmt_pct(v: Any) -> str:
    return "" if is_missing(v) else f"{float(v) * 100:.1f}%"


def fmt_signed_pct(v: Any) -> str:
    return "" if is_missing(v) else f"{float(v) * 100:+.1f}%"


def fmt_ratio(v: Any) -> str:
    return "" if is_missing(v) else f"{float(v):.2f}x"


def fmt_yes_no(v: Any) -> str:
    return "" if is_missing(v) else ("yes" if v else "no")


def fmt_ratio_spread(median: Any, q1: Any, q3: Any) -> str:
    """``1.59× (1.58–1.60)``: a paired ratio's median with its interquartile range (the results-doc style)."""
    if is_missing(median):
        return ""
    text = f"{float(median):.2f}×"
    if not is_missing(q1) and not is_missing(q3):
        text += f" ({float(q1):.2f}–{float(q3):.2f})"
    return text


# ---------- the column specification ----------

Kind = Literal["text", "num", "status", "reason", "verdict", "wrap", "band"]


@dataclass(frozen=True)
class Column:
    """One table column.

    ``key`` names the row's value (the HTML ``data-col``, and what numeric cells sort by); ``display``
    writes the cell from the whole row when one value is not enough (a ratio with its spread, a figure or
    else a note). ``kind`` tells renderers how to style the cell:
    ``num`` cells align right and sort by their raw value, ``status``/``verdict`` cells get a class,
    ``reason`` cells wrap.
    """

    key: str
    title: str
    fmt: Callable[[Any], str] = fmt_text
    kind: Kind = "text"
    display: Callable[[Mapping[str, Any]], str] | None = None

    @property
    def align(self) -> Literal["left", "right"]:
        return "right" if self.kind == "num" else "left"

    @property
    def numeric(self) -> bool:
        return self.kind == "num"

    def raw(self, row: Mapping[str, Any]) -> Any:
        return row.get(self.key)

    def text(self, row: Mapping[str, Any]) -> str:
        return self.display(row) if self.display else self.fmt(self.raw(row))

    def sort_key(self, row: Mapping[str, Any]) -> str:
        """The raw number for sorting a numeric cell (``""`` when missing); text cells sort by their text."""
        v = self.raw(row)
        if not self.numeric or is_missing(v):
            return ""
        try:
            return repr(float(v))
        except (TypeError, ValueError):
            return ""


def _ratio_with_spread(row: Mapping[str, Any]) -> str:
    return fmt_ratio_spread(row.get("ratio"), row.get("ratio_q1"), row.get("ratio_q3"))


def _status_with_reason(row: Mapping[str, Any]) -> str:
    status, reason = fmt_text(row.get("status_cand")), fmt_text(row.get("reason_cand"))
    return f"{status} ({reason})" if reason else status


# per-iteration latency percentiles (at batch 1: per request), in every table of cells
LATENCY: list[Column] = [
    Column("latency_median_ms", "p50 ms", fmt_num, "num"),
    Column("latency_p90_ms", "p90 ms", fmt_num, "num"),
    Column("latency_p99_ms", "p99 ms", fmt_num, "num"),
]

MATRIX: list[Column] = [
    Column("run", "run"),
    Column("model", "detector"),
    Column("mode", "mode"),
    Column("variant", "variant"),
    Column("batch_size", "batch", fmt_int, "num"),
    Column("gpus", "GPUs", fmt_int, "num"),
    Column("image_size", "image"),
    Column("status", "status", kind="status"),
    Column("throughput_ips", "images/s", fmt_num, "num"),
    Column("speedup_vs_eager_fp32", "vs eager fp32", fmt_ratio, "num"),
    Column("ratio", "paired ratio", kind="num", display=_ratio_with_spread),
    *LATENCY,
    Column("latency_cov", "CoV", fmt_pct, "num"),
    Column("peak_memory_bytes", "peak memory", fmt_gib, "num"),
    Column("achieved_tflops", "TFLOP/s", fmt_num, "num"),
    Column("mfu", "MFU", fmt_pct, "num"),
    Column("detections_mean", "dets/img", fmt_num, "num"),
    Column("first_call_s", "first call s", fmt_num, "num"),
    Column("graph_breaks", "graph breaks", fmt_num, "num"),
    Column("break_even_iterations", "break-even iters", fmt_num, "num"),
    Column("energy_per_image_j", "J/image", fmt_num, "num"),
    Column("mean_power_w", "power W", fmt_num, "num"),
    Column("gpu_util_pct_mean", "util %", fmt_num, "num"),
    Column("throttled", "throttled", fmt_yes_no),
    Column("reason", "reason", kind="reason"),
]

# Deployment runtimes (detbench.bench.runtime.deploy): one row per cell of a runtime other than eager
DEPLOY: list[Column] = [
    Column("run", "run"),
    Column("model", "detector"),
    Column("runtime", "runtime"),
    Column("status", "status", kind="status"),
    Column("parity", "parity vs eager fp32", kind="verdict"),
    Column("parity_count_diff", "count diff", fmt_int, "num"),
    Column("parity_min_box_iou", "min box IoU", fmt_num, "num"),
    Column("parity_max_score_diff", "max score diff", fmt_num, "num"),
    Column("parity_min_mask_iou", "min mask IoU", fmt_num, "num"),
    Column("batch_size", "batch", fmt_int, "num"),
    *LATENCY,
    Column("ratio", "vs eager (paired)", kind="num", display=_ratio_with_spread),
    Column("export_s", "export s", fmt_num, "num"),
    Column("export_break_even_requests", "break-even requests", fmt_num, "num"),
    Column("artifact_bytes", "artifact", fmt_mib, "num"),
    Column("cold_start_s", "cold start s", fmt_num, "num"),
    Column("serving_peak_rss_bytes", "serving RSS", fmt_mib, "num"),
    Column("deploy_exported", "exported", kind="reason"),
    Column("reason", "reason", kind="reason"),
]

FAILURES: list[Column] = [
    Column("run", "run"),
    Column("cell_id", "cell"),
    Column("status", "status", kind="status"),
    Column("reason", "reason", kind="reason"),
]

ADVICE: list[Column] = [  # rows: advice_rows(); the terminal's twin is bench/plugin/display.py advice_table
    Column("run", "run"),
    Column("model", "detector"),
    Column("mode", "mode"),
    Column("gpus", "GPUs", fmt_int, "num"),
    Column("variant", "use", display=lambda r: fmt_text(r.get("variant")) or "nothing ran ok"),
    Column("batch_size", "batch", fmt_int, "num"),
    Column("throughput_ips", "images/s", fmt_num, "num"),
    Column("gain_over_eager_fp32", "vs eager fp32", kind="num", display=lambda r: r["gain_text"]),
    Column("runner_up", "runner-up", kind="reason"),
    Column("peak_memory_bytes", "peak memory", fmt_gib, "num"),
    Column("compile_s", "compile s", fmt_num, "num"),
    Column("break_even_iterations", "break-even", kind="num", display=lambda r: r["break_even_text"]),
    Column("mfu", "MFU", fmt_pct, "num"),
    Column("gpu_util_pct", "GPU util %", fmt_num, "num"),
    Column("not_tried", "not tried", kind="reason"),
    Column("failed", "failed (reason)", kind="reason"),
    Column("notes", "notes", kind="reason"),
]
ADVICE_SHORT_KEYS = ("model", "mode", "gpus", "variant", "batch_size", "throughput_ips", "gain_over_eager_fp32",
                     "mfu", "gpu_util_pct")

def _verdict_text(row: Mapping[str, Any]) -> str:
    """The verdict, with "(host differs)" when the host check made it inconclusive and "(weak)" on a block flag."""
    verdict = fmt_text(row.get("verdict"))
    if row.get("host_differs") is True:
        return f"{verdict} (host differs)"
    if row.get("weak") is True and verdict in ("regression", "improvement"):
        return f"{verdict} (weak)"
    return verdict


def _interval(row: Mapping[str, Any]) -> str:
    low, high = row.get("ci_low"), row.get("ci_high")
    if low is None or high is None or is_missing(low) or is_missing(high):
        return ""
    return f"{float(low):.3f}–{float(high):.3f}"


def _host_bound(row: Mapping[str, Any]) -> str:
    value = row.get("host_bound")
    return "" if value is None or is_missing(value) else ("yes" if value else "no")


def _blocks(row: Mapping[str, Any]) -> str:
    base, cand = row.get("blocks_base"), row.get("blocks_cand")
    if base is None or cand is None or is_missing(base) or is_missing(cand):
        return ""
    return f"{int(base)} / {int(cand)}"


COMPARISON: list[Column] = [
    Column("cell_id", "cell"),
    Column("verdict", "verdict", kind="verdict", display=_verdict_text),
    Column("change", "change", fmt_signed_pct, "num"),
    Column("ratio", "ratio", fmt_ratio, "num"),
    Column("ci_low", "95% interval of ratio", kind="num", display=_interval),
    Column("p_value", "p", fmt_num, "num"),
    Column("noise_band", "noise band", fmt_pct, "num"),
    Column("basis", "judged on"),
    Column("blocks_base", "blocks base / cand", kind="num", display=_blocks),
    Column("host_bound", "host-bound", display=_host_bound),
    Column("throughput_base", "baseline images/s", fmt_num, "num"),
    Column("throughput_cand", "candidate images/s", fmt_num, "num"),
    Column("status_base", "baseline status"),
    Column("status_cand", "candidate status"),
    Column("reason_cand", "candidate reason", kind="reason"),
    Column("why", "why", kind="reason"),
    Column("model", "detector"),
    Column("mode", "mode"),
    Column("variant", "variant"),
    Column("batch_size", "batch", fmt_int, "num"),
    Column("gpus", "GPUs", fmt_int, "num"),
]

# The short comparison for a CI job summary: one column folds status and reason together.
COMPARISON_SUMMARY: list[Column] = [
    Column("cell_id", "cell"),
    Column("verdict", "verdict", display=_verdict_text),
    Column("throughput_base", "baseline images/s", fmt_num, "num"),
    Column("throughput_cand", "candidate images/s", fmt_num, "num"),
    Column("change", "change", fmt_signed_pct, "num"),
    Column("ci_low", "95% interval of ratio", kind="num", display=_interval),
    Column("basis", "judged on"),
    Column("host_bound", "host-bound", display=_host_bound),
    Column("status_cand", "candidate status", display=_status_with_reason),
]

# Inconclusive cells in the summary: why each could not be judged.
COMPARISON_INCONCLUSIVE: list[Column] = [
    Column("cell_id", "cell"),
    Column("change", "change", fmt_signed_pct, "num"),
    Column("ci_low", "95% interval of ratio", kind="num", display=_interval),
    Column("blocks_base", "blocks base / cand", kind="num", display=_blocks),
    Column("host_bound", "host-bound", display=_host_bound),
    Column("why", "why", kind="reason"),
]

SCALING: list[Column] = [
    Column("run", "run"),
    Column("model", "detector"),
    Column("mode", "mode"),
    Column("variant", "variant"),
    Column("batch_size", "batch / GPU", fmt_int, "num"),
    Column("gpus", "GPUs", fmt_int, "num"),
    Column("throughput_ips", "images/s", fmt_num, "num"),
    Column("throughput_1gpu", "1-GPU images/s", fmt_num, "num"),
    Column("scaling_efficiency", "scaling efficiency", fmt_pct, "num"),
    Column("efficiency_source", "efficiency from"),
]

RANK_SPREAD: list[Column] = [
    Column("run", "run"),
    Column("cell_id", "cell"),
    Column("ranks", "ranks", fmt_int, "num"),
    Column("fastest_ms", "fastest rank ms", fmt_num, "num"),
    Column("median_ms", "median rank ms", fmt_num, "num"),
    Column("slowest_ms", "slowest rank ms", fmt_num, "num"),
    Column("slowest_rank", "slowest rank", fmt_int, "num"),
    Column("spread", "slowest / fastest - 1", fmt_pct, "num"),
    Column("comm_wait_share", "all-reduce wait", fmt_pct, "num"),
]


# ---------- renderers other than HTML (the HTML one is templates/table.html.j2) ----------


def md_cell(value: object) -> str:
    """Table-safe Markdown text: no pipes, newlines or HTML that GitHub would render."""
    text = "" if value is None else str(value)
    for raw, safe in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("\n", " "), ("\r", " ")):
        text = text.replace(raw, safe)
    return text


def markdown_table(columns: Sequence[Column], rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """A GitHub Markdown table (one string per line); numeric columns are right-aligned."""
    lines = ["| " + " | ".join(md_cell(c.title) for c in columns) + " |"]
    lines.append("|" + "".join("---:|" if c.numeric else "---|" for c in columns))
    lines += ["| " + " | ".join(md_cell(c.text(row)) for c in columns) + " |" for row in rows]
    return lines


def rich_table(columns: Sequence[Column], rows: Iterable[Mapping[str, Any]], title: str | None = None) -> Any:
    """A :class:`rich.table.Table` of the same columns, for the terminal (text is not markup-parsed)."""
    from rich.table import Table  # noqa: PLC0415  (rich is only needed by terminal callers)
    from rich.text import Text  # noqa: PLC0415

    table = Table(title=title)
    for c in columns:
        table.add_column(c.title, justify=c.align, overflow="fold" if c.kind == "reason" else "ellipsis")
    for row in rows:
        table.add_row(*(Text(c.text(row)) for c in columns))
    return table


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of a frame as dicts, the form every renderer takes."""
    return frame.to_dict("records")


# ---------- the advice (detbench.bench.core.advice) as rows ----------


def not_tried_text(item: Advice) -> str:
    parts = list(item.not_tried)
    best = item.best
    if best is not None and item.not_at_batch:
        parts.append(f"at batch {best.batch_size}: {', '.join(item.not_at_batch)}")
    return "; ".join(parts)


def failed_text(item: Advice) -> str:
    return "; ".join(f"{f.configuration} bs{f.batch_size} {f.status}: {f.reason}" for f in item.failures)


def advice_rows(advice: Sequence[Advice]) -> list[dict[str, Any]]:
    """One flat row per advice: the pick's figures as raw values (what recommendations.csv holds and numeric
    cells sort by) and the texts :data:`ADVICE` shows."""
    rows = []
    for item in advice:
        best = item.best
        row: dict[str, Any] = {"run": item.run, "model": item.model, "mode": item.mode, "gpus": item.gpus}
        if best is None:
            row.update(cell_id=None, variant=None, batch_size=None, throughput_ips=None, gain_over_eager_fp32=None,
                       gain_q1=None, gain_q3=None, gain_basis=None, paired=False, baseline_cell_id=None,
                       peak_memory_bytes=None, compile_s=None, break_even_iterations=None, mfu=None,
                       gpu_util_pct=None, gain_text="", break_even_text="")
        else:
            gain = best.gain
            row.update(cell_id=best.cell_id, variant=best.configuration, batch_size=best.batch_size,
                       throughput_ips=best.throughput_ips, gain_over_eager_fp32=gain.value, gain_q1=gain.q1,
                       gain_q3=gain.q3, gain_basis=gain.basis, paired=gain.paired,
                       baseline_cell_id=gain.baseline_cell_id, peak_memory_bytes=best.peak_memory_bytes,
                       compile_s=best.compile_s, break_even_iterations=best.break_even_iterations, mfu=best.mfu,
                       gpu_util_pct=best.gpu_util_pct, gain_text=gain_text(gain), break_even_text=break_even_text(best))
        row.update(runner_up=runner_up_text(item), tie=item.tie, not_tried=not_tried_text(item),
                   failed=failed_text(item), notes="; ".join(item.notes))
        rows.append(row)
    return rows


def advice_columns(with_run: bool, keys: Sequence[str] | None = None) -> list[Column]:
    """:data:`ADVICE` (or only the given keys), with the run column only when ``with_run``."""
    run = [c for c in ADVICE if c.key == "run"] if with_run else []
    return run + [c for c in ADVICE if c.key != "run" and (keys is None or c.key in keys)]


def with_speedup(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus ``speedup_vs_eager_fp32``: throughput over eager FP32 of the same run, detector, mode,
    batch size, GPU count and image size (NaN where either side is not ok). A plain quotient of two cells, for
    the matrix and the speedup plot; the advice uses paired ratios where the cells have them."""
    keys = ["run", "model", "mode", "batch_size", "gpus", "image_size"]
    base = frame[(frame["compile"] == "eager") & (frame["precision"] == "fp32") & (frame["status"] == "ok")]
    base = base[[*keys, "throughput_ips"]].rename(columns={"throughput_ips": "_eager_fp32_ips"})
    merged = frame.merge(base.drop_duplicates(keys), on=keys, how="left")
    ok = merged["status"] == "ok"
    merged["speedup_vs_eager_fp32"] = (merged["throughput_ips"] / merged["_eager_fp32_ips"]).where(ok)
    return merged.drop(columns="_eager_fp32_ips")
