"""Markdown tables of paired ratios from committed ``python -m detbench.bench.tools.interleaved`` results (the old
``detbench.interleaved`` files, read by detbench.bench.core.comparison).

Usage: ``python -m detbench.reports.ratios docs/examples/h100-ratios-*.json`` (or ``detbench-report
--ratios-markdown``). One table per variant set (inference, training step, ...), one row per model: the baseline's
images/s, then each variant's paired ratio to the baseline (median over rounds with its interquartile range) and, for
compiled variants, compile time, graph breaks and whether compiling pays against the eager variant of the
same precision, paired by round. Break-even iterations are filled in for files written before the field.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path

from detbench.bench.core import stats
from detbench.bench.core.comparison import ModelComparison, eager_twin_variant, fill_break_even
from detbench.reports.columns import fmt_ratio_spread, md_cell

_PRECISION = {"fp32": "FP32", "bf16": "bf16", "fp16": "fp16"}
_MODE = {"infer": "detector", "train": "detector (training step)"}


class RatiosError(ValueError):
    """A file that is not a ``detbench.bench.tools.interleaved`` result; the message names the file."""


def load_comparisons(paths: Iterable[str | Path]) -> list[ModelComparison]:
    """Every model that ran ok in the given files, in file order."""
    results = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
            raise RatiosError(f"{path}: cannot read it as JSON ({exc})") from exc
        # the study's summary: in an ordinary run's detbench block (now), or at the top (the older schema)
        block = data.get("detbench") if isinstance(data, dict) else None
        models = block.get("models") if isinstance(block, dict) else data.get("models") if isinstance(data, dict) \
            else None
        if not isinstance(models, list):
            raise RatiosError(f"{path}: not a detbench.bench.tools.interleaved result (no 'models' list)")
        for i, model in enumerate(models):
            if isinstance(model, dict) and model.get("status") == "ok":
                try:
                    results.append(ModelComparison.from_dict(model))
                except (ValueError, KeyError, TypeError) as exc:
                    raise RatiosError(f"{path}: models[{i}] is not a detbench.bench.tools.interleaved result "
                                      f"({exc})") from exc
    for result in results:
        fill_break_even(result.variants)
    return results


def variant_title(variant: str, baseline: str) -> str:
    """Column header for ``variant / baseline`` in words: ``bf16 / FP32 (eager)``, ``compiled / eager (FP32)``,
    ``compiled bf16 / eager FP32``."""
    _, v_compile, v_prec = variant.split("-", 2)
    _, b_compile, b_prec = baseline.split("-", 2)
    v_prec, b_prec = _PRECISION.get(v_prec, v_prec), _PRECISION.get(b_prec, b_prec)
    if v_compile == b_compile:
        return f"{v_prec} / {b_prec} ({v_compile})"
    if v_prec == b_prec:
        return f"{v_compile} / {b_compile} ({v_prec})"
    return f"{v_compile} {v_prec} / {b_compile} {b_prec}"


def twin_ratio(result: ModelComparison, variant: str) -> list[float] | None:
    """Per-round throughput ratio of a compiled variant over its eager twin (same mode and precision)."""
    twin = eager_twin_variant(variant)
    ratios = {r.variant: r.per_round for r in result.ratios}
    if twin == result.variants[0].variant:
        return ratios.get(variant)
    if variant not in ratios or twin not in ratios:
        return None
    return [v / t for v, t in zip(ratios[variant], ratios[twin]) if t > 0]


def compile_verdict(result: ModelComparison, variant: str, break_even: float | None) -> str:
    """Whether compiling pays, against the eager twin paired by round: an IQR straddling 1 is no gain."""
    against = sorted(twin_ratio(result, variant) or [])
    if against and stats.percentile(against, 25) <= 1.0 <= stats.percentile(against, 75):
        return "not measurably faster than eager"
    if break_even:
        return f"pays off after {break_even:,.0f} it."
    return "never pays off"


def row_cells(result: ModelComparison) -> tuple[str, list[str]]:
    """The baseline's images/s and one cell per other variant."""
    base = result.variants[0]
    ratios = {r.variant: r for r in result.ratios}
    cells = []
    for run in result.variants[1:]:
        ratio = ratios.get(run.variant)
        if ratio is None:
            cells.append(f"{run.variant}: {run.status}")
            continue
        text = fmt_ratio_spread(ratio.median, ratio.q1, ratio.q3)
        if run.compile_s is not None:
            breaks = f"{run.graph_breaks} break" + ("" if run.graph_breaks == 1 else "s")
            verdict = compile_verdict(result, run.variant, run.break_even_iterations)
            text += f"; compile {run.compile_s:.0f} s, {breaks}, {verdict}"
        cells.append(text)
    return f"{base.throughput_ips:.1f}", cells


def ratio_markdown(paths: Iterable[str | Path]) -> str:
    """One Markdown table per variant set, tables separated by a blank line."""
    groups: dict[tuple[str, ...], list[ModelComparison]] = {}
    for result in load_comparisons(paths):
        groups.setdefault(tuple(v.variant for v in result.variants), []).append(result)
    tables = []
    for variants, group in groups.items():
        base = variants[0]
        mode, b_compile, b_prec = base.split("-", 2)
        head = [_MODE.get(mode, mode), f"{b_compile} {_PRECISION.get(b_prec, b_prec)} img/s"]
        head += [variant_title(v, base) for v in variants[1:]]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for result in group:
            baseline_ips, cells = row_cells(result)
            lines.append("| " + " | ".join(md_cell(c) for c in [result.model, baseline_ips, *cells]) + " |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables) + "\n"


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m detbench.reports.ratios FILE.json [FILE.json ...]  "
              "(detbench.bench.tools.interleaved results)",
              file=sys.stderr)
        return 2
    try:
        print(ratio_markdown(paths), end="")
    except RatiosError as exc:
        print(f"detbench.reports.ratios: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
