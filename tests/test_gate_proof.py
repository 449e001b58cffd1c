"""scripts/gate_proof.sh and its helpers, the device proof of the A/B gate: the plants name cells of the gate's
matrix, a part runs detbench-ab and keeps its files, the table reads every run, and bad usage is exit 2. The
scripts that re-judge a committed run (gate_block_stats.py) and reprint the noise study (noise_probe.py table)
run on the committed H200 files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from detbench.bench.core import matrix
from detbench.bench.core.config import OPTION_TABLE
from detbench.bench.models import list_models

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gate_proof.sh"


def gate_proof(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable, **(env or {})})


def test_the_plants_name_cells_of_the_gates_matrix():
    text = SCRIPT.read_text()
    cells_args = re.search(r'CELLS:-(--profile [^}]*)}', text).group(1).split()
    values = dict(zip(cells_args[::2], cells_args[1::2]))
    filters = matrix.MatrixFilters(models=tuple(values["--models"].split(",")), modes=("infer",),
                                   precisions=tuple(values["--precisions"].split(",")), compile=("eager",),
                                   batch_sizes=(8,))
    ids = {c.id for c in matrix.expand("quick", filters, list_models(), 1)}
    assert len(ids) == 8  # 4 detectors x fp32, bf16 at batch 8
    for name in ("FIVE", "TEN"):
        planted = re.search(rf"^{name}=(\S+)", text, re.M).group(1)
        assert sum(cell_id.startswith(planted) for cell_id in ids) == 1, planted
    assert {arg for arg in cells_args if arg.startswith("--")} <= {o.name for o in OPTION_TABLE if o.gate}


def test_a_part_runs_detbench_ab_keeps_its_files_and_prints_the_table(tmp_path):
    # the tests' tiny model (the script puts the checkout on PYTHONPATH): resnet50 here took 35 CPU-s, this 19 (its
    # sides import torchvision and build a real network; 2026-12-06, this VM)
    env = {"CELLS": "--models tiny_convnet --model-modules tests.bench.tiny_models --modes infer --precisions fp32 "
                    "--batch-sizes 2 --image-size 32x32",
           "AB_ARGS": "--pairs 2 --rounds 3 --block-s 0.05 --pin-cpus none", "OMP_NUM_THREADS": "1"}
    done = gate_proof(str(tmp_path), "same", "s1", env=env)
    assert done.returncode in (0, 3), done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "s1" / "ab.json").is_file() and (tmp_path / "s1.log").is_file()
    assert "tiny_convnet-infer-eager-fp32-bs2-gpu1-32x32" in done.stdout and "duty cycle" in done.stdout
    table = gate_proof(str(tmp_path), "table")
    assert table.returncode == 0 and "2 worker pairs x up to 3" in table.stdout


def test_bad_usage_is_exit_2_with_the_header():
    for args in ((), ("/tmp/x",), ("/tmp/x", "dance"), ("/tmp/x", "same")):
        done = gate_proof(*args)
        assert done.returncode == 2 and "gate_proof.sh OUTDIR same NAME" in done.stderr, args


def test_the_committed_h200_gate_run_rejudged_with_each_block_statistic():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gate_block_stats.py"),
                           str(ROOT / "docs" / "examples" / "gate-h200")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    # the figures docs/ab.md quotes
    assert "median: mean log-width of the intervals 0.137" in out
    assert "p25: mean log-width of the intervals 0.092" in out
    assert "min: mean log-width of the intervals 0.086" in out
    p25 = out.split("p25:")[1].split("min:")[0]
    # Three worker pairs leave 2 degrees of freedom: judged together (Holm over 8 cells), no cell is flagged at the
    # lower quartile, and both plants lie inside their intervals.
    assert "retinanet_resnet50_fpn-infer-eager-fp32-bs8-gpu1        inconclusive 0.960 [0.940, 0.980]  planted 0.952 " \
           "inside" in p25
    assert "fcos_resnet50_fpn-infer-eager-bf16-bs8-gpu1             inconclusive 0.927 [0.885, 0.971]  planted 0.909 " \
           "inside" in p25
    assert p25.count("regression") == 0
    # no unplanted cell is flagged by any block statistic
    flagged = [line for line in out.splitlines() if " regression " in line or " improvement " in line]
    assert flagged and all("planted" in line for line in flagged)


def test_the_noise_study_table_reprints_from_the_committed_files():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "noise_probe.py"), "table",
                           str(ROOT / "docs" / "examples" / "noise-h200")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "retina-own       step_ms       27.1%   8.40%   5.21%  0.28  1.7e-02" in done.stdout
    assert "retina-same      step_ms        8.5%   4.62%   1.69%  0.12  1.4e-01" in done.stdout
