from __future__ import annotations

import pytest

from detbench.reports.compare import (
    GATE_FAIL,
    GATE_INCOMPARABLE,
    GATE_NONE,
    GATE_PASS,
    IMPROVEMENT,
    LEASE_MOVE_MAX,
    ONLY_BASELINE,
    ONLY_CANDIDATE,
    REGRESSION,
    WITHIN_NOISE,
    WITHIN_THRESHOLD,
    compare_runs,
    environment_changes,
    gate,
    has_regression,
    relative_spread,
    verdict_line,
)
from detbench.reports.load import load_runs, tidy
from tests.reports.generate import make_results


def _compare(run_file, threshold=0.05, base_kwargs=None, cand_kwargs=None, between_run_band=None):
    runs = load_runs(
        [
            ("base", run_file("base.json", seed=7, **(base_kwargs or {}))),
            ("cand", run_file("cand.json", seed=7, **(cand_kwargs or {}))),
        ]
    )
    return compare_runs(tidy(runs), "base", "cand", threshold, between_run_band=between_run_band)


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


def test_drop_beyond_threshold_and_noise_is_a_weak_regression_that_does_not_gate(run_file):
    # one run a side, judged on the per-iteration band: the noise between runs is unmeasured
    comp = _compare(run_file, cand_kwargs={"speed": 0.85})
    ok = _ok_rows(comp)
    assert set(ok["verdict"]) == {REGRESSION} and ok["weak"].all() and not ok["gating"].any()
    assert (ok["band"] < 0.15).all()
    assert not has_regression([comp]) and gate([comp]) == GATE_PASS
    assert len(comp.weak_regressions) == comp.count(REGRESSION)
    assert "; not gating (one repeat a side" in ok["why"].iloc[0]
    line = verdict_line([comp], 0.05)
    assert line.startswith(f"VERDICT: no regressions beyond 5% and the measured noise, {comp.count(REGRESSION)} weak "
                           "regressions not gating (one repeat a side, between-run noise unmeasured; rerun with "
                           "--repeats 3)")


def test_a_stated_between_run_band_makes_the_band_verdicts_gate(run_file):
    comp = _compare(run_file, cand_kwargs={"speed": 0.85}, between_run_band=0.10)
    ok = _ok_rows(comp)
    assert set(ok["verdict"]) == {REGRESSION} and not ok["weak"].any() and ok["gating"].all()
    assert has_regression([comp]) and (ok["band"] >= 0.10).all()
    line = verdict_line([comp], 0.05)
    assert line.startswith(f"VERDICT: {comp.count(REGRESSION)} regressions beyond 5%")
    # a band wider than the move: not a flag
    wide = _compare(run_file, cand_kwargs={"speed": 0.85}, between_run_band=0.30)
    assert set(_ok_rows(wide)["verdict"]) == {WITHIN_NOISE} and not has_regression([wide])
    assert "inside the stated between-run band ±30%" in _ok_rows(wide)["why"].iloc[0]


def test_a_weak_drop_beyond_the_widest_lease_to_lease_move_gates(run_file):
    # 1 / 0.6 = 1.67: a bigger move than any two leases of the same software showed (LEASE_MOVE_MAX, 60 %)
    comp = _compare(run_file, cand_kwargs={"speed": 0.6})
    ok = _ok_rows(comp)
    assert set(ok["verdict"]) == {REGRESSION} and ok["weak"].all() and ok["gating"].all()
    assert has_regression([comp]) and comp.weak_regressions.empty
    assert "beyond the widest lease-to-lease move (60%" in ok["why"].iloc[0]
    # the same move the other way round is an improvement: nothing to gate
    back = _compare(run_file, base_kwargs={"speed": 0.6})
    assert set(_ok_rows(back)["verdict"]) == {IMPROVEMENT} and not has_regression([back])
    # 0.65 is a 54 % move: inside the widest lease-to-lease move, weak, not gating
    assert not has_regression([_compare(run_file, cand_kwargs={"speed": 0.65})])
    assert LEASE_MOVE_MAX == 0.60


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
    from tests.reports.conftest import SMALL
    from tests.reports.generate import make_results, write_benchmark_json

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


