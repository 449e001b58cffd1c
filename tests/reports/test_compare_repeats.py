"""The gate on runs made with ``--repeats``: the between-repeat spread is what the test sees (issue 15)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detbench.bench.core.repeats import merge_repeats, tag_repeat
from detbench.bench.core.schema import Cell, CellResult
from detbench.reports.cli import EXIT_REGRESSION, main
from detbench.reports.compare import (
    BASIS_BLOCKS,
    BASIS_BLOCKS_BAND,
    BASIS_REPEATS,
    GATE_PASS,
    IMPROVEMENT,
    INCONCLUSIVE,
    REGRESSION,
    RunEvidence,
    gate,
)
from detbench.reports.load import load_runs
from tests.reports.generate import write_benchmark_json
from tests.reports.test_compare_blocks import GPU_BOUND, cell_result, compare_files, verdicts


def repeated(cell: Cell, repeat_ips: list[float], *, blocks: int = 4, spread: float = 0.005,
             seed: int = 0) -> CellResult:
    """A cell measured once per entry of ``repeat_ips`` (that repeat's host state), merged as the suite does."""
    repeats = [tag_repeat(cell_result(cell, ips, blocks=blocks, spread=spread, seed=seed * 100 + r), r)
               for r, ips in enumerate(repeat_ips)]
    return merge_repeats(repeats)


def host_states(seed: int, n: int = 5, sd: float = 0.12) -> list[float]:
    """Throughput of one repeat per host state: the same software, the host moving ~12% between moments."""
    return list(40.0 * (1 + np.random.default_rng(seed).normal(0, sd, n)))


def test_equal_distributions_with_a_big_host_shift_between_moments_flag_nothing(tmp_path):
    base, cand = host_states(1), host_states(2)
    assert abs(np.median(cand) / np.median(base) - 1) > 0.05  # the two runs' medians differ beyond the threshold
    for comp in compare_files(tmp_path, [repeated(GPU_BOUND, base, seed=1)], [repeated(GPU_BOUND, cand, seed=2)]):
        row = comp.table.iloc[0]
        assert row["basis"] == BASIS_REPEATS and not row["weak"] and row["repeats_base"] == 5
        assert row["verdict"] not in (REGRESSION, IMPROVEMENT) and gate([comp]) == GATE_PASS
        assert row["noise_band"] > 0.1  # the between-repeat spread, not the tight blocks
    # one repeat per side, taken at two moments the host differed (tight blocks), would be flagged
    one = compare_files(tmp_path, [cell_result(GPU_BOUND, max(base), seed=1)],
                        [cell_result(GPU_BOUND, min(cand), seed=2)])
    assert verdicts(one[0])[GPU_BOUND.id] in (REGRESSION, IMPROVEMENT) and one[0].table.iloc[0]["weak"]


def test_a_real_ten_percent_change_is_flagged_on_repeats_in_both_file_orders(tmp_path):
    base = host_states(3, sd=0.02)
    cand = [0.9 * v for v in host_states(4, sd=0.02)]
    forward, backward = compare_files(tmp_path, [repeated(GPU_BOUND, base, seed=3)],
                                      [repeated(GPU_BOUND, cand, seed=4)])
    assert verdicts(forward) == {GPU_BOUND.id: REGRESSION} and verdicts(backward) == {GPU_BOUND.id: IMPROVEMENT}
    row = forward.table.iloc[0]
    assert row["basis"] == BASIS_REPEATS and not row["weak"] and row["ratio"] == pytest.approx(0.9, abs=0.03)
    assert row["ci_high"] < 0.95 and forward.repeats == (5, 5)
    assert "baseline 5, candidate 5; verdicts test the between-repeat spread" in forward.repeats_note


def test_a_two_percent_change_on_repeats_is_not_flagged(tmp_path):
    base, cand = host_states(5, sd=0.02), [0.98 * v for v in host_states(6, sd=0.02)]
    for comp in compare_files(tmp_path, [repeated(GPU_BOUND, base, seed=5)], [repeated(GPU_BOUND, cand, seed=6)]):
        assert verdicts(comp)[GPU_BOUND.id] not in (REGRESSION, IMPROVEMENT)


def test_too_few_samples_are_inconclusive(tmp_path):
    # two repeats of one block each: two blocks per side, below the minimum of three
    forward, _ = compare_files(tmp_path, [repeated(GPU_BOUND, [40.0, 40.5], blocks=1, seed=7)],
                               [repeated(GPU_BOUND, [30.0, 30.5], blocks=1, seed=8)])
    row = forward.table.iloc[0]
    assert row["verdict"] == INCONCLUSIVE and "too few samples" in row["why"] and not row["weak"]


def test_with_two_repeats_a_block_flag_inside_the_between_repeat_spread_is_inconclusive(tmp_path):
    # the baseline's second repeat (2 short blocks) ran 15% slower: the pooled blocks hide it, the repeats do not
    base = merge_repeats([tag_repeat(cell_result(GPU_BOUND, 40.0, blocks=10, seed=9), 0),
                          tag_repeat(cell_result(GPU_BOUND, 34.0, blocks=2, seed=19), 1)])
    cand = repeated(GPU_BOUND, [36.0, 36.2], blocks=6, seed=10)
    forward, _ = compare_files(tmp_path, [base], [cand])
    row = forward.table.iloc[0]
    assert row["basis"] == BASIS_BLOCKS_BAND and row["verdict"] == INCONCLUSIVE
    assert "between-repeat spread" in row["why"]
    clear, _ = compare_files(tmp_path, [repeated(GPU_BOUND, [40.0, 40.4], blocks=6, seed=11)],
                             [repeated(GPU_BOUND, [34.0, 34.2], blocks=6, seed=12)])
    assert verdicts(clear)[GPU_BOUND.id] == REGRESSION and not clear.table.iloc[0]["weak"]


def test_a_single_repeat_on_one_side_keeps_the_verdict_weak(tmp_path):
    forward, _ = compare_files(tmp_path, [repeated(GPU_BOUND, host_states(13, sd=0.01), seed=13)],
                               [cell_result(GPU_BOUND, 34.0, seed=14)])
    row = forward.table.iloc[0]
    assert row["basis"] == BASIS_BLOCKS and row["weak"] and forward.repeats == (5, 1)
    assert "weak: one repeat on a side" in forward.repeats_note


def test_repeats_are_pooled_per_repeat_from_the_merged_result(tmp_path):
    result = repeated(GPU_BOUND, [40.0, 30.0, 50.0], blocks=5, spread=0.0)
    assert result.measurement.repeats == 3 and len(result.measurement.blocks) == 15
    assert result.throughput_ips == pytest.approx(40.0)  # median over all 15 blocks
    runs = load_runs([("r", write_benchmark_json(tmp_path / "r.json", [result]))])
    evidence = RunEvidence.of(runs[0])
    assert evidence.repeat_ips[GPU_BOUND.id] == pytest.approx([40.0, 30.0, 50.0]) and evidence.repeats == 3
    assert len(evidence.block_ips[GPU_BOUND.id]) == 15


def test_the_report_header_and_comparison_json_state_the_repeats_per_side(tmp_path, capsys):
    base = write_benchmark_json(tmp_path / "a.json", [repeated(GPU_BOUND, host_states(3, sd=0.02), seed=3)])
    cand = write_benchmark_json(tmp_path / "b.json", [repeated(GPU_BOUND, [0.9 * v for v in host_states(4, sd=0.02)],
                                                               seed=4)])
    out = tmp_path / "out"
    assert main([str(base), str(cand), "--out", str(out), "--fail-on-regression"]) == EXIT_REGRESSION
    assert "repeats (b vs a): baseline 5, candidate 5" in capsys.readouterr().out
    assert "> repeats (b vs a): baseline 5, candidate 5" in (out / "summary.md").read_text()
    assert "repeats (b vs a): baseline 5, candidate 5; verdicts test" in (out / "report.html").read_text()
    data = json.loads((out / "comparison.json").read_text())
    assert data["gate"] == "fail" and data["comparisons"][0]["regressions"] == [GPU_BOUND.id]
    assert data["comparisons"][0]["repeats"] == {"baseline": 5, "candidate": 5}
    assert data["comparisons"][0]["weak_regressions_not_gating"] == []


def test_three_repeats_a_side_still_fail_the_gate_on_a_real_regression(tmp_path, capsys):
    # the strong form across leases: --repeats 3 on both runs, a 12% loss with the host moving ~2% between repeats
    base = write_benchmark_json(tmp_path / "a.json", [repeated(GPU_BOUND, [40.0, 40.8, 39.5], seed=21)])
    cand = write_benchmark_json(tmp_path / "b.json", [repeated(GPU_BOUND, [35.2, 35.9, 34.8], seed=22)])
    assert main([str(base), str(cand), "--out", str(tmp_path / "o"), "--fail-on-regression"]) == EXIT_REGRESSION
    stdout = capsys.readouterr().out
    assert stdout.splitlines()[-1].startswith("VERDICT: 1 regression beyond 5% and the measured noise")
    assert "weak" not in stdout.splitlines()[-1]
    data = json.loads((tmp_path / "o" / "comparison.json").read_text())
    assert data["gate"] == "fail" and data["comparisons"][0]["repeats"] == {"baseline": 3, "candidate": 3}
