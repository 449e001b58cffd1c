"""Per-cell comparison of a candidate run against a baseline, with a noise band, and the CI verdict.

A throughput change counts as a regression (or improvement) only when it is larger than both the user's
threshold and the noise band of the two runs: ``hypot(spread_baseline, spread_candidate)``, where a run's
spread for a cell is the IQR of its per-iteration times relative to their median (CoV when IQR is missing).
A cell that was ok in the baseline and failed (oom, error, timeout, skipped) in the candidate is a regression.

The gate (:func:`gate`) fails on a regression and on a baseline cell the candidate has no result for: a run that
lost cells must not pass for having fewer cells to judge. Two runs that share no cell cannot be judged at all:
that is its own state, never a pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

REGRESSION = "regression"
IMPROVEMENT = "improvement"
WITHIN_NOISE = "within noise"
WITHIN_THRESHOLD = "within threshold"
BOTH_FAILED = "both not ok"
ONLY_BASELINE = "missing in candidate"
ONLY_CANDIDATE = "new in candidate"

GATE_NONE = "nothing to compare"  # a single run
GATE_PASS = "pass"
GATE_FAIL = "fail"  # a regression, or a baseline cell without a candidate result
GATE_INCOMPARABLE = "nothing comparable"  # the two runs share no cell

# The environment facts that change what a throughput means; a difference is said in the verdict.
GATE_ENV_KEYS = (("gpu", "GPU"), ("torch", "torch"), ("cuda", "CUDA"), ("driver", "driver"))

_KEY = ["cell_id"]
_CARRY = ["model", "mode", "compile", "precision", "batch_size", "gpus", "variant"]


@dataclass
class Comparison:
    """One candidate run against the baseline; ``table`` has one row per cell seen in either."""

    baseline: str
    candidate: str
    threshold: float
    table: pd.DataFrame
    environment_changes: list[str] = field(default_factory=list)  # "GPU A -> B", see environment_changes

    def count(self, verdict: str) -> int:
        return int((self.table["verdict"] == verdict).sum())

    @property
    def regressions(self) -> pd.DataFrame:
        return self.table[self.table["verdict"] == REGRESSION]

    @property
    def improvements(self) -> pd.DataFrame:
        return self.table[self.table["verdict"] == IMPROVEMENT]

    @property
    def missing(self) -> pd.DataFrame:
        """Baseline cells the candidate has no result for."""
        return self.table[self.table["verdict"] == ONLY_BASELINE]

    @property
    def against_gate(self) -> pd.DataFrame:
        """Rows that fail the gate: regressions (ok -> not ok included) and baseline cells missing in the candidate."""
        return self.table[self.table["verdict"].isin((REGRESSION, ONLY_BASELINE))]

    @property
    def shared(self) -> int:
        """Cells present in both runs, whatever their status."""
        return int(((self.table["status_base"] != "") & (self.table["status_cand"] != "")).sum())

    @property
    def comparable(self) -> bool:
        return self.shared > 0


def relative_spread(iqr_ms: float | None, median_ms: float | None, cov: float | None) -> float | None:
    """IQR / median of the per-iteration times, else their CoV, else None (not measured)."""
    if _ok(iqr_ms) and _ok(median_ms) and median_ms > 0:
        return iqr_ms / median_ms
    if _ok(cov):
        return cov
    return None


def environment_changes(base: dict[str, Any], cand: dict[str, Any]) -> list[str]:
    """``["GPU A -> B", "torch x -> y"]`` for the GPU, torch, CUDA and driver facts that differ."""
    changes = []
    for key, name in GATE_ENV_KEYS:
        old, new = _env_text(base.get(key)), _env_text(cand.get(key))
        if old != new:
            changes.append(f"{name} {old} -> {new}")
    return changes


def _env_text(value: object) -> str:
    return "n/a" if value is None or value == "" else str(value)


def compare_runs(
    frame: pd.DataFrame,
    baseline: str,
    candidate: str,
    threshold: float,
    environments: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> Comparison:
    """Compare two runs of the tidy table (see :func:`reports.load.tidy`) cell by cell.

    ``environments``: the (baseline, candidate) fingerprints, whose GPU/torch/CUDA/driver differences the
    verdict states.
    """
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
    changes = environment_changes(*environments) if environments else []
    return Comparison(
        baseline=baseline, candidate=candidate, threshold=threshold, table=table, environment_changes=changes
    )


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


def gate(comparisons: list[Comparison]) -> str:
    """GATE_NONE (single run), GATE_INCOMPARABLE (a pair shares no cell), GATE_FAIL or GATE_PASS.

    Nothing comparable wins over a failure: the inputs are wrong, and no other figure can be trusted.
    """
    if not comparisons:
        return GATE_NONE
    if any(not c.comparable for c in comparisons):
        return GATE_INCOMPARABLE
    return GATE_FAIL if any(len(c.against_gate) for c in comparisons) else GATE_PASS


def verdict_line(comparisons: list[Comparison], threshold: float) -> str:
    """The one line a CI job greps: ``VERDICT: <n> regression(s) beyond 5% ...``."""
    pct = f"{threshold * 100:g}%"
    if not comparisons:
        return "VERDICT: nothing to compare (a single run; pass --baseline or a second run)"
    incomparable = [c for c in comparisons if not c.comparable]
    if incomparable:
        pairs = "; ".join(
            f"{c.candidate} and {c.baseline} share no cell ({_n(int((c.table['status_base'] != '').sum()), 'baseline cell')}"
            f", {_n(int((c.table['status_cand'] != '').sum()), 'candidate cell')})"
            for c in incomparable
        )
        return f"VERDICT: nothing comparable: {pairs}" + _env_note(comparisons)
    regressions = sum(c.count(REGRESSION) for c in comparisons)
    missing = sum(c.count(ONLY_BASELINE) for c in comparisons)
    improvements = sum(c.count(IMPROVEMENT) for c in comparisons)
    compared = sum(int(c.table["ratio"].notna().sum()) for c in comparisons)
    pairs = "; ".join(f"{c.candidate} vs {c.baseline}" for c in comparisons)
    if regressions or missing:
        head = f"{_n(regressions, 'regression')} beyond {pct} and the measured noise"
        if missing:
            head += f", {_n(missing, 'baseline cell')} missing in candidate"
    else:
        head = f"no regressions beyond {pct} and the measured noise"
    return (
        f"VERDICT: {head}, {_n(improvements, 'improvement')}, {compared} cells compared ({pairs})"
        + _env_note(comparisons)
    )


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


def _env_note(comparisons: list[Comparison]) -> str:
    notes = [
        f"environment differs ({c.candidate} vs {c.baseline}): {', '.join(c.environment_changes)}"
        for c in comparisons
        if c.environment_changes
    ]
    return "; " + "; ".join(notes) if notes else ""


def has_regression(comparisons: list[Comparison]) -> bool:
    """True when a comparison has a row against the gate (a regression or a missing baseline cell)."""
    return any(len(c.against_gate) for c in comparisons)


def _ok(value: float | None) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def _val(value: object) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _str(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
