from __future__ import annotations

import pytest

from reports.compare import (
    IMPROVEMENT,
    REGRESSION,
    WITHIN_NOISE,
    WITHIN_THRESHOLD,
    compare_runs,
    has_regression,
    relative_spread,
    verdict_line,
)
from reports.load import load_runs, tidy


def _compare(run_file, threshold=0.05, base_kwargs=None, cand_kwargs=None):
    runs = load_runs(
        [
            ("base", run_file("base.json", seed=7, **(base_kwargs or {}))),
            ("cand", run_file("cand.json", seed=7, **(cand_kwargs or {}))),
        ]
    )
    return compare_runs(tidy(runs), "base", "cand", threshold)


def _ok_rows(comp):
    return comp.table[(comp.table["status_base"] == "ok") & (comp.table["status_cand"] == "ok")]


def test_relative_spread_prefers_iqr_then_cov():
    assert relative_spread(2.0, 100.0, 0.5) == pytest.approx(0.02)
    assert relative_spread(None, 100.0, 0.03) == 0.03
    assert relative_spread(None, None, None) is None


def test_small_drop_below_threshold_is_not_flagged(run_file):
    comp = _compare(run_file, cand_kwargs={"speed": 0.97})
    ok = _ok_rows(comp)
    assert ok["ratio"].between(0.96, 0.98).all()
    assert set(ok["verdict"]) == {WITHIN_THRESHOLD}
    assert comp.count(REGRESSION) == 0


def test_drop_beyond_threshold_and_noise_is_a_regression(run_file):
    comp = _compare(run_file, cand_kwargs={"speed": 0.85})
    ok = _ok_rows(comp)
    assert set(ok["verdict"]) == {REGRESSION}
    assert (ok["band"] < 0.15).all()
    assert has_regression([comp])
    line = verdict_line([comp], 0.05)
    assert line.startswith(f"VERDICT: {comp.count(REGRESSION)} regressions beyond 5%")


def test_drop_beyond_threshold_but_within_noise_is_not_flagged(run_file):
    # 8% slower, but both runs have ~11% relative IQR per iteration: the band is ~15%
    comp = _compare(run_file, base_kwargs={"noise": 0.08}, cand_kwargs={"speed": 0.92, "noise": 0.08})
    ok = _ok_rows(comp)
    assert (ok["noise_band"] > 0.08).all()
    assert set(ok["verdict"]) == {WITHIN_NOISE}
    assert not has_regression([comp])
    assert "no regressions" in verdict_line([comp], 0.05)


def test_improvement_beyond_noise(run_file):
    comp = _compare(run_file, cand_kwargs={"speed": 1.2})
    assert set(_ok_rows(comp)["verdict"]) == {IMPROVEMENT}


def test_a_cell_that_now_fails_is_a_regression(run_file, tmp_path):
    from tests.reports.generate import make_results, write_benchmark_json
    from tests.reports.conftest import SMALL

    base = make_results(seed=7, **SMALL)
    cand = make_results(seed=7, **SMALL)
    target = next(r for r in cand if r.status == "ok")
    target.status, target.reason, target.throughput_ips = "oom", "CUDA out of memory", None
    runs = load_runs(
        [
            ("base", write_benchmark_json(tmp_path / "b.json", base)),
            ("cand", write_benchmark_json(tmp_path / "c.json", cand)),
        ]
    )
    comp = compare_runs(tidy(runs), "base", "cand", 0.05)
    row = comp.table.set_index("cell_id").loc[target.cell.id]
    assert row["verdict"] == REGRESSION and row["reason_cand"] == "CUDA out of memory"
    assert comp.count(REGRESSION) == 1


def test_cells_in_only_one_run_are_reported_not_flagged(run_file):
    runs = load_runs(
        [("base", run_file("b.json", batch_sizes=(1, 8))), ("cand", run_file("c.json", batch_sizes=(8, 16)))]
    )
    comp = compare_runs(tidy(runs), "base", "cand", 0.05)
    verdicts = set(comp.table["verdict"])
    assert {"missing in candidate", "new in candidate"} <= verdicts
    assert comp.table["batch_size"].dtype.kind == "i"


def test_threshold_must_be_a_fraction(run_file):
    runs = load_runs([("a", run_file("a.json"))])
    with pytest.raises(ValueError, match="fraction"):
        compare_runs(tidy(runs), "a", "a", 5)
