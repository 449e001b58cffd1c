"""Is a throughput change real? Confidence intervals and tests for the regression gate (scipy.stats).

Three designs, one verdict vocabulary:

- :func:`judge_unpaired`: two runs measured at different times (or on different machines). Each side gives a
  sample of throughputs, one per *unit*: a repeat of the cell when the run has several (``--repeats``), else
  a timed block. The statistic is the ratio of medians (candidate / baseline) with a bootstrap confidence
  interval; Mann-Whitney U gives the p-value.
- :func:`judge_paired`: an A/B run (``detbench-ab``) that timed baseline and candidate alternately in rounds on
  one machine; each round gives one candidate/baseline ratio, so host drift common to both sides cancels.
  The statistic is the median of the per-round ratios with a bootstrap interval; Wilcoxon's signed-rank
  test on their logarithms gives the p-value.
- :func:`judge_nested`: an A/B run with several fresh *worker pairs* (one baseline and one candidate worker each,
  long-lived), each pair timing the two sides alternately round after round: rounds nested in pairs. A fresh
  process can sit a few % off another of the same software (the per-process offset), so rounds of one pair are
  not independent evidence about the software; the pair is the unit for that noise. A one-way random-effects
  analysis of the log ratios splits block-to-block noise from the pair offset (:class:`NoiseSplit`), and the
  "sometimes-pool" rule picks the error term of the t interval.

A change is flagged only when it is larger than the threshold *and* its confidence interval excludes "no
change". A cell whose interval reaches past the threshold without excluding 1 is ``inconclusive``: too noisy
to judge, counted and listed, never silently passed. Fewer than :data:`MIN_UNITS` units on a side is
``inconclusive`` too, and a verdict resting on a single repeat per side is marked ``weak``: blocks of one
run share that run's host state, so they measure within-run noise only.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np


def _stats() -> Any:
    """scipy.stats, imported at first use: it takes most of a CLI's start-up (0.5 s, seconds on a loaded runner),
    a window in which a Ctrl-C could only end in Python's traceback."""
    from scipy import stats  # noqa: PLC0415

    return stats


REGRESSION = "regression"
IMPROVEMENT = "improvement"
UNCHANGED = "unchanged"
INCONCLUSIVE = "inconclusive"
VERDICTS = (REGRESSION, IMPROVEMENT, UNCHANGED, INCONCLUSIVE)

MIN_UNITS = 3  # per side; below this no interval is believable
CONFIDENCE = 0.95
RESAMPLES = 4000
SEED = 20261127  # fixed: the same files always give the same verdict
POOL_ALPHA = 0.25  # sometimes-pool: preliminary F test level (Bozivich, Bancroft & Hartley 1956)
HICCUP_SCALES = 5.0  # a round further than this many robust SDs from its pair's median is a host stall
HICCUP_SHARE = 0.10  # ... but at most this share of the rounds is set aside (more is the noise itself)
# Figures no cell of this suite can produce (a corrupt or hand-edited file): never judged. reports.compare marks a
# cell carrying one invalid (named, out of the verdicts); the judges below set such units aside and say so.
MAX_THROUGHPUT_IPS = 1e7  # images/s: ~100x the fastest small-image classifier at a large batch on an H100
MAX_RATIO = 1e3  # a candidate 1000x faster or slower than its baseline on the same cell is a broken figure


@dataclass(frozen=True)
class NoiseSplit:
    """How the noise of a nested A/B (rounds within worker pairs) splits, on log ratios; see :func:`judge_nested`."""

    pairs: int  # worker pairs judged on
    rounds: int  # rounds in all pairs together (after setting hiccups aside)
    within_sd: float | None  # SD of per-round log ratios around their pair's mean (block-to-block noise)
    between_sd: float | None  # SD of the pair effect beyond what within-pair noise explains (per-process offset),
    # >= 0; None with one pair
    between_p: float | None  # F test (scipy.stats) that pair means differ
    pooled: bool  # between-pair term pooled into the error (sometimes-pool rule)
    df: int  # degrees of freedom of the interval
    trimmed: int = 0  # hiccup rounds set aside (HICCUP_SCALES robust SDs from their pair's median)


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
    noise: NoiseSplit | None = None  # judge_nested only: the within / between-pair split

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # noise becomes a nested dict (or None)


def judge_unpaired(baseline: Sequence[float], candidate: Sequence[float], threshold: float, *,
                   unit: str = "block", weak: bool = False) -> ChangeEstimate:
    """Judge two independent samples of throughput (images/s; one value per unit)."""
    _check_threshold(threshold)
    base, cand = _plausible(baseline, MAX_THROUGHPUT_IPS), _plausible(candidate, MAX_THROUGHPUT_IPS)
    aside = _set_aside_note(len(baseline) + len(candidate) - len(base) - len(cand), "throughput", MAX_THROUGHPUT_IPS)
    return _noted(_judge_unpaired(base, cand, threshold, unit, weak), aside)


