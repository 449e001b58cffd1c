"""Statistics over a cell's history: change points (steps) and the between-run noise band (scipy.stats).

A *series* is one cell's throughput over runs, oldest first (images/s, ok runs only). Everything works on the
logarithm, so a move is a ratio and a 10 % step means the same at 5 and at 5000 images/s.

**Steps** (:func:`find_steps`): binary segmentation. In a window of the series, the split whose two sides fit their
own levels best (Huber loss) is a step when it leaves at least :data:`MIN_SEGMENT` runs on each side, one straight
line does not fit the window as well (AIC: a drift is not a step), the two sides differ by ``scipy.stats.mannwhitneyu``
(two-sided) with the p-value multiplied by the number of splits tried (Bonferroni: the split was chosen because it
looked best) below :data:`STEP_ALPHA`, *and* the Hodges-Lehmann estimate of the move has an :data:`INTERVAL`
interval that reaches :data:`MIN_STEP` (the data do not show the move smaller than the minimum; applying the minimum
to the sample medians missed half of all true 5 % steps however quiet the data). Both halves are then searched again.
One outlying run cannot be a step: it would need :data:`MIN_SEGMENT` runs on its side, and ranks do not let one
extreme value dominate. A step is reported at its first run (the first run of the new level); a step in the last
``MIN_SEGMENT - 1`` runs is not detectable yet (the band comparison judges the newest run).

**Drift** (:func:`find_drift`): each level of :data:`MIN_DRIFT_RUNS` runs or more, Kendall's tau against the run
order below :data:`DRIFT_ALPHA`, the Theil-Sen slope with its interval, the move over the level reaching
:data:`MIN_STEP`. ``reports/history/simulate.py`` states how often each is found.

**Band** (:func:`noise_band`): the series is cut at its steps; the between-run noise is the standard deviation of
the runs around their own segment's mean (log scale, ``n - segments`` degrees of freedom), so a past step does not
widen it; the level is the mean of the last segment. The band for one new run is the 95 % prediction interval
``level * exp(± t(0.975, df) * sd * sqrt(1 + 1/m))`` (``m`` runs in the last segment). It stands on ``n`` runs;
below :data:`MIN_BAND_RUNS` a verdict against it is ``weak``.
"""

from __future__ import annotations

import functools
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
INTERVAL = 0.95  # the interval given with every step's and drift's estimate
DRIFT_ALPHA = 0.01  # Kendall's trend test, per level
MIN_DRIFT_RUNS = 8  # runs a level needs before it is tested for drift
DRIFT_PENALTY = 2.0  # what a step's extra parameter (where) costs against a line (AIC; BIC's log n loses steps)

REGRESSION = "regression"
IMPROVEMENT = "improvement"
UNCHANGED = "unchanged"
WEAK = "weak"  # fewer than MIN_BAND_RUNS same-environment runs: the band is not believable yet
NO_HISTORY = "new"  # no ok run of this cell in this environment
NOT_OK = "not ok"  # not ok now, and not ok in the history either
VERDICTS = (REGRESSION, IMPROVEMENT, UNCHANGED, WEAK, NO_HISTORY, NOT_OK)


@dataclass(frozen=True)
class Step:
    """A change of level: ``index`` is the first run of the new level.

    ``change`` is the Hodges-Lehmann estimate of the shift (log scale, as a ratio minus one) with its
    :data:`INTERVAL` distribution-free interval ``change_low .. change_high`` (from the Mann-Whitney statistic)."""

    index: int
    before: float  # median throughput of the segment before
    after: float  # median throughput of the segment after
    p_value: float  # Mann-Whitney U of the two sides, Bonferroni-adjusted for the splits tried
    runs_before: int
    runs_after: int
    change: float
    change_low: float
    change_high: float


