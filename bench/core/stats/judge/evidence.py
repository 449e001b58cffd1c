"""What one cell's measurements say about its change: an estimate of log(candidate / baseline throughput), its
standard error and degrees of freedom (:class:`Evidence`), one function per design.

- :func:`pair_evidence`: an A/B run's rounds nested in fresh worker pairs. The worker process is the unit: each
  pair's rounds are summarised by the median of their log ratios (block-to-block noise has near-Cauchy tails:
  docs/ab.md), and the cell's estimate is the mean of the pair medians with a t interval over pairs (``P - 1``
  degrees of freedom), so the per-process offset is in the error, never assumed away.
- :func:`two_sample_evidence`: two runs made at different times (``detbench-report``): Welch's t on the logs of
  one value per unit (a repeat, else a block of the one repeat: ``weak``, within-run noise only).
- :func:`prediction_evidence`: one new run against a cell's history (``detbench-history compare``): its distance
  from the history's level in units of the prediction error ``sd * sqrt(1 + 1/m)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from detbench.bench.core.stats.significance import MAX_RATIO, MAX_THROUGHPUT_IPS

MAD_SCALE = 1.4826  # MAD -> SD under normal noise


@dataclass(frozen=True)
class Evidence:
    """One cell's evidence. ``estimate``: log(candidate / baseline throughput) (> 0: faster), None when nothing was
    measured; ``se``: its standard error, None when not estimable (too few units); ``df``: degrees of freedom of
    the t reference; ``units``: how many independent units (worker pairs, repeats, runs) it rests on."""

    estimate: float | None
    se: float | None
    df: float
    units: int
    unit: str
    weak: bool = False  # rests on within-run noise only (one repeat a side)
    note: str = ""
    within_sd: float | None = None  # robust SD of rounds around their pair's median (pair_evidence)
    between_sd: float | None = None  # SD of the pair medians (pair_evidence)

    @property
    def judgeable(self) -> bool:
        return self.estimate is not None and self.se is not None and self.df >= 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plausible_ratios(values: Sequence[float]) -> np.ndarray:
    data = np.asarray([float(v) for v in values if v is not None], dtype=float)
    return data[np.isfinite(data) & (data >= 1.0 / MAX_RATIO) & (data <= MAX_RATIO)]


def pair_evidence(pairs: Sequence[Sequence[float]]) -> Evidence:
    """``pairs[p]``: pair p's per-round candidate/baseline throughput ratios. Pairs without a plausible round are
    left out (the note says how many ratios were set aside)."""
    cleaned = [plausible_ratios(rounds) for rounds in pairs]
    aside = sum(len(r) for r in pairs) - sum(len(c) for c in cleaned)
    logs = [np.log(c) for c in cleaned if len(c)]
    note = f"{aside} implausible ratio{'s' if aside != 1 else ''} set aside; " if aside else ""
    rounds = sum(len(d) for d in logs)
    if not logs:
        return Evidence(None, None, 0, 0, "worker pair", note=note + "no paired round")
    medians = np.array([float(np.median(d)) for d in logs])
    estimate = float(medians.mean())
    residuals = np.concatenate([d - np.median(d) for d in logs])
    within = MAD_SCALE * float(np.median(np.abs(residuals))) if rounds > len(logs) else None
    shape = f"{len(logs)} worker pair(s), {rounds} round(s)"
    if len(logs) < 2:
        return Evidence(estimate, None, 0, len(logs), "worker pair", note=f"{note}{shape}: the per-process offset "
                        "needs 2 pairs or more", within_sd=within)
    sd = float(medians.std(ddof=1))
    return Evidence(estimate, sd / math.sqrt(len(logs)), len(logs) - 1, len(logs), "worker pair",
                    note=note + shape, within_sd=within, between_sd=sd)


def two_sample_evidence(baseline: Sequence[float], candidate: Sequence[float], unit: str, *,
                        weak: bool = False) -> Evidence:
    """Welch's t on log throughput (images/s), one value per unit on each side; fewer than 2 a side: not
    estimable. Identical values on both sides (no spread at all) give a zero standard error."""
    base, cand = np.log(_plausible_ips(baseline)), np.log(_plausible_ips(candidate))
    aside = len(baseline) + len(candidate) - len(base) - len(cand)
    units = min(len(base), len(cand))
    aside_note = f"; {aside} implausible throughput(s) set aside" if aside else ""
    if not len(base) or not len(cand):
        return Evidence(None, None, 0, units, unit, weak, f"no {unit} on a side{aside_note}")
    estimate = float(cand.mean() - base.mean())
    if units < 2:
        return Evidence(estimate, None, 0, units, unit, weak,
                        f"{len(base)} vs {len(cand)} {unit}s: need 2 a side{aside_note}")
    vb, vc = float(base.var(ddof=1)) / len(base), float(cand.var(ddof=1)) / len(cand)
    se = math.sqrt(vb + vc)
    if se == 0:
        df = float(len(base) + len(cand) - 2)
    else:  # Welch-Satterthwaite
        df = (vb + vc) ** 2 / (vb**2 / (len(base) - 1) + vc**2 / (len(cand) - 1))
    return Evidence(estimate, se, df, units, unit, weak, f"{len(base)} vs {len(cand)} {unit}s{aside_note}")


def _plausible_ips(values: Sequence[float]) -> np.ndarray:
    data = np.asarray([float(v) for v in values if v is not None], dtype=float)
    return data[np.isfinite(data) & (data > 0) & (data <= MAX_THROUGHPUT_IPS)]


def prediction_evidence(value: float, level_log: float, sd: float | None, df: int, segment_runs: int) -> Evidence:
    """A new run's throughput ``value`` against a history whose current level is ``exp(level_log)`` (the mean log
    of its last ``segment_runs`` runs), between-run SD ``sd`` (log) on ``df`` degrees of freedom."""
    estimate = math.log(value) - level_log
    if sd is None or df < 1:
        return Evidence(estimate, None, 0, segment_runs, "run", note="too few runs for a between-run SD")
    return Evidence(estimate, sd * math.sqrt(1.0 + 1.0 / segment_runs), df, segment_runs, "run")
