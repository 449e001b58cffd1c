"""Latency statistics and throughput on known arrays (checked against numpy's definitions)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detbench.bench.core.stats import latency_stats, percentile, throughput


def test_latency_stats_match_numpy():
    times = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 7.0, 6.0, 9.0, 8.0]
    s = latency_stats(times)
    arr = np.array(times)
    assert s.n == 10
    assert s.median_ms == pytest.approx(5.5)
    assert s.mean_ms == pytest.approx(5.5)
    assert (s.min_ms, s.max_ms) == (1.0, 10.0)
    assert s.p90_ms == pytest.approx(np.percentile(arr, 90))
    assert s.p99_ms == pytest.approx(np.percentile(arr, 99))
    assert s.iqr_ms == pytest.approx(np.percentile(arr, 75) - np.percentile(arr, 25))
    assert s.stddev_ms == pytest.approx(np.std(arr, ddof=1))
    assert s.cov == pytest.approx(np.std(arr, ddof=1) / 5.5)


def test_single_sample_has_zero_spread_and_empty_is_an_error():
    s = latency_stats([2.0])
    assert (s.median_ms, s.p99_ms, s.stddev_ms, s.cov) == (2.0, 2.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        latency_stats([])
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_throughput_uses_the_median_and_spreads_to_p10_p90():
    times = [10.0] * 8 + [20.0, 5.0]  # ms per batch of 4
    rate = throughput(times, images_per_iteration=4)
    assert rate.median_ips == pytest.approx(400.0)
    assert rate.p10_ips == pytest.approx(4000.0 / np.percentile(times, 90))  # slow end
    assert rate.p90_ips == pytest.approx(4000.0 / np.percentile(times, 10))  # fast end
    assert rate.p10_ips < rate.median_ips < rate.p90_ips
    assert math.isfinite(rate.median_ips)
