"""Statistics over per-iteration times: latency percentiles and throughput (images/s)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from detbench.bench.core.schema import LatencyStats


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default 'linear' method) of already sorted values, q in [0, 100]."""
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within [0, 100], got {q}")
    position = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def latency_stats(times_ms: Sequence[float]) -> LatencyStats:
    """LatencyStats of per-iteration times in milliseconds (stddev is the sample stddev, n-1)."""
    if not times_ms:
        raise ValueError("no iteration times to summarise")
    values = sorted(float(t) for t in times_ms)
    n = len(values)
    mean = sum(values) / n
    stddev = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return LatencyStats(
        n=n,
        median_ms=percentile(values, 50),
        mean_ms=mean,
        min_ms=values[0],
        max_ms=values[-1],
        p90_ms=percentile(values, 90),
        p99_ms=percentile(values, 99),
        iqr_ms=percentile(values, 75) - percentile(values, 25),
        stddev_ms=stddev,
        cov=stddev / mean if mean > 0 else 0.0,
    )


@dataclass(frozen=True)
class Throughput:
    """Images/s at the median iteration, and at the slow (p90 time) and fast (p10 time) ends."""

    median_ips: float
    p10_ips: float  # slow end: images/s at the p90 iteration time
    p90_ips: float  # fast end: images/s at the p10 iteration time


def throughput(times_ms: Sequence[float], images_per_iteration: int) -> Throughput:
    """Throughput of iterations that each process ``images_per_iteration`` images."""
    values = sorted(float(t) for t in times_ms)
    if not values or values[0] <= 0:
        raise ValueError("throughput needs positive iteration times")
    per_s = lambda ms: images_per_iteration * 1000.0 / ms  # noqa: E731
    return Throughput(
        median_ips=per_s(percentile(values, 50)),
        p10_ips=per_s(percentile(values, 90)),
        p90_ips=per_s(percentile(values, 10)),
    )