def _judge_unpaired(base: np.ndarray, cand: np.ndarray, threshold: float, unit: str, weak: bool) -> ChangeEstimate:
    if min(len(base), len(cand)) < MIN_UNITS:
        return ChangeEstimate(INCONCLUSIVE, _ratio_of_medians(cand, base), None, None, None, len(base), len(cand),
                              unit, weak, f"too few samples ({len(base)} vs {len(cand)} {unit}s; "
                                          f"need {MIN_UNITS} per side)")
    ratio = _ratio_of_medians(cand, base)
    assert ratio is not None  # both sides hold MIN_UNITS samples (checked above)
    low, high = _interval((base, cand), _ratio_of_medians_statistic)
    p_value = float(_stats().mannwhitneyu(cand, base, alternative="two-sided").pvalue)
    return _decide(ratio, low, high, p_value, threshold, len(base), len(cand), unit, weak)


def judge_paired(ratios: Sequence[float], threshold: float) -> ChangeEstimate:
    """Judge per-round candidate/baseline throughput ratios from an interleaved A/B run."""
    _check_threshold(threshold)
    values = _plausible_ratios(ratios)
    aside = _set_aside_note(len(ratios) - len(values), "ratio", MAX_RATIO)
    return _noted(_judge_paired(values, threshold), aside)


def _judge_paired(values: np.ndarray, threshold: float) -> ChangeEstimate:
    n = len(values)
    if n < MIN_UNITS:
        median = float(np.median(values)) if n else None
        return ChangeEstimate(INCONCLUSIVE, median, None, None, None, n, n, "round", False,
                              f"too few rounds ({n}; need {MIN_UNITS})")
    logs = np.log(values)
    low, high = _interval((values,), _median_statistic)
    p_value = None if np.all(logs == 0) else float(_stats().wilcoxon(logs).pvalue)
    return _decide(float(np.median(values)), low, high, p_value, threshold, n, n, "round", False)


def judge_nested(pairs: Sequence[Sequence[float]], threshold: float) -> ChangeEstimate:
    """Judge per-round candidate/baseline throughput ratios from several worker pairs (``pairs[p]``: pair p's rounds).

    Model on logs: ``d_pr = mu + u_p + e_pr``, ``u_p`` the pair's (random) per-process offset, ``e_pr`` the
    round's block noise. ``mu`` is estimated by the unweighted mean of the pair means: each pair is one draw of
    the offset, so a pair that ran more rounds does not count for more pairs (with equal round counts this is the
    mean of all rounds). A one-way ANOVA gives the within-pair mean square (block noise) and the between-pair one;
    the pair-effect SD comes from their difference (``n0``, the usual effective round count for unequal pairs).

    The error term follows the *sometimes-pool* rule (Bozivich, Bancroft & Hartley 1956): a preliminary F test
    of the pair effect at ``POOL_ALPHA`` = 0.25. Significant: the standard error comes from the variation of the
    pair means (``sd(m_p) / sqrt(P)``, ``P - 1`` degrees of freedom): the offsets are real and only more pairs
    narrow the interval. Not significant: the between-pair term is pooled into the error (every round's deviation
    from the grand mean, ``N - 1`` degrees of freedom). The interval is ``exp(mu ± t * se)`` (``scipy.stats.t``),
    the p-value the t test of ``mu = 0``, and the verdict that of :func:`_decide` (ratio ``exp(mu)``).

    One pair: rounds only (``n - 1`` degrees of freedom), marked ``weak`` with the reason saying the between-pair
    (per-process) noise is unmeasured. Fewer than :data:`MIN_UNITS` rounds in all: inconclusive. Pairs with one
    round each: the pair values are the units (within and between noise are not separable). Non-finite,
    non-positive and implausible ratios (beyond :data:`MAX_RATIO` either way) are set aside, the reason says how
    many, and a pair left without rounds with them.

    Hiccups: a host stall during one side of one round moves that round's ratio by tens of % and, with means, can
    make a pair look offset (a significant F test, ``P - 1`` degrees of freedom: an inconclusive cell). So a round
    whose log ratio lies more than ``HICCUP_SCALES`` (5) robust SDs (1.4826 x the median absolute deviation of all
    rounds from their pair's median) from its pair's median is set aside, the most extreme first and at most
    ``HICCUP_SHARE`` (10 %) of the rounds (none below 10 rounds in all); never when the robust SD is 0, in a pair
    of fewer than ``MIN_UNITS`` rounds, or when fewer than ``MIN_UNITS`` rounds would remain. The count is
    ``noise.trimmed`` and the reason says it. Simulated (tests/bench/core/test_significance.py): on normal block
    noise the MAD of a few rounds is itself noisy, so 1-2 % of 2-4 pair x 10-16 round gates set one genuine round
    aside, with no visible change of false flags or coverage; with one 40 % stall in 3 pairs x 12 rounds of 4 %
    noise, a 10 % slowdown is flagged in 93 % of gates instead of 73 %, and no change stays unflagged.
    """
    _check_threshold(threshold)
    cleaned = [_plausible_ratios(rounds) for rounds in pairs]
    aside = _set_aside_note(sum(len(r) for r in pairs) - sum(len(c) for c in cleaned), "ratio", MAX_RATIO)
    return _noted(_judge_nested(cleaned, threshold), aside)