def test_a_baseline_cell_missing_in_the_candidate_counts_against_the_gate(run_file):
    runs = load_runs(
        [("base", run_file("b.json", batch_sizes=(1, 8))), ("cand", run_file("c.json", batch_sizes=(8, 16)))]
    )
    comp = compare_runs(tidy(runs), "base", "cand", 0.05)
    verdicts = set(comp.table["verdict"])
    assert {ONLY_BASELINE, ONLY_CANDIDATE} <= verdicts
    assert comp.table["batch_size"].dtype.kind == "i"
    missing = comp.count(ONLY_BASELINE)
    assert missing and len(comp.against_gate) == missing + comp.count(REGRESSION)
    assert has_regression([comp]) and gate([comp]) == GATE_FAIL
    line = verdict_line([comp], 0.05)
    assert f"{missing} baseline cells missing in candidate" in line and "no regressions" not in line


def test_a_candidate_that_kept_one_of_many_cells_fails_the_gate(tmp_path):
    from tests.reports.conftest import SMALL
    from tests.reports.generate import write_benchmark_json

    base = make_results(seed=7, **SMALL)
    kept = [next(r for r in base if r.status == "ok")]
    runs = load_runs(
        [
            ("base", write_benchmark_json(tmp_path / "b.json", base)),
            ("part", write_benchmark_json(tmp_path / "p.json", kept)),
        ]
    )
    comp = compare_runs(tidy(runs), "base", "part", 0.05)
    assert comp.count(REGRESSION) == 0 and comp.count(ONLY_BASELINE) == len(base) - 1
    assert gate([comp]) == GATE_FAIL
    assert verdict_line([comp], 0.05).startswith(f"VERDICT: 0 regressions beyond 5% and the measured noise, "
                                                 f"{len(base) - 1} baseline cells missing in candidate")


def test_runs_that_share_no_cell_are_nothing_comparable(run_file):
    runs = load_runs(
        [("cpu", run_file("cpu.json", models=["ssdlite320_mobilenet_v3_large"])),
         ("h100", run_file("h100.json", models=["fasterrcnn_resnet50_fpn"]))]
    )
    comp = compare_runs(tidy(runs), "cpu", "h100", 0.05)
    assert not comp.comparable and gate([comp]) == GATE_INCOMPARABLE
    line = verdict_line([comp], 0.05)
    assert line.startswith("VERDICT: nothing comparable: h100 and cpu share no cell")
    assert "0 cells compared" not in line


def test_gate_states():
    assert gate([]) == GATE_NONE


def test_a_different_gpu_torch_cuda_or_driver_is_said_in_the_verdict(run_file):
    runs = load_runs(
        [("base", run_file("b.json", seed=7)),
         ("cand", run_file("c.json", seed=7, environment={"gpu": "NVIDIA A100-SXM4-80GB", "torch": "2.99.0"}))]
    )
    base_env, cand_env = runs[0].environment, runs[1].environment
    changes = environment_changes(base_env, cand_env)
    assert changes == [f"GPU {base_env['gpu']} -> NVIDIA A100-SXM4-80GB", f"torch {base_env['torch']} -> 2.99.0"]
    comp = compare_runs(tidy(runs), "base", "cand", 0.05, environments=(base_env, cand_env))
    assert comp.environment_changes == changes
    line = verdict_line([comp], 0.05)
    assert "environment differs (cand vs base): GPU " in line and "torch " in line
    same = compare_runs(tidy(runs), "base", "cand", 0.05, environments=(base_env, base_env))
    assert "environment differs" not in verdict_line([same], 0.05)


def test_threshold_must_be_a_fraction(run_file):
    runs = load_runs([("a", run_file("a.json"))])
    with pytest.raises(ValueError, match="fraction"):
        compare_runs(tidy(runs), "a", "a", 5)
    with pytest.raises(ValueError, match="between-run band"):
        compare_runs(tidy(runs), "a", "a", 0.05, between_run_band=float("nan"))
