"""docs/results-h100.md's ratio table quotes the committed interleaved H100 results, figure for figure."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from detbench.bench.core.comparison import ModelComparison
from tests.examples import RATIO_RUNS, example

ROOT = Path(__file__).resolve().parents[1]
RESULTS = [example(name) for name in RATIO_RUNS]


def committed_results() -> dict[tuple[str, str], ModelComparison]:
    """(model, baseline variant) -> result: one model may have an inference and a training comparison."""
    out = {}
    for path in RESULTS:
        for data in json.loads(path.read_text(encoding="utf-8"))["models"]:
            if data.get("status") == "ok":
                result = ModelComparison.from_dict(data)
                out[(result.model, result.variants[0].variant)] = result
    return out


def readme_rows() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in (ROOT / "docs" / "results-h100.md").read_text(encoding="utf-8").splitlines():
        match = re.match(r"\| ([a-z0-9_]+)(?: \(640\))? \| ([0-9.]+) \|", line)
        if match:
            rows.setdefault(match.group(1), []).append(line)
    return rows


def quoting_row(result: ModelComparison, rows: list[str]) -> str | None:
    """The results-doc row that quotes this result's baseline images/s (rows of one model differ in it)."""
    return next((row for row in rows if f"| {result.variants[0].throughput_ips:.1f} |" in row), None)


def test_every_interleaved_result_is_quoted_with_its_own_figures():
    results, rows = committed_results(), readme_rows()
    assert len(results) >= 15, f"expected the committed ratio runs under docs/examples, found {sorted(results)}"
    for (model, baseline), result in results.items():
        row = quoting_row(result, rows.get(model, []))
        assert row is not None, f"{model} ({baseline}) has committed ratios but no results-doc row with its img/s"
        for ratio in result.ratios:
            quoted = f"{ratio.median:.2f}× ({ratio.q1:.2f}–{ratio.q3:.2f})"
            assert quoted in row, f"{model} {ratio.variant}: results-doc row lacks {quoted}: {row}"


def test_every_compiled_variant_of_the_extras_is_quoted_with_its_compile_time_and_breaks():
    rows = readme_rows()
    for (model, _), result in committed_results().items():
        if not any(v.variant.endswith("-compiled-bf16") for v in result.variants):
            continue  # the torchvision table words these by hand; checked below for two models
        row = quoting_row(result, rows[model])
        for run in result.variants:
            if run.compile_s is not None:
                breaks = f"{run.graph_breaks} break" + ("" if run.graph_breaks == 1 else "s")
                assert f"compile {run.compile_s:.0f} s, {breaks}" in row, f"{model} {run.variant}: {row}"


@pytest.mark.parametrize("model", ["retinanet_resnet50_fpn", "maskrcnn_resnet50_fpn"])
def test_compile_figures_in_the_readme_match_the_results(model):
    result = committed_results()[(model, "infer-eager-fp32")]
    row = quoting_row(result, readme_rows()[model])
    compiled = next(v for v in result.variants if v.compile_s is not None)
    assert f"compile {compiled.compile_s:.0f} s" in row
    assert f"{compiled.graph_breaks} graph breaks" in row or f"{compiled.graph_breaks} breaks" in row
