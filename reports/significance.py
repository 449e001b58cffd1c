"""Is a throughput change real? Confidence intervals and tests for the regression gate (scipy.stats).

Two designs, one verdict vocabulary:

- :func:`judge_unpaired`: two runs measured at different times (or on different machines). Each side gives a
  sample of throughputs, one per *unit*: a repeat of the cell when the run has several (``--repeats``), else
  a timed block. The statistic is the ratio of medians (candidate / baseline) with a bootstrap confidence
  interval; Mann-Whitney U gives the p-value.
- :func:`judge_paired`: an A/B run (``detbench-ab``) that timed baseline and candidate alternately in rounds on
  one machine; each round gives one candidate/baseline ratio, so host drift common to both sides cancels.
  The statistic is the median of the per-round ratios with a bootstrap interval; Wilcoxon's signed-rank
  test on their logarithms gives the p-value.

A change is flagged only when it is larger than the threshold *and* its confidence interval excludes "no
change". A cell whose interval reaches past the threshold without excluding 1 is ``inconclusive``: too noisy
to judge, counted and listed, never silently passed. Fewer than :data:`MIN_UNITS` units on a side is
``inconclusive`` too, and a verdict resting on a single repeat per side is marked ``weak``: blocks of one
run share that run's host state, so they measure within-run noise only.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

REGRESSION = "regression"
IMPROVEMENT = "improvement"
UNCHANGED = "unchanged"
INCONCLUSIVE = "inconclusive"
VERDICTS = (REGRESSION, IMPROVEMENT, UNCHANGED, INCONCLUSIVE)

MIN_UNITS = 3  # per side; below this no interval is believable
CONFIDENCE = 0.95
RESAMPLES = 4000
SEED = 20261127  # fixed: the same files always give the same verdict


@dataclass(frozen=True)
class ChangeEstimate:
    """Candidate throughput relative to the baseline for one cell, with its interval and verdict."""

    verdict: str
    ratio: float | None  # candidate / baseline throughput (> 1: faster); None when not estimable
    low: float | None  # confidence interval of the ratio
    high: float | None
    p_value: float | None
    units_baseline: int
    units_candidate: int
    unit: str  # "repeat", "block" or "round"
    weak: bool  # the evidence is one repeat per side (within-run noise only)
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge_unpaired(baseline: Sequence[float], candidate: Sequence[float], threshold: float, *,
                   unit: str = "block", weak: bool = False) -> ChangeEstimate:
    """Judge two independent samples of throughput (images/s; one value per unit)."""
    _check_threshold(threshold)
    base, cand = _finite_positive(baseline), _finite_positive(candidate)
    if min(len(base), len(cand)) < MIN_UNITS:
        return ChangeEstimate(INCONCLUSIVE, _ratio_of_medians(cand, base), None, None, None, len(base), len(cand),
                              unit, weak, f"too few samples ({len(base)} vs {len(cand)} {unit}s; "
                                          f"need {MIN_UNITS} per side)")
    ratio = _ratio_of_medians(cand, base)
    assert ratio is not None  # both sides hold MIN_UNITS samples (checked above)
    low, high = _interval((base, cand), _ratio_of_medians_statistic)
    p_value = float(stats.mannwhitneyu(cand, base, alternative="two-sided").pvalue)
    return _decide(ratio, low, high, p_value, threshold, len(base), len(cand), unit, weak)


def judge_paired(ratios: Sequence[float], threshold: float) -> ChangeEstimate:
    """Judge per-round candidate/baseline throughput ratios from an interleaved A/B run."""
    _check_threshold(threshold)
    values = _finite_positive(ratios)
    n = len(values)
    if n < MIN_UNITS:
        median = float(np.median(values)) if n else None
        return ChangeEstimate(INCONCLUSIVE, median, None, None, None, n, n, "round", False,
                              f"too few rounds ({n}; need {MIN_UNITS})")
    logs = np.log(values)
    low, high = _interval((values,), _median_statistic)
    p_value = None if np.all(logs == 0) else float(stats.wilcoxon(logs).pvalue)
    return _decide(float(np.median(values)), low, high, p_value, threshold, n, n, "round", False)


def _decide(ratio: float, low: float, high: float, p_value: float | None, threshold: float,
            n_base: int, n_cand: int, unit: str, weak: bool) -> ChangeEstimate:
    interval = f"{low:.3f}-{high:.3f}"
    excludes_one = high < 1.0 or low > 1.0
    beyond = abs(ratio - 1.0) > threshold
    if excludes_one and beyond:
        verdict = REGRESSION if ratio < 1.0 else IMPROVEMENT
        reason = (f"ratio {ratio:.3f}, {CONFIDENCE:.0%} interval {interval} excludes 1 "
                  f"and the change exceeds ±{threshold:.0%}")
    elif 1.0 - threshold <= low and high <= 1.0 + threshold:
        verdict = UNCHANGED
        reason = f"{CONFIDENCE:.0%} interval {interval} lies within ±{threshold:.0%}"
    elif excludes_one:
        verdict = UNCHANGED
        reason = f"a real change ({interval} excludes 1) but smaller than ±{threshold:.0%}"
    else:
        verdict = INCONCLUSIVE
        reason = f"too noisy to judge: {CONFIDENCE:.0%} interval {interval} spans 1 and reaches past ±{threshold:.0%}"
    if weak and verdict in (REGRESSION, IMPROVEMENT):
        reason += " (weak: one repeat per side, between-run noise unmeasured)"
    return ChangeEstimate(verdict, ratio, low, high, p_value, n_base, n_cand, unit, weak, reason)


def relative_spread(values: Sequence[float]) -> float | None:
    """Interquartile range over median of a sample (the between-block or between-repeat noise), or None."""
    data = _finite_positive(values)
    if len(data) < 2:
        return None
    q1, median, q3 = np.percentile(data, [25, 50, 75])
    return float((q3 - q1) / median) if median > 0 else None


# --- helpers -----------------------------------------------------------------------------------------------


def _check_threshold(threshold: float) -> None:
    if not (isinstance(threshold, (int, float)) and 0 <= threshold < 1):
        raise ValueError(f"threshold must be a fraction in [0, 1), got {threshold!r}")


def _finite_positive(values: Sequence[float]) -> np.ndarray:
    data = np.asarray([float(v) for v in values if v is not None], dtype=float)
    return data[np.isfinite(data) & (data > 0)]


def _ratio_of_medians(cand: np.ndarray, base: np.ndarray) -> float | None:
    if not len(cand) or not len(base):
        return None
    return float(np.median(cand) / np.median(base))


def _ratio_of_medians_statistic(base: np.ndarray, cand: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(cand, axis=axis) / np.median(base, axis=axis)


def _median_statistic(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(values, axis=axis)


def _interval(data: tuple[np.ndarray, ...], statistic: Any) -> tuple[float, float]:
    """Percentile bootstrap interval (BCa is unstable for medians of small samples with ties)."""
    if all(np.all(d == d[0]) for d in data):  # no spread at all: the interval is the point
        point = float(statistic(*data))
        return point, point
    result = stats.bootstrap(data, statistic, n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
                             method="percentile", vectorized=True, **_rng_argument())
    low, high = result.confidence_interval
    return float(low), float(high)


def _rng_argument() -> dict[str, Any]:
    # scipy >= 1.15 calls the generator `rng`; older releases `random_state`
    name = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    return {name: np.random.default_rng(SEED)}
