"""Markdown table of `python -m bench.interleaved` results, for the README and docs/NOTES.md.

Usage: python3 scripts/ratios_markdown.py docs/examples/h100-ratios-*.json
One row per model: the baseline's images/s, then each variant's paired ratio (median, IQR) and, for compiled
variants, compile time, graph breaks and whether compiling pays against the eager variant of the same precision
(paired by round; break-even iterations computed here for files written before the field existed).
"""

from __future__ import annotations

import json
import sys

from bench import stats
from bench.interleaved import ModelComparison, eager_twin_variant, fill_break_even


def twin_ratio(result: ModelComparison, variant: str) -> list[float] | None:
    """Per-round throughput ratio of a compiled variant over its eager twin (same mode and precision)."""
    twin = eager_twin_variant(variant)
    ratios = {r.variant: r.per_round for r in result.ratios}
    if twin == result.variants[0].variant:
        return ratios.get(variant)
    if variant not in ratios or twin not in ratios:
        return None
    return [v / t for v, t in zip(ratios[variant], ratios[twin]) if t > 0]


def row_cells(result: ModelComparison) -> tuple[str, list[str]]:
    base = result.variants[0]
    ratios = {r.variant: r for r in result.ratios}
    cells = []
    for run in result.variants[1:]:
        ratio = ratios.get(run.variant)
        if ratio is None:
            cells.append(f"{run.variant}: {run.status}")
            continue
        text = f"{ratio.median:.2f}× ({ratio.q1:.2f}–{ratio.q3:.2f})"
        if run.compile_s is not None:
            # whether compiling pays is judged against the eager variant of the same precision
            against = sorted(twin_ratio(result, run.variant) or [])
            if against and stats.percentile(against, 25) <= 1.0 <= stats.percentile(against, 75):
                pays = ", not measurably faster than eager"
            elif run.break_even_iterations:
                pays = f", pays off after {run.break_even_iterations:,.0f} it."
            else:
                pays = ", never pays off"
            breaks = f"{run.graph_breaks} break" + ("" if run.graph_breaks == 1 else "s")
            text += f"; compile {run.compile_s:.0f} s, {breaks}{pays}"
        cells.append(text)
    return f"{base.throughput_ips:.1f}", cells


def main(paths: list[str]) -> int:
    results = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for data in json.load(handle)["models"]:
                if data.get("status") == "ok":
                    results.append(ModelComparison.from_dict(data))
    by_variants: dict[tuple[str, ...], list[ModelComparison]] = {}
    for result in results:
        fill_break_even(result.variants)
        by_variants.setdefault(tuple(v.variant for v in result.variants), []).append(result)
    for variants, group in by_variants.items():
        print(f"\n| model | {variants[0]} img/s | " + " | ".join(f"{v} / {variants[0]}" for v in variants[1:]) + " |")
        print("|---|---|" + "---|" * (len(variants) - 1))
        for result in group:
            base, cells = row_cells(result)
            print(f"| {result.model} | {base} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
