"""scripts/gate_proof.sh, the lead's device proof of the gate: its parts run alone and the table comes last."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.core import matrix
from bench.core.schema import Cell
from bench.models import list_models
from tests.reports.generate import write_benchmark_json
from tests.reports.test_compare_repeats import repeated

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gate_proof.sh"
TEN = Cell("retinanet_resnet50_fpn", "infer", "eager", "fp32", 8)
TWO = Cell("fcos_resnet50_fpn", "infer", "eager", "fp32", 8)


def gate_proof(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable}, timeout=300)


def test_the_plants_name_cells_of_the_quick_profile():
    ids = {c.id for c in matrix.expand("quick", matrix.MatrixFilters(), list_models(), 1)}
    text = SCRIPT.read_text()
    for cell in (TEN, TWO):
        assert cell.id in ids and cell.id.removesuffix("-gpu1") in text


def test_compare_part_judges_existing_files_both_ways_and_prints_the_table_last(tmp_path):
    base = [repeated(TEN, [40.0, 40.5, 39.8], seed=1), repeated(TWO, [30.0, 30.3, 29.9], seed=2)]
    cand = [repeated(TEN, [36.0, 36.3, 35.9], seed=3), repeated(TWO, [30.1, 29.8, 30.2], seed=4)]
    a, b = write_benchmark_json(tmp_path / "a.json", base), write_benchmark_json(tmp_path / "b.json", cand)
    out = tmp_path / "out"
    result = gate_proof(str(out), "compare", "a.json", "b.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith("steps that exited non-zero") and "compare-b-vs-a (exit 3)" in lines[-1]
    rows = {line.split()[0]: line.split() for line in lines if line.startswith(("a-vs-b", "b-vs-a"))}
    assert rows["b-vs-a"][1:] == ["3/3", "retinanet*10%", "-", "0", "fail"]
    assert rows["a-vs-b"][1:] == ["3/3", "-", "retinanet*10%", "0", "pass"]
    assert json.loads((out / "compare-b-vs-a" / "comparison.json").read_text())["gate"] == "fail"
    assert (out / "compare-b-vs-a.rc").read_text().strip() == "3" and a.exists() and b.exists()


def test_bad_parts_are_usage_errors(tmp_path):
    assert gate_proof().returncode == 2
    unknown = gate_proof(str(tmp_path), "nonsense")
    assert unknown.returncode == 2 and "valid: a, b, ra, rb, reports, compare A B, ab, table" in unknown.stderr
    assert gate_proof(str(tmp_path), "compare", "x.json").returncode == 2
    missing = gate_proof(str(tmp_path), "compare", "x.json", "y.json")
    assert missing.returncode == 0 and "skip x.json vs y.json: missing file" in missing.stdout
    assert missing.stdout.strip().endswith("(no comparison yet)")
