"""Statistics over a cell's history: change points (steps) and the between-run noise band (scipy.stats).

A *series* is one cell's throughput over runs, oldest first (images/s, ok runs only). Everything works on the
logarithm, so a move is a ratio and a 10 % step means the same at 5 and at 5000 images/s.

**Steps** (:func:`find_steps`): binary segmentation with a rank test. In a window of the series, every split that
leaves at least :data:`MIN_SEGMENT` runs on each side is scored by the standardised Mann-Whitney statistic of the
two sides (computed for all splits at once from the ranks); the best split is then tested with
``scipy.stats.mannwhitneyu`` (two-sided), its p-value multiplied by the number of splits tried (Bonferroni: the
split was chosen because it looked best). A split is a step when that adjusted p-value is below
:data:`STEP_ALPHA` *and* the medians of the two sides differ by at least :data:`MIN_STEP`; the window is then cut
there and both halves are searched again. One outlying run cannot be a step: it would need :data:`MIN_SEGMENT` runs
on its side, and ranks do not let one extreme value dominate. A step is reported at its first run (the first run of
the new level); a step in the last ``MIN_SEGMENT - 1`` runs is not detectable yet (the band comparison judges the
newest run).

**Band** (:func:`noise_band`): the series is cut at its steps; the between-run noise is the standard deviation of
the runs around their own segment's mean (log scale, ``n - segments`` degrees of freedom), so a past step does not
widen it; the level is the mean of the last segment. The band for one new run is the 95 % prediction interval
``level * exp(± t(0.975, df) * sd * sqrt(1 + 1/m))`` (``m`` runs in the last segment). It stands on ``n`` runs;
below :data:`MIN_BAND_RUNS` a verdict against it is ``weak``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_SEGMENT = 4  # runs on each side of a step: a step is a new level, not one or two odd runs
STEP_ALPHA = 0.01  # family-wise level per series (Bonferroni over the splits tried)
MIN_STEP = 0.05  # smallest move between the medians of the two sides reported as a step
MIN_BAND_RUNS = 3  # below this a verdict against the band is weak
BAND_CONFIDENCE = 0.95
HUBER_K = 1.345  # the step's location: Huber loss, 95 % efficient on Gaussian noise

REGRESSION = "regression"
IMPROVEMENT = "improvement"
UNCHANGED = "unchanged"
WEAK = "weak"  # fewer than MIN_BAND_RUNS same-environment runs: the band is not believable yet
NO_HISTORY = "new"  # no ok run of this cell in this environment
NOT_OK = "not ok"  # not ok now, and not ok in the history either
VERDICTS = (REGRESSION, IMPROVEMENT, UNCHANGED, WEAK, NO_HISTORY, NOT_OK)


@dataclass(frozen=True)
class Step:
    """A change of level: ``index`` is the first run of the new level."""

    index: int
    before: float  # median throughput of the segment before
    after: float  # median throughput of the segment after
    p_value: float  # Mann-Whitney U of the two sides, Bonferroni-adjusted for the splits tried
    runs_before: int
    runs_after: int

    @property
    def change(self) -> float:
        return self.after / self.before - 1.0


@dataclass(frozen=True)
class Band:
    """The between-run band of one cell in one environment (throughput, images/s)."""

    runs: int  # runs it stands on
    segment_runs: int  # runs of the current level (after the last step)
    level: float  # geometric mean of the current level
    sd: float | None  # between-run SD of log throughput around the segment means (None: fewer than 2 runs)
    low: float | None  # 95 % prediction interval for one new run
    high: float | None
    df: int = 0  # degrees of freedom of the between-run SD (runs - levels)

    @property
    def half_width(self) -> float | None:
        """The band as a fraction of the level (``high / level - 1``), or None when not measurable."""
        return None if self.high is None else self.high / self.level - 1.0

    @property
    def weak(self) -> bool:
        return self.runs < MIN_BAND_RUNS


@dataclass(frozen=True)
class Judgement:
    verdict: str
    change: float | None  # value / band level - 1
    reason: str


def _clean(values: Sequence[float]) -> np.ndarray:
    data = np.asarray([float(v) for v in values], dtype=float)
    if data.size and not (np.all(np.isfinite(data)) and np.all(data > 0)):
        raise ValueError("a series holds finite positive throughputs only")
    return data


def find_steps(values: Sequence[float], *, min_segment: int = MIN_SEGMENT, alpha: float = STEP_ALPHA,
               min_step: float = MIN_STEP) -> list[Step]:
    """The steps of a series (oldest first), in order; see the module doc."""
    logs = np.log(_clean(values))
    cuts: list[tuple[int, float]] = []
    _segment(logs, 0, len(logs), min_segment, alpha, min_step, cuts)
    cuts.sort()
    bounds = [0, *[c for c, _ in cuts], len(logs)]
    steps = []
    for i, (cut, p_value) in enumerate(cuts):
        left, right = logs[bounds[i]:cut], logs[cut:bounds[i + 2]]
        steps.append(Step(cut, float(np.exp(np.median(left))), float(np.exp(np.median(right))), p_value,
                          len(left), len(right)))
    return steps


def _segment(logs: np.ndarray, lo: int, hi: int, min_segment: int, alpha: float, min_step: float,
             cuts: list[tuple[int, float]]) -> None:
    found = _best_split(logs[lo:hi], min_segment, alpha, min_step)
    if found is None:
        return
    split, p_value = found
    cuts.append((lo + split, p_value))
    _segment(logs, lo, lo + split, min_segment, alpha, min_step, cuts)
    _segment(logs, lo + split, hi, min_segment, alpha, min_step, cuts)


def _best_split(y: np.ndarray, min_segment: int, alpha: float, min_step: float) -> tuple[int, float] | None:
    n = len(y)
    splits = np.arange(min_segment, n - min_segment + 1)
    if not len(splits) or np.all(y == y[0]):
        return None
    # where: the split whose two sides fit their own levels best (a Huber loss around each side's robust level,
    # the scale from successive differences, which a step barely moves): least squares' precision on clean noise,
    # without one odd run near the step pulling the split onto itself. Whether: the rank test below.
    scale = max(1.4826 * float(np.median(np.abs(np.diff(y)))) / math.sqrt(2.0), 1e-9)
    # every split is scored, also those leaving fewer than min_segment runs on a side: when one of those fits best
    # (a move in the last few runs, one odd run at an end), the new level is not established yet, and a split
    # forced into the allowed range would name the wrong run
    candidates = np.arange(1, n)
    costs = [_huber_cost(y[:k], scale) + _huber_cost(y[k:], scale) for k in candidates]
    best = int(candidates[int(np.argmin(costs))])
    if not min_segment <= best <= n - min_segment:
        return None
    left, right = y[:best], y[best:]
    if abs(math.expm1(float(np.median(right) - np.median(left)))) < min_step:
        return None
    p_value = float(stats.mannwhitneyu(left, right, alternative="two-sided").pvalue)
    adjusted = min(1.0, p_value * len(splits))
    return (best, adjusted) if adjusted < alpha else None


def _huber_cost(y: np.ndarray, scale: float) -> float:
    """Huber loss (k = 1.345 scales) of a segment around its level: one Huber step from the median."""
    residual = y - np.median(y)
    weights = np.minimum(1.0, HUBER_K * scale / np.maximum(np.abs(residual), 1e-300))
    residual = residual - float(np.sum(weights * residual) / np.sum(weights))
    a = np.abs(residual) / scale
    return float(np.where(a <= HUBER_K, 0.5 * a * a, HUBER_K * a - 0.5 * HUBER_K**2).sum())


def segments(n: int, steps: Sequence[Step]) -> list[tuple[int, int]]:
    """``[start, end)`` of each level of a series of ``n`` runs cut at ``steps``."""
    bounds = [0, *[s.index for s in steps], n]
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def noise_band(values: Sequence[float], steps: Sequence[Step] | None = None) -> Band | None:
    """The band of a series (oldest first; see the module doc), or None for an empty one."""
    data = _clean(values)
    n = len(data)
    if n == 0:
        return None
    logs = np.log(data)
    parts = segments(n, find_steps(list(data)) if steps is None else steps)
    start, end = parts[-1]
    level = float(np.mean(logs[start:end]))
    df = n - len(parts)
    if df < 1:
        return Band(n, end - start, math.exp(level), None, None, None)
    residuals = np.concatenate([logs[a:b] - logs[a:b].mean() for a, b in parts])
    sd = float(np.sqrt((residuals**2).sum() / df))
    half = float(stats.t.ppf(0.5 + BAND_CONFIDENCE / 2, df)) * sd * math.sqrt(1.0 + 1.0 / (end - start))
    return Band(n, end - start, math.exp(level), sd, math.exp(level - half), math.exp(level + half), df)


def judge_cells(cells: dict[str, tuple[float, Band | None]], threshold: float) -> dict[str, Judgement]:
    """A new run's cells against their bands, judged together (``cells``: id -> (throughput, band)).

    The one judge of every verdict (bench.core.judge): each cell's distance from its band's level in units of the
    prediction error (``sd * sqrt(1 + 1/m)``, t with the band's degrees of freedom), Holm across the run's cells
    (regressions and improvements apart), so a run of unchanged software flags any of its cells at most 5 % of the
    time; a flag must also exceed ``threshold`` (the floor). A cell with a weak band or none keeps its verdict
    from :func:`judge`."""
    from bench.core import judge as one_judge  # noqa: PLC0415

    evidence = {cid: one_judge.prediction_evidence(value, math.log(band.level), band.sd, band.df, band.segment_runs)
                for cid, (value, band) in cells.items()
                if band is not None and not band.weak and band.sd is not None and band.df >= 1}
    verdicts = one_judge.decide(evidence, threshold)
    out = {}
    for cid, (value, band) in cells.items():
        single = judge(value, band, threshold)
        if cid not in verdicts or band is None or band.half_width is None:
            out[cid] = single
            continue
        v = verdicts[cid]
        width = f"band ±{band.half_width:.1%} on {band.runs} runs"
        change = value / band.level - 1.0
        family = f"Holm p {v.adjusted_p:.2g} over {v.cells} cells"
        if v.verdict in (REGRESSION, IMPROVEMENT):
            out[cid] = Judgement(v.verdict, change, f"{change:+.1%}: {family}, beyond ±{threshold:.0%} ({width})")
        else:
            out[cid] = Judgement(UNCHANGED, change, f"{change:+.1%}: {family}, not flagged ({width})")
    return out


def judge(value: float, band: Band | None, threshold: float) -> Judgement:
    """One new run's throughput against a cell's band: a move is flagged when it leaves the band *and* exceeds the
    threshold; with fewer than :data:`MIN_BAND_RUNS` runs behind the band the verdict is ``weak``."""
    if band is None:
        return Judgement(NO_HISTORY, None, "no ok run of this cell in this environment")
    change = value / band.level - 1.0
    runs = f"{band.runs} run{'s' if band.runs != 1 else ''}"
    if band.weak or band.low is None or band.high is None:
        return Judgement(WEAK, change, f"{change:+.1%} against the mean of {runs}; a band needs "
                                       f"{MIN_BAND_RUNS} same-environment runs")
    width = f"band ±{band.half_width:.1%} on {runs}"
    outside = value < band.low or value > band.high
    if outside and abs(change) > threshold:
        verdict = REGRESSION if change < 0 else IMPROVEMENT
        return Judgement(verdict, change, f"{change:+.1%}, outside the {width} and beyond ±{threshold:.0%}")
    if outside:
        return Judgement(UNCHANGED, change, f"{change:+.1%}: outside the {width} but within ±{threshold:.0%}")
    return Judgement(UNCHANGED, change, f"{change:+.1%}, inside the {width}")