def _judge_nested(cleaned: list[np.ndarray], threshold: float) -> ChangeEstimate:
    logs = [np.log(values) for values in cleaned if len(values)]
    logs, trimmed = _set_hiccups_aside(logs)
    n_pairs, sizes = len(logs), np.array([len(d) for d in logs])
    total = int(sizes.sum()) if n_pairs else 0
    shape = _shape(n_pairs, sizes, trimmed)
    if total < MIN_UNITS:
        ratio = float(np.exp(np.mean([d.mean() for d in logs]))) if logs else None
        noise = NoiseSplit(n_pairs, total, None, None, None, False, 0, trimmed)
        return ChangeEstimate(INCONCLUSIVE, ratio, None, None, None, total, total, "round", False,
                              f"too few rounds ({shape}; need {MIN_UNITS} in all)", noise)
    means = np.array([d.mean() for d in logs])
    mu = float(means.mean())
    if n_pairs == 1:
        values = logs[0]
        within = float(values.std(ddof=1))
        se, df = within / np.sqrt(total), total - 1
        noise = NoiseSplit(1, total, within, None, None, False, df, trimmed)
        note = "one worker pair: between-pair (per-process) noise unmeasured; run more pairs"
    elif total == n_pairs:  # one round per pair: the pair values are the units
        se, df = float(means.std(ddof=1)) / np.sqrt(n_pairs), n_pairs - 1
        noise = NoiseSplit(n_pairs, total, None, None, None, False, df, trimmed)
        note = "one round per pair: block and per-process noise not separable; interval from the pair values"
    else:
        noise, se = _split(logs, means, sizes, trimmed)
        df = noise.df
        offset = "n/a" if noise.between_sd is None else f"{noise.between_sd:.1%}"
        test = f"pair effect F test p={noise.between_p:.2g}"
        if noise.pooled:
            note = (f"{test} >= {POOL_ALPHA:g}: pooled into the round error, df {df}; block noise "
                    f"{noise.within_sd:.1%}, pair offset {offset}")
        else:
            note = (f"{test} < {POOL_ALPHA:g}: interval from the {n_pairs} pair means, df {df}; block noise "
                    f"{noise.within_sd:.1%}, pair offset {offset}")
    half = float(_stats().t.ppf(0.5 + CONFIDENCE / 2, df)) * se
    low, high = float(np.exp(mu - half)), float(np.exp(mu + half))
    if se > 0:
        p_value: float | None = float(2 * _stats().t.sf(abs(mu) / se, df))
    else:
        p_value = None if mu == 0 else 0.0
    estimate = _decide(float(np.exp(mu)), low, high, p_value, threshold, total, total, "round", False)
    return replace(estimate, weak=n_pairs == 1, noise=noise, reason=f"{shape}: {estimate.reason}; {note}")


def _shape(n_pairs: int, sizes: np.ndarray, trimmed: int) -> str:
    """``2 pairs x 12 rounds`` (``2 pairs, 23 rounds`` when unequal), with the hiccups set aside."""
    pair_text = f"{n_pairs} worker pair{'s' if n_pairs != 1 else ''}"
    if n_pairs and np.all(sizes == sizes[0]):
        text = f"{pair_text} x {int(sizes[0])} round{'s' if sizes[0] != 1 else ''}"
    else:
        text = f"{pair_text}, {int(sizes.sum()) if n_pairs else 0} rounds ({'/'.join(str(int(n)) for n in sizes)})"
    if trimmed:
        text += f" ({trimmed} hiccup round{'s' if trimmed != 1 else ''} set aside)"
    return text


