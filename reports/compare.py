"""Per-cell comparison of a candidate run against a baseline, with a noise band, and the CI verdict.

A throughput change counts as a regression (or improvement) only when it is larger than both the user's
threshold and the noise band of the two runs: ``hypot(spread_baseline, spread_candidate)``, where a run's
spread for a cell is the IQR of its per-iteration times relative to their median (CoV when IQR is missing).
A cell that was ok in the baseline and failed (oom, error, timeout, skipped) in the candidate is a regression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

REGRESSION = "regression"
IMPROVEMENT = "improvement"
WITHIN_NOISE = "within noise"
WITHIN_THRESHOLD = "within threshold"
BOTH_FAILED = "both not ok"
ONLY_BASELINE = "missing in candidate"
ONLY_CANDIDATE = "new in candidate"

_KEY = ["cell_id"]
_CARRY = ["model", "mode", "compile", "precision", "batch_size", "gpus", "variant"]


@dataclass
class Comparison:
    """One candidate run against the baseline; ``table`` has one row per cell seen in either."""

    baseline: str
    candidate: str
    threshold: float
    table: pd.DataFrame

    def count(self, verdict: str) -> int:
        return int((self.table["verdict"] == verdict).sum())

    @property
    def regressions(self) -> pd.DataFrame:
        return self.table[self.table["verdict"] == REGRESSION]

    @property
    def improvements(self) -> pd.DataFrame:
        return self.table[self.table["verdict"] == IMPROVEMENT]


def relative_spread(iqr_ms: float | None, median_ms: float | None, cov: float | None) -> float | None:
    """IQR / median of the per-iteration times, else their CoV, else None (not measured)."""
    if _ok(iqr_ms) and _ok(median_ms) and median_ms > 0:
        return iqr_ms / median_ms
    if _ok(cov):
        return cov
    return None


def compare_runs(frame: pd.DataFrame, baseline: str, candidate: str, threshold: float) -> Comparison:
    """Compare two runs of the tidy table (see :func:`reports.load.tidy`) cell by cell."""
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be a fraction in [0, 1), got {threshold!r}")
    cols = _KEY + _CARRY + ["status", "reason", "throughput_ips", "latency_iqr_ms", "latency_median_ms", "latency_cov"]
    base = frame.loc[frame["run"] == baseline, cols]
    cand = frame.loc[frame["run"] == candidate, cols]
    merged = base.merge(cand, on=_KEY, how="outer", suffixes=("_base", "_cand"), indicator=True)
    rows = [_compare_row(row, threshold) for row in merged.to_dict("records")]
    table = pd.DataFrame(
        rows,
        columns=[
            "cell_id",
            *_CARRY,
            "status_base",
            "status_cand",
            "reason_cand",
            "throughput_base",
            "throughput_cand",
            "ratio",
            "change",
            "spread_base",
            "spread_cand",
            "noise_band",
            "band",
            "verdict",
        ],
    )
    numeric = [
        "throughput_base",
        "throughput_cand",
        "ratio",
        "change",
        "spread_base",
        "spread_cand",
        "noise_band",
        "band",
    ]
    table[numeric] = table[numeric].astype(float)  # all-None columns would otherwise stay object dtype
    return Comparison(baseline=baseline, candidate=candidate, threshold=threshold, table=table)


def _compare_row(row: dict, threshold: float) -> dict:
    side = "_base" if row["_merge"] != "right_only" else "_cand"
    out = {"cell_id": row["cell_id"], **{c: row[c + side] for c in _CARRY}}
    out["batch_size"], out["gpus"] = int(out["batch_size"]), int(out["gpus"])
    out.update(
        status_base=_str(row["status_base"]),
        status_cand=_str(row["status_cand"]),
        reason_cand=_str(row["reason_cand"]),
        throughput_base=_val(row["throughput_ips_base"]),
        throughput_cand=_val(row["throughput_ips_cand"]),
        ratio=None,
        change=None,
        spread_base=None,
        spread_cand=None,
        noise_band=None,
        band=None,
    )
    if row["_merge"] == "left_only":
        out["verdict"] = ONLY_BASELINE
        return out
    if row["_merge"] == "right_only":
        out["verdict"] = ONLY_CANDIDATE
        return out
    base_ok = out["status_base"] == "ok" and _ok(out["throughput_base"]) and out["throughput_base"] > 0
    cand_ok = out["status_cand"] == "ok" and _ok(out["throughput_cand"])
    if base_ok and not cand_ok:
        out["verdict"] = REGRESSION
        return out
    if cand_ok and not base_ok:
        out["verdict"] = IMPROVEMENT
        return out
    if not base_ok:
        out["verdict"] = BOTH_FAILED
        return out
    spread_b = relative_spread(
        _val(row["latency_iqr_ms_base"]), _val(row["latency_median_ms_base"]), _val(row["latency_cov_base"])
    )
    spread_c = relative_spread(
        _val(row["latency_iqr_ms_cand"]), _val(row["latency_median_ms_cand"]), _val(row["latency_cov_cand"])
    )
    noise = math.hypot(spread_b or 0.0, spread_c or 0.0)
    band = max(threshold, noise)
    ratio = out["throughput_cand"] / out["throughput_base"]
    change = ratio - 1.0
    if abs(change) > band:
        verdict = REGRESSION if change < 0 else IMPROVEMENT
    elif abs(change) > threshold:
        verdict = WITHIN_NOISE
    else:
        verdict = WITHIN_THRESHOLD
    out.update(
        ratio=ratio,
        change=change,
        spread_base=spread_b,
        spread_cand=spread_c,
        noise_band=noise,
        band=band,
        verdict=verdict,
    )
    return out


def verdict_line(comparisons: list[Comparison], threshold: float) -> str:
    """The one line a CI job greps: ``VERDICT: <n> regression(s) beyond 5% ...``."""
    pct = f"{threshold * 100:g}%"
    if not comparisons:
        return "VERDICT: nothing to compare (a single run; pass --baseline or a second run)"
    regressions = sum(c.count(REGRESSION) for c in comparisons)
    improvements = sum(c.count(IMPROVEMENT) for c in comparisons)
    compared = sum(int(c.table["ratio"].notna().sum()) for c in comparisons)
    pairs = "; ".join(f"{c.candidate} vs {c.baseline}" for c in comparisons)
    head = f"{regressions} regression{'s' if regressions != 1 else ''}" if regressions else "no regressions"
    return (
        f"VERDICT: {head} beyond {pct} and the measured noise, {improvements} improvement"
        f"{'s' if improvements != 1 else ''}, {compared} cells compared ({pairs})"
    )


def has_regression(comparisons: list[Comparison]) -> bool:
    return any(c.count(REGRESSION) for c in comparisons)


def _ok(value: float | None) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def _val(value: object) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _str(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
