"""The one judge (detbench.bench.core.stats.judge): evidence per design, Holm across the cells, the floor, the
detectable change, the sequential looks' alpha, and the simulation harness kept honest (a planted change is found; pure
noise flags within bounds). Everything in-process, seeded, in well under a second a test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detbench.bench.core.stats import judge
from detbench.bench.core.stats.judge import simulate
from detbench.bench.core.stats.significance import implausible_throughput, relative_spread


def pairs_of(rng: np.random.Generator, ratio: float, pairs: int = 8, rounds: int = 6, block_sd: float = 0.03,
             pair_sd: float = 0.01, nu: float | None = None) -> list[list[float]]:
    out = []
    for _ in range(pairs):
        offset = rng.normal(0, pair_sd)
        noise = rng.standard_t(nu, rounds) * block_sd if nu else rng.normal(0, block_sd, rounds)
        out.append(list(np.exp(math.log(ratio) + offset + noise)))
    return out


# --- evidence ------------------------------------------------------------------------------------------------


def test_pair_evidence_is_the_mean_of_the_pair_medians_with_pairs_minus_one_degrees_of_freedom():
    e = judge.pair_evidence([[1.0, 1.1, 0.9], [math.e, math.e, 1.0]])
    assert e.estimate == pytest.approx((0.0 + 1.0) / 2)
    assert e.df == 1 and e.units == 2 and e.se == pytest.approx(np.std([0.0, 1.0], ddof=1) / math.sqrt(2))


def test_one_stalled_round_does_not_move_its_pairs_median():
    clean = judge.pair_evidence([[1.0, 1.01, 0.99, 1.0], [1.0, 1.0, 1.02, 0.98]])
    stalled = judge.pair_evidence([[1.0, 1.01, 0.99, 0.3], [1.0, 1.0, 1.02, 0.98]])
    assert stalled.estimate == pytest.approx(clean.estimate, abs=0.006)


def test_one_pair_is_not_judgeable_and_says_why():
    e = judge.pair_evidence([[0.9, 0.91, 0.9]])
    assert not e.judgeable and "needs 2 pairs" in e.note


def test_implausible_values_are_set_aside_and_said():
    e = judge.pair_evidence([[1.0, 1e300, 0.99], [1.0, float("nan"), 1.01], []])
    assert e.units == 2 and "2 implausible ratios set aside" in e.note
    two = judge.two_sample_evidence([40.0, 41.0, 39.0, 0.0], [40.0, 41.0, 8e303, 39.5], "repeat")
    assert two.units == 3 and "2 implausible throughput(s) set aside" in two.note


def test_two_sample_evidence_is_welch_on_logs():
    e = judge.two_sample_evidence([100.0, 102.0, 98.0], [90.0, 91.0, 89.0, 90.5], "repeat")
    assert e.estimate == pytest.approx(np.mean(np.log([90.0, 91.0, 89.0, 90.5])) - np.mean(np.log([100, 102, 98])))
    assert 2 < e.df < 5


def test_prediction_evidence_widens_by_the_level_uncertainty():
    e = judge.prediction_evidence(95.0, math.log(100.0), 0.02, 9, 10)
    assert e.estimate == pytest.approx(math.log(0.95)) and e.se == pytest.approx(0.02 * math.sqrt(1.1))


# --- the family ------------------------------------------------------------------------------------------------


def test_holm_adjusts_step_down_and_keeps_order():
    assert judge.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert judge.holm([]) == []


def test_a_planted_ten_percent_slowdown_is_a_regression_and_the_others_are_not_flagged():
    rng = np.random.default_rng(1)
    evidence = {f"cell{i}": judge.pair_evidence(pairs_of(rng, 1.0)) for i in range(7)}
    evidence["planted"] = judge.pair_evidence(pairs_of(rng, 1 / 1.1))
    verdicts = judge.decide(evidence, 0.02)
    assert verdicts["planted"].verdict == judge.REGRESSION
    assert verdicts["planted"].low < 1 / 1.1 < verdicts["planted"].high
    assert all(v.verdict not in (judge.REGRESSION, judge.IMPROVEMENT) for c, v in verdicts.items() if c != "planted")
    assert all(v.cells == 8 and 0 < v.detectable < 0.1 for v in verdicts.values())


def test_a_real_change_within_the_floor_is_unchanged_not_flagged():
    rng = np.random.default_rng(2)
    verdict = judge.decide({"c": judge.pair_evidence(pairs_of(rng, 0.99, block_sd=0.002, pair_sd=0.001))}, 0.02)["c"]
    assert verdict.verdict == judge.UNCHANGED and "within the 2% floor" in verdict.reason


def test_an_interval_within_the_floor_is_unchanged_and_a_wide_one_inconclusive():
    rng = np.random.default_rng(3)
    tight = judge.pair_evidence(pairs_of(rng, 1.0, block_sd=0.002, pair_sd=0.001))
    wide = judge.pair_evidence(pairs_of(rng, 1.0, block_sd=0.2, pair_sd=0.05))
    verdicts = judge.decide({"tight": tight, "wide": wide}, 0.02)
    assert verdicts["tight"].verdict == judge.UNCHANGED
    assert verdicts["wide"].verdict == judge.INCONCLUSIVE and "could see a slowdown of" in verdicts["wide"].reason


def test_improvements_are_their_own_family():
    rng = np.random.default_rng(4)
    verdicts = judge.decide({"faster": judge.pair_evidence(pairs_of(rng, 1.1)),
                             "slower": judge.pair_evidence(pairs_of(rng, 1 / 1.1))}, 0.02)
    assert verdicts["faster"].verdict == judge.IMPROVEMENT and verdicts["slower"].verdict == judge.REGRESSION


def test_cells_without_evidence_are_inconclusive_and_take_no_share_of_alpha():
    rng = np.random.default_rng(5)
    verdicts = judge.decide({"lone": judge.pair_evidence([[0.5, 0.5]]),
                             "c": judge.pair_evidence(pairs_of(rng, 1.0))}, 0.02)
    assert verdicts["lone"].verdict == judge.INCONCLUSIVE and verdicts["lone"].reason.startswith("not judged")
    assert verdicts["c"].cells == 1


def test_no_spread_at_all_is_exact():
    verdicts = judge.decide({"same": judge.pair_evidence([[1.0] * 3] * 3),
                             "slow": judge.pair_evidence([[0.8] * 3] * 3)}, 0.02)
    assert verdicts["same"].verdict == judge.UNCHANGED and verdicts["slow"].verdict == judge.REGRESSION


@pytest.mark.parametrize("floor", [-0.1, 1.0, True, "0.1"])
def test_a_bad_floor_is_one_line(floor):
    with pytest.raises(ValueError, match=r"the floor \(--threshold\) must be a fraction in \[0, 1\)"):
        judge.decide({}, floor)


def test_the_detectable_change_grows_with_noise_and_cells_and_never_undercuts_the_floor():
    small = judge.family.detectable_change(0.01, 7, 1, 0.02)
    assert judge.family.detectable_change(0.02, 7, 1, 0.02) > small
    assert judge.family.detectable_change(0.01, 7, 8, 0.02) > small
    assert judge.family.detectable_change(1e-6, 7, 8, 0.05) > 0.05


def test_two_looks_split_alpha_a_fifth_then_the_rest():
    assert judge.look_alpha(0.05, 1) == 0.05
    assert judge.look_alpha(0.05, 2, 1) + judge.look_alpha(0.05, 2) == pytest.approx(0.05)
    assert judge.look_alpha(0.05, 2, 1) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="looks must be 1 or 2"):
        judge.look_alpha(0.05, 3)


# --- the simulation harness, kept honest -------------------------------------------------------------------------


NOISE = simulate.Noise(tuple(simulate.Components(0.027, 0.012, f"c{i}") for i in range(8)), nu=1.2, rho=0.1,
                       pair_level_sd=0.2)


def test_pure_noise_false_flags_stay_within_the_family_level():
    result = simulate.simulate(NOISE, simulate.Design(8, 6, 0.25), runs=1500, seed=7)
    assert result.false_flag_rate < 0.05 + 3 * math.sqrt(0.05 * 0.95 / 1500)
    assert result.false_flag_rate > 0.001  # a judge that never flags would pass the line above
    assert result.false_regression_rate <= result.false_flag_rate


def test_a_planted_change_is_found_and_one_below_the_detectable_change_is_not_reliably():
    plants = [0.10, 0.01] + [0.0] * 6
    result = simulate.simulate(NOISE, simulate.Design(8, 6, 0.25), plants, runs=1500, seed=8)
    assert result.flag_rate[0] > 0.9 and result.flag_rate[1] < 0.5
    assert 0.02 < result.detectable[2] < 0.10
    two_looks = simulate.simulate(NOISE, simulate.Design(8, 6, 0.25, looks=2), plants, runs=1500, seed=8)
    assert two_looks.flag_rate[0] > 0.85 and two_looks.stopped_early > 0.0


def test_the_simulated_flag_rate_matches_the_judge_run_cell_by_cell():
    """The harness's vectorised rule is the product's: decide() on the same draws flags the same cells."""
    rng = np.random.default_rng(9)
    noise = simulate._noise(rng, NOISE, np.full(8, 0.03), np.full(8, 0.01), 40, 8, 6, 0.25)
    noise[:, 0] -= math.log(1.06)
    flags, _, _, _ = simulate._judge(noise, 0.05, 0.02)
    for run in range(40):
        evidence = {str(c): judge.pair_evidence(np.exp(noise[run, c]).tolist()) for c in range(8)}
        verdicts = judge.decide(evidence, 0.02)
        assert [verdicts[str(c)].verdict == judge.REGRESSION for c in range(8)] == flags[run].tolist()


def test_fit_recovers_heavy_tails_from_rounds():
    assert simulate.fit_nu(simulate.tail_share(1.2)) == pytest.approx(1.2, rel=0.02)
    assert simulate.fit_nu(0.0) == 200.0


# --- what stays in significance ---------------------------------------------------------------------------------


def test_relative_spread_is_iqr_over_median():
    assert relative_spread([90.0, 100.0, 110.0]) == pytest.approx(0.10)
    assert relative_spread([1.0]) is None


def test_implausible_throughputs_are_named():
    assert implausible_throughput(0.0) == "throughput 0 images/s is not positive"
    assert "beyond the plausible" in implausible_throughput(1e12)
    assert implausible_throughput(120.0) is None