@dataclass(frozen=True)
class Drift:
    """A level that moves run by run: runs ``start .. end - 1`` of a series, ``rate`` per run (Theil-Sen slope of
    log throughput, as a ratio minus one) with its :data:`INTERVAL` interval, and Kendall's trend test."""

    start: int
    end: int
    rate: float
    rate_low: float
    rate_high: float
    p_value: float

    @property
    def runs(self) -> int:
        return self.end - self.start

    @property
    def change(self) -> float:
        """The move over the whole drifting stretch (first to last run)."""
        return math.expm1(math.log1p(self.rate) * (self.runs - 1))


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
    def low_width(self) -> float | None:
        """The lower edge as a fraction of the level (``low / level - 1``, negative)."""
        return None if self.low is None else self.low / self.level - 1.0

    @property
    def weak(self) -> bool:
        return self.runs < MIN_BAND_RUNS

    def text(self) -> str:
        """The band as judged: both edges against the level (``-6.9%/+7.5%``; the interval is symmetric in log
        throughput, so its edges are not), or ``""`` when it has none."""
        if self.low_width is None or self.half_width is None:
            return ""
        return f"{self.low_width:+.1%}/{self.half_width:+.1%}"


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
    return list(_find_steps(tuple(float(v) for v in values), min_segment, alpha, min_step))


@functools.lru_cache(maxsize=64)  # a cell's band and its series' steps are often the same runs: searched once
def _find_steps(values: tuple[float, ...], min_segment: int, alpha: float, min_step: float) -> tuple[Step, ...]:
    logs = np.log(_clean(values))
    cuts: list[tuple[int, float]] = []
    _segment(logs, 0, len(logs), min_segment, alpha, min_step, cuts)
    cuts.sort()
    bounds = [0, *[c for c, _ in cuts], len(logs)]
    steps = []
    for i, (cut, p_value) in enumerate(cuts):
        left, right = logs[bounds[i]:cut], logs[cut:bounds[i + 2]]
        shift, low, high = shift_interval(left, right)
        steps.append(Step(cut, float(np.exp(np.median(left))), float(np.exp(np.median(right))), p_value,
                          len(left), len(right), math.expm1(shift), math.expm1(low), math.expm1(high)))
    return tuple(steps)


def shift_interval(left: np.ndarray, right: np.ndarray, confidence: float = INTERVAL) -> tuple[float, float, float]:
    """The Hodges-Lehmann shift ``right - left`` (median of all pairwise differences) and its distribution-free
    ``confidence`` interval, the order statistics of those differences the Mann-Whitney statistic bounds."""
    diffs = np.sort((right[:, None] - left[None, :]).ravel())
    n1, n2 = len(left), len(right)
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    k = math.floor(n1 * n2 / 2 - z * math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12.0))
    k = min(max(k, 0), len(diffs) - 1)
    return float(np.median(diffs)), float(diffs[k]), float(diffs[len(diffs) - 1 - k])


def reaches(change_low: float, change: float, change_high: float, minimum: float) -> bool:
    """The interval of a move reaches the stated minimum on the side of its estimate: the data do not show the move
    smaller than ``minimum`` (a 5 % step measured at 4.9 % +- 1 % is a step, one at 2 % +- 1 % is not)."""
    return change_low <= -minimum if change < 0 else change_high >= minimum


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
    costs = _split_costs(y, scale)
    best = int(np.argmin(costs)) + 1
    if not min_segment <= best <= n - min_segment:
        return None
    left, right = y[:best], y[best:]
    if _drift_fits_better(y, best, scale):
        return None  # one slope explains the window better than two levels: a drift, not a step
    shift, low, high = shift_interval(left, right)
    if not reaches(math.expm1(low), math.expm1(shift), math.expm1(high), min_step):
        return None
    p_value = float(stats.mannwhitneyu(left, right, alternative="two-sided").pvalue)
    adjusted = min(1.0, p_value * len(splits))
    return (best, adjusted) if adjusted < alpha else None


def _split_costs(y: np.ndarray, scale: float) -> np.ndarray:
    """Huber loss of every split ``k = 1 .. n-1`` (both sides around their own levels), all at once: each side is a
    row of an (n-1) x n matrix with the other side's runs masked (NaN)."""
    n = len(y)
    left = np.arange(n)[None, :] < np.arange(1, n)[:, None]
    return _huber_rows(np.where(left, y, np.nan), scale) + _huber_rows(np.where(left, np.nan, y), scale)