def _split(logs: list[np.ndarray], means: np.ndarray, sizes: np.ndarray, trimmed: int) -> tuple[NoiseSplit, float]:
    """One-way random-effects ANOVA of the log ratios and the sometimes-pool standard error of the mean."""
    n_pairs, total = len(logs), int(sizes.sum())
    grand = float(np.concatenate(logs).mean())
    ss_within = float(sum(((d - d.mean()) ** 2).sum() for d in logs))
    ss_between = float((sizes * (means - grand) ** 2).sum())
    df_within, df_between = total - n_pairs, n_pairs - 1
    ms_within, ms_between = ss_within / df_within, ss_between / df_between
    if ms_within > 0:
        between_p = float(_stats().f.sf(ms_between / ms_within, df_between, df_within))
    else:  # no noise within pairs: any difference of the pair means is the pair effect
        between_p = 0.0 if ms_between > 0 else 1.0
    n0 = (total - float((sizes**2).sum()) / total) / df_between  # effective rounds per pair (= n when equal)
    between_sd = float(np.sqrt(max(0.0, (ms_between - ms_within) / n0)))
    pooled = between_p >= POOL_ALPHA
    if pooled:
        error = (ss_within + ss_between) / (total - 1)
        se, df = float(np.sqrt(error * float((1.0 / sizes).sum()))) / n_pairs, total - 1
    else:
        se, df = float(means.std(ddof=1)) / np.sqrt(n_pairs), df_between
    split = NoiseSplit(n_pairs, total, float(np.sqrt(ms_within)), between_sd, between_p, pooled, df, trimmed)
    return split, se


def _set_hiccups_aside(logs: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """Drop the rounds a host stall moved (see :func:`judge_nested`); returns the pairs' rounds and how many went."""
    total = sum(len(d) for d in logs)
    if total <= MIN_UNITS:
        return logs, 0
    residuals = np.concatenate([d - np.median(d) for d in logs])
    scale = 1.4826 * float(np.median(np.abs(residuals)))
    if scale <= 0:
        return logs, 0
    budget = min(int(HICCUP_SHARE * total), total - MIN_UNITS)
    judged = np.concatenate([np.full(len(d), len(d) >= MIN_UNITS) for d in logs])  # a median of 2 tells no side
    outlying = np.flatnonzero(judged & (np.abs(residuals) > HICCUP_SCALES * scale))
    if budget <= 0 or not len(outlying):
        return logs, 0
    drop = set(outlying[np.argsort(-np.abs(residuals[outlying]))][:budget].tolist())
    kept, start = [], 0
    for d in logs:
        keep = [i for i in range(len(d)) if start + i not in drop]
        start += len(d)
        if keep:
            kept.append(d[keep])
    return kept, len(drop)


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


def _plausible(values: Sequence[float], high: float, low: float = 0.0) -> np.ndarray:
    """The finite values within (low, high]: others are no measurement of this suite."""
    data = _finite_positive(values)
    return data[(data > low) & (data <= high)]


def _plausible_ratios(values: Sequence[float]) -> np.ndarray:
    return _plausible(values, MAX_RATIO, 1.0 / MAX_RATIO)


def implausible_throughput(ips: object) -> str | None:
    """Why a throughput (images/s) of an ok cell cannot be a measurement, or None when it can."""
    if isinstance(ips, bool) or not isinstance(ips, (int, float)) or not np.isfinite(ips):
        return f"throughput {ips!r:.40} is not a finite number"
    if ips <= 0:
        return f"throughput {ips:g} images/s is not positive"
    if ips > MAX_THROUGHPUT_IPS:
        return f"throughput {ips:.3g} images/s is beyond the plausible {MAX_THROUGHPUT_IPS:.0e}"
    return None


def _set_aside_note(count: int, what: str, bound: float) -> str:
    if count <= 0:
        return ""
    return (f"; {count} implausible {what}{'s' if count != 1 else ''} set aside (not finite, not positive or "
            f"beyond {bound:.0e}{' either way' if what == 'ratio' else ''})")


def _noted(estimate: ChangeEstimate, note: str) -> ChangeEstimate:
    return replace(estimate, reason=estimate.reason + note) if note else estimate


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
    result = _stats().bootstrap(data, statistic, n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
                             method="percentile", vectorized=True, **_rng_argument())
    low, high = result.confidence_interval
    return float(low), float(high)


def _rng_argument() -> dict[str, Any]:
    # scipy >= 1.15 calls the generator `rng`; older releases `random_state`
    name = "rng" if "rng" in inspect.signature(_stats().bootstrap).parameters else "random_state"
    return {name: np.random.default_rng(SEED)}
