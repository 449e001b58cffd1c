"""The README's ratio table quotes the committed interleaved H100 results, figure for figure."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.interleaved import ModelComparison

ROOT = Path(__file__).resolve().parents[1]
RESULTS = sorted((ROOT / "docs" / "examples").glob("h100-ratios-*.json"))


def committed_results() -> dict[str, ModelComparison]:
    out = {}
    for path in RESULTS:
        for data in json.loads(path.read_text(encoding="utf-8"))["models"]:
            if data.get("status") == "ok":
                out[data["model"]] = ModelComparison.from_dict(data)
    return out


def readme_rows() -> dict[str, str]:
    rows = {}
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        match = re.match(r"\| ([a-z0-9_]+)(?: \(640\))? \| ([0-9.]+) \|", line)
        if match:
            rows.setdefault(match.group(1), line)
    return rows


def test_every_interleaved_result_is_quoted_with_its_own_figures():
    results, rows = committed_results(), readme_rows()
    assert len(results) >= 10, f"expected the committed ratio runs under docs/examples, found {sorted(results)}"
    for model, result in results.items():
        assert model in rows, f"{model} has committed ratios but no README row"
        row = rows[model]
        assert f"| {result.variants[0].throughput_ips:.1f} |" in row
        for ratio in result.ratios:
            quoted = f"{ratio.median:.2f}× ({ratio.q1:.2f}–{ratio.q3:.2f})"
            assert quoted in row, f"{model} {ratio.variant}: README row lacks {quoted}: {row}"


@pytest.mark.parametrize("model", ["retinanet_resnet50_fpn", "maskrcnn_resnet50_fpn"])
def test_compile_figures_in_the_readme_match_the_results(model):
    result, row = committed_results()[model], readme_rows()[model]
    compiled = next(v for v in result.variants if v.compile_s is not None)
    assert f"compile {compiled.compile_s:.0f} s" in row
    assert f"{compiled.graph_breaks} graph breaks" in row or f"{compiled.graph_breaks} breaks" in row
