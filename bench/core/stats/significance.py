"""Plausibility and spread of throughput figures, for the verdicts (detbench.bench.core.stats.judge) and the reports.

The judging itself (paired estimates over worker pairs, two-run comparisons, a run against its history; Holm
across the cells, the floor, the detectable change) is :mod:`detbench.bench.core.stats.judge`, the one judge of every
verdict. What stays here: which figures are no measurement of this suite (never judged, named instead), and the relative
spread a report shows beside a verdict.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_UNITS = 3  # per side; below this no interval is believable
# Figures no cell of this suite can produce (a corrupt or hand-edited file): never judged. detbench.reports.compare
# marks a cell carrying one invalid (named, out of the verdicts); the judge sets such units aside and says so.
MAX_THROUGHPUT_IPS = 1e7  # images/s: ~100x the fastest small-image classifier at a large batch on an H100
MAX_RATIO = 1e3  # a candidate 1000x faster or slower than its baseline on the same cell is a broken figure


def relative_spread(values: Sequence[float]) -> float | None:
    """Interquartile range over median of a sample (the between-block or between-repeat noise), or None."""
    data = _finite_positive(values)
    if len(data) < 2:
        return None
    q1, median, q3 = np.percentile(data, [25, 50, 75])
    return float((q3 - q1) / median) if median > 0 else None


def implausible_throughput(ips: object) -> str | None:
    """Why a throughput (images/s) of an ok cell cannot be a measurement, or None when it can."""
    if isinstance(ips, bool) or not isinstance(ips, (int, float)) or not np.isfinite(ips):
        return f"throughput {ips!r:.40} is not a finite number"
    if ips <= 0:
        return f"throughput {ips:g} images/s is not positive"
    if ips > MAX_THROUGHPUT_IPS:
        return f"throughput {ips:.3g} images/s is beyond the plausible {MAX_THROUGHPUT_IPS:.0e}"
    return None


def _finite_positive(values: Sequence[float]) -> np.ndarray:
    data = np.asarray([float(v) for v in values if v is not None], dtype=float)
    return data[np.isfinite(data) & (data > 0)]
