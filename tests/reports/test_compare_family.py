"""``detbench-report --fail-on-regression`` and ``detbench-history compare`` judged by the one judge
(detbench.bench.core.stats.judge): the cells of one verdict together, Holm across them, the threshold as floor. Seeded,
in-process; the thousands-of-runs figures are scripts/judge_simulate.py's (docs/ab.md)."""

from __future__ import annotations

import numpy as np

from detbench.bench.core.schema import Cell
from detbench.reports.compare import IMPROVEMENT, REGRESSION, gate
from detbench.reports.history import analysis
from tests.reports.test_compare_blocks import compare_files, verdicts
from tests.reports.test_compare_repeats import repeated

CELLS = [Cell("fasterrcnn_resnet50_fpn", "infer", "eager", "fp32", b, 1) for b in range(1, 16)]


def test_fifteen_cells_of_the_same_software_on_repeats_flag_nothing_and_a_real_drop_is_found(tmp_path):
    rng = np.random.default_rng(11)
    base = [repeated(c, list(40.0 * np.exp(rng.normal(0, 0.03, 3))), seed=i) for i, c in enumerate(CELLS)]
    cand = [repeated(c, list(40.0 * np.exp(rng.normal(0, 0.03, 3))), seed=50 + i) for i, c in enumerate(CELLS)]
    forward, _ = compare_files(tmp_path, base, cand)
    assert not [v for v in verdicts(forward).values() if v in (REGRESSION, IMPROVEMENT)]
    # judged together, not one by one: the p-values are Holm's over the 15 cells
    assert forward.table["p_value"].notna().all() and forward.table["why"].str.contains("over 15 cell").sum() >= 10
    cand[0] = repeated(CELLS[0], [30.0, 30.3, 29.8], seed=99)
    forward, _ = compare_files(tmp_path, base, cand)
    assert verdicts(forward)[CELLS[0].id] == REGRESSION and gate([forward]) == "fail"


def history_bands(rng: np.random.Generator, drop: float = 0.0) -> dict[str, tuple[float, analysis.Band | None]]:
    out = {}
    for c in range(15):
        series = 100.0 * np.exp(rng.normal(0.0, 0.03, 9))
        new = series[-1] * (1 - drop if c == 0 else 1.0)
        out[str(c)] = (float(new), analysis.noise_band(list(series[:-1])))
    return out


def test_history_compare_judges_a_runs_cells_together_and_finds_a_real_drop():
    rng = np.random.default_rng(12)
    family = single = 0
    for _ in range(40):
        bands = history_bands(rng)
        family += any(v.verdict == analysis.REGRESSION for v in analysis.judge_cells(bands, 0.05).values())
        single += any(analysis.judge(v, b, 0.05).verdict == analysis.REGRESSION for v, b in bands.values())
    assert family <= 5 and single > family  # the former per-cell rule fails ~30 % of these runs
    verdicts_ = analysis.judge_cells(history_bands(np.random.default_rng(13), drop=0.2), 0.05)
    assert verdicts_["0"].verdict == analysis.REGRESSION and "Holm p" in verdicts_["0"].reason
    assert not [c for c, v in verdicts_.items() if c != "0" and v.verdict == analysis.REGRESSION]


def test_a_weak_band_keeps_its_verdict_and_takes_no_share():
    verdict = analysis.judge_cells({"new": (90.0, analysis.noise_band([100.0, 101.0]))}, 0.05)["new"]
    assert verdict.verdict == analysis.WEAK