def _huber_rows(rows: np.ndarray, scale: float) -> np.ndarray:
    """Huber loss (k = 1.345 scales) of each row around its level: one Huber step from its median (NaN: absent)."""
    present = ~np.isnan(rows)
    counts = present.sum(axis=1)
    ordered = np.sort(rows, axis=1)  # NaN sorts last: a row's values are its first `counts` entries
    index = np.arange(len(rows))
    low, high = np.maximum(counts - 1, 0) // 2, counts // 2
    median = 0.5 * (ordered[index, low] + ordered[index, np.minimum(high, rows.shape[1] - 1)])
    residual = np.where(present, rows - median[:, None], 0.0)
    weights = np.where(present, np.minimum(1.0, HUBER_K * scale / np.maximum(np.abs(residual), 1e-300)), 0.0)
    shift = (weights * residual).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-300)
    a = np.abs(residual - shift[:, None]) / scale
    return np.where(present, np.where(a <= HUBER_K, 0.5 * a * a, HUBER_K * a - 0.5 * HUBER_K**2), 0.0).sum(axis=1)


def _drift_fits_better(y: np.ndarray, split: int, scale: float) -> bool:
    """A straight line (2 parameters) against two levels split at ``split`` (3: two means and where), by AIC on
    residuals clipped at 3 scales (one stalled run must not decide the shape)."""
    n = len(y)
    x = np.arange(n, dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    levels = np.concatenate([y[:split] - np.median(y[:split]), y[split:] - np.median(y[split:])])

    def cost(residual: np.ndarray) -> float:
        return max(float(np.sum(np.minimum(np.abs(residual), 3.0 * scale) ** 2)), 1e-300)

    line = cost(y - (slope * x + intercept))
    return n * math.log(line / n) <= n * math.log(cost(levels) / n) + DRIFT_PENALTY


def find_drift(values: Sequence[float], *, alpha: float = DRIFT_ALPHA, min_step: float = MIN_STEP,
               min_runs: int = MIN_DRIFT_RUNS) -> Drift | None:
    """A drift in one level's runs (oldest first): Kendall's tau against the run order below ``alpha``, and the
    interval of the move over the stretch (Theil-Sen slope times runs) reaching ``min_step``; else None."""
    logs = np.log(_clean(values))
    n = len(logs)
    if n < min_runs or np.all(logs == logs[0]):
        return None
    x = np.arange(n, dtype=float)
    p_value = float(stats.kendalltau(x, logs).pvalue)
    if not p_value < alpha:
        return None
    slope, _, low, high = stats.theilslopes(logs, x, alpha=INTERVAL)
    span = n - 1
    if not reaches(math.expm1(low * span), math.expm1(slope * span), math.expm1(high * span), min_step):
        return None
    return Drift(0, n, math.expm1(slope), math.expm1(low), math.expm1(high), p_value)


@dataclass(frozen=True)
class Analysis:
    """A series' steps and the drifts within its levels."""

    steps: list[Step]
    drifts: list[Drift]


def analyse(values: Sequence[float]) -> Analysis:
    """Steps (:func:`find_steps`), then each level tested for drift (:func:`find_drift`)."""
    steps = find_steps(values)
    drifts = []
    for start, end in segments(len(values), steps):
        drift = find_drift(values[start:end])
        if drift is not None:
            drifts.append(Drift(start, end, drift.rate, drift.rate_low, drift.rate_high, drift.p_value))
    return Analysis(steps, drifts)


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

    The one judge of every verdict (detbench.bench.core.stats.judge): each cell's distance from its band's level in
    units of the prediction error (``sd * sqrt(1 + 1/m)``, t with the band's degrees of freedom), Holm across the run's
    cells (regressions and improvements apart), so a run of unchanged software flags any of its cells at most 5 % of the
    time; a flag must also exceed ``threshold`` (the floor). A cell with a weak band or none keeps its verdict
    from :func:`judge`."""
    from detbench.bench.core.stats import judge as one_judge  # noqa: PLC0415

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
        width = f"band {band.text()} on {band.runs} runs"
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
    width = f"band {band.text()} on {runs}"
    outside = value < band.low or value > band.high
    if outside and abs(change) > threshold:
        verdict = REGRESSION if change < 0 else IMPROVEMENT
        return Judgement(verdict, change, f"{change:+.1%}, outside the {width} and beyond ±{threshold:.0%}")
    if outside:
        return Judgement(UNCHANGED, change, f"{change:+.1%}: outside the {width} but within ±{threshold:.0%}")
    return Judgement(UNCHANGED, change, f"{change:+.1%}, inside the {width}")
