"""The statistics of the domain, no torch: per-iteration latency and throughput (:mod:`.latency`), the plausibility
and spread of throughput figures (:mod:`.significance`), and the one judge of every verdict over many cells
(:mod:`.judge`: ``detbench-ab``, ``detbench-report --fail-on-regression``, ``detbench-history compare``).

``from detbench.bench.core import stats`` gives the latency functions directly (``stats.latency_stats``,
``stats.percentile``).
"""

from detbench.bench.core.stats.latency import Throughput, latency_stats, percentile, throughput

__all__ = ["Throughput", "latency_stats", "percentile", "throughput"]
