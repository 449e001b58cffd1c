"""The gate's statistics on synthetic samples: host shifts are not regressions, real changes are."""

from __future__ import annotations

import numpy as np
import pytest

from reports import significance as sig

RNG = np.random.default_rng(7)


def noisy(center: float, n: int, spread: float = 0.01) -> list[float]:
    return list(center * (1 + RNG.normal(0, spread, n)))


def test_a_real_ten_percent_slowdown_is_a_regression_in_both_directions():
    base, cand = noisy(100, 10), noisy(90, 10)
    forward = sig.judge_unpaired(base, cand, threshold=0.05)
    backward = sig.judge_unpaired(cand, base, threshold=0.05)
    assert forward.verdict == sig.REGRESSION and forward.high < 1.0
    assert backward.verdict == sig.IMPROVEMENT and backward.low > 1.0
    assert forward.p_value is not None and forward.p_value < 0.01


def test_equal_software_with_the_host_switching_states_between_repeats_is_not_flagged():
    # each repeat lands in one of two host states (fast 100 img/s, slow 70 img/s), in different proportions
    base = [100.0, 71.0, 99.0, 70.0, 101.0]
    cand = [70.5, 100.5, 69.0, 72.0, 99.5]
    estimate = sig.judge_unpaired(base, cand, threshold=0.05, unit="repeat")
    assert estimate.verdict in (sig.INCONCLUSIVE, sig.UNCHANGED)
    assert estimate.verdict != sig.REGRESSION


def test_too_few_samples_is_inconclusive_never_a_verdict():
    estimate = sig.judge_unpaired([100.0, 101.0], [50.0, 51.0], threshold=0.05)
    assert estimate.verdict == sig.INCONCLUSIVE
    assert "too few samples" in estimate.reason
    assert sig.judge_paired([0.5, 0.5], threshold=0.05).verdict == sig.INCONCLUSIVE


def test_a_change_inside_the_threshold_is_unchanged_even_when_real():
    estimate = sig.judge_unpaired(noisy(100, 12, 0.002), noisy(98, 12, 0.002), threshold=0.05)
    assert estimate.verdict == sig.UNCHANGED
    assert estimate.high < 1.0  # real, but small


def test_a_weak_verdict_says_so():
    estimate = sig.judge_unpaired(noisy(100, 8), noisy(80, 8), threshold=0.05, weak=True)
    assert estimate.verdict == sig.REGRESSION and estimate.weak
    assert "one repeat per side" in estimate.reason


def test_paired_rounds_cancel_host_drift_common_to_both_sides():
    host = np.array([1.0, 0.7, 1.0, 0.65, 0.95, 0.7])  # the host moves 35 % between rounds
    base = 100 * host
    cand = 90 * host * (1 + RNG.normal(0, 0.005, host.size))
    estimate = sig.judge_paired(list(cand / base), threshold=0.05)
    assert estimate.verdict == sig.REGRESSION
    assert estimate.unit == "round" and 0.88 < estimate.ratio < 0.92


def test_paired_two_percent_change_in_noise_is_not_a_regression():
    ratios = list(0.98 * (1 + RNG.normal(0, 0.03, 8)))
    assert sig.judge_paired(ratios, threshold=0.05).verdict in (sig.INCONCLUSIVE, sig.UNCHANGED)


def test_identical_samples_give_a_point_interval():
    estimate = sig.judge_paired([1.0, 1.0, 1.0, 1.0], threshold=0.05)
    assert estimate.verdict == sig.UNCHANGED and estimate.low == estimate.high == 1.0


def test_non_finite_and_non_positive_values_are_dropped():
    estimate = sig.judge_unpaired([100.0, float("nan"), 0.0, -1.0], [100.0, 99.0, 101.0], threshold=0.05)
    assert estimate.units_baseline == 1 and estimate.verdict == sig.INCONCLUSIVE


@pytest.mark.parametrize("threshold", [-0.1, 1.0, float("nan")])
def test_bad_threshold_is_one_line(threshold):
    with pytest.raises(ValueError, match="threshold must be a fraction"):
        sig.judge_unpaired([1.0] * 3, [1.0] * 3, threshold=threshold)


def test_relative_spread_is_iqr_over_median():
    assert sig.relative_spread([90.0, 100.0, 110.0]) == pytest.approx(0.10)
    assert sig.relative_spread([1.0]) is None
