"""detbench.reports.ratios regenerates docs/results-h100.md's ratio tables from the committed interleaved results."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from detbench.reports.ratios import main, ratio_markdown, variant_title
from tests.examples import RATIO_RUNS, example

ROOT = Path(__file__).resolve().parents[2]
RESULTS = [example(name) for name in RATIO_RUNS]
FIGURE = re.compile(r"\d[\d,]*(?:\.\d+)?")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table_rows(markdown: str) -> list[list[str]]:
    """Data rows that quote a paired ratio with its spread (``1.17× (1.17–1.18)``)."""
    return [_cells(line) for line in markdown.splitlines() if line.startswith("| ") and "× (" in line]


MATRIX_SECTION = "\n## The `quick` profile on the one-engine matrix"  # matrix ratios, not interleaved files


def _doc_rows() -> list[list[str]]:
    """Table rows of the results doc's interleaved sections (the matrix section after them quotes a matrix run)."""
    text = (ROOT / "docs" / "results-h100.md").read_text(encoding="utf-8")
    assert MATRIX_SECTION in text
    return _table_rows(text.split(MATRIX_SECTION)[0])


def test_every_generated_row_is_the_results_doc_row_figure_for_figure():
    generated = _table_rows(ratio_markdown(RESULTS))
    ok = sum(m.get("status") == "ok" for p in RESULTS for m in json.loads(p.read_text(encoding="utf-8"))["models"])
    assert len(generated) == ok >= 15
    doc = _doc_rows()
    for row in generated:
        model, baseline = row[0], row[1]
        # one model may have an inference and a training row: its baseline images/s tells them apart
        quoting = [d for d in doc if re.fullmatch(rf"{re.escape(model)}(?: \(\d+\))?", d[0]) and d[1] == baseline]
        assert len(quoting) == 1, f"{model} at {baseline} img/s: {len(quoting)} results-doc rows quote it"
        assert len(quoting[0]) == len(row), f"{model}: the doc row has other columns: {quoting[0]}"
        for ours, theirs in zip(row[2:], quoting[0][2:]):
            # the figures (ratios, spread, compile s, graph breaks, break-even) must agree; the words may differ
            assert FIGURE.findall(ours) == FIGURE.findall(theirs), (ours, theirs)


def test_every_interleaved_row_of_the_results_doc_is_generated():
    generated = {(r[0], r[1]) for r in _table_rows(ratio_markdown(RESULTS))}
    for row in _doc_rows():
        model = re.sub(r" \(\d+\)$", "", row[0])
        assert (model, row[1]) in generated, f"the results doc quotes {row[:2]} but no committed file has it"


@pytest.mark.parametrize(
    ("variant", "baseline", "title"),
    [
        ("infer-eager-bf16", "infer-eager-fp32", "bf16 / FP32 (eager)"),
        ("infer-compiled-fp32", "infer-eager-fp32", "compiled / eager (FP32)"),
        ("train-compiled-bf16", "train-eager-fp32", "compiled bf16 / eager FP32"),
    ],
)
def test_column_titles_say_what_is_divided_by_what(variant, baseline, title):
    assert variant_title(variant, baseline) == title


def test_cli_prints_the_tables_and_rejects_a_foreign_file(tmp_path, capsys):
    assert main([str(RESULTS[0])]) == 0
    assert capsys.readouterr().out.startswith("| detector | eager FP32 img/s |")
    foreign = tmp_path / "x.json"
    foreign.write_text('{"benchmarks": []}')
    assert main([str(foreign)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "x.json: not a detbench.bench.tools.interleaved result" in err
