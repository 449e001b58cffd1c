"""The verdicts of one run's cells, judged together: family-wise error control, a floor, the detectable change.

For every cell with evidence (:class:`~detbench.bench.core.stats.judge.evidence.Evidence`: an estimate ``d`` of
log(candidate / baseline throughput), its standard error ``se`` on ``df`` degrees of freedom), ``t = d / se`` gives two
one-sided p-values (``scipy.stats.t``): slower (a regression) and faster (an improvement). Across the cells of one
verdict, Holm's step-down adjustment is applied to each family apart (regressions; improvements), so the chance that a
run of unchanged software flags *any* cell is at most ``alpha`` (5 %), however many cells it holds. A cell is then

- ``regression`` / ``improvement``: its Holm-adjusted p-value is at most ``alpha`` *and* the estimate moves more
  than the floor (the smallest change that counts, stated with the verdict): a real change smaller than the
  floor is ``unchanged``;
- ``unchanged``: not flagged, and its ``1 - alpha`` interval lies within ±floor (or the change is real but
  within the floor);
- ``inconclusive``: neither: the noise allows a change beyond the floor that this run could not see. Counted and
  listed, never passed silently; the cell's detectable change says how large a change would have been seen.

The **detectable change** of a cell is the slowdown it would flag with probability ``power`` (80 %):
``max(t(1 - alpha/m, df) * se, log(1/(1 - floor))) + t(power, df) * se`` on the log scale, ``m`` the cells judged
(Holm's first step, the strictest: a conservative figure).

Sequential looks (``detbench-ab --budget-s``): the first of two looks spends a fifth of ``alpha``, the last the
rest (a Bonferroni split, :func:`look_alpha`): the chance of a false flag at either look is at most ``alpha``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from detbench.bench.core.stats.judge.evidence import Evidence

REGRESSION = "regression"
IMPROVEMENT = "improvement"
UNCHANGED = "unchanged"
INCONCLUSIVE = "inconclusive"
VERDICTS = (REGRESSION, IMPROVEMENT, UNCHANGED, INCONCLUSIVE)
ALPHA = 0.05  # family-wise, per family (regressions; improvements)
POWER = 0.80  # for the detectable change


def _t() -> Any:
    from scipy.stats import t  # noqa: PLC0415 - scipy takes most of a CLI's start-up; imported at first use

    return t


@dataclass(frozen=True)
class CellVerdict:
    """One cell's verdict with the figures behind it (ratios: candidate / baseline throughput, > 1 faster)."""

    verdict: str
    ratio: float | None
    low: float | None  # the cell's 1 - alpha two-sided t interval
    high: float | None
    p_regression: float | None  # one-sided, before adjustment
    p_improvement: float | None
    adjusted_p: float | None  # Holm-adjusted p of the family the estimate points to
    detectable: float | None  # the slowdown (fraction) this cell would flag with POWER
    floor: float
    alpha: float
    cells: int  # cells judged together
    units: int
    unit: str
    df: float
    weak: bool
    reason: str
    within_sd: float | None = None
    between_sd: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): reject where adjusted <= alpha."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


FIRST_LOOK_SHARE = 0.2  # of alpha, spent at the first of two looks; the rest at the last


def look_alpha(alpha: float, looks: int, look: int | None = None) -> float:
    """The level look ``look`` (1-based; default the last) of ``looks`` spends. Two looks: ``FIRST_LOOK_SHARE``
    (a fifth) of ``alpha`` at the first, the rest at the last, a Bonferroni split (the levels sum to ``alpha``,
    so the chance of any false flag over both looks is at most ``alpha``): the first look stops only clear
    cases, the last keeps most of the power. One look: all of it."""
    if looks not in (1, 2):
        raise ValueError(f"looks must be 1 or 2, got {looks}")
    look = looks if look is None else look
    if looks == 1:
        return alpha
    return alpha * FIRST_LOOK_SHARE if look == 1 else alpha * (1.0 - FIRST_LOOK_SHARE)


def check_floor(floor: float) -> None:
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor < 1:
        raise ValueError(f"the floor (--threshold) must be a fraction in [0, 1), got {floor!r}")


def detectable_change(se: float, df: float, cells: int, floor: float, alpha: float = ALPHA,
                      power: float = POWER) -> float:
    """The slowdown (fraction) a cell with this ``se`` flags with probability ``power`` (module doc)."""
    t = _t()
    critical = max(float(t.ppf(1 - alpha / max(cells, 1), df)) * se, math.log(1.0 / (1.0 - floor)))
    return 1.0 - math.exp(-(critical + float(t.ppf(power, df)) * se))


def decide(evidence: Mapping[str, Evidence], floor: float, *, alpha: float = ALPHA,
           power: float = POWER) -> dict[str, CellVerdict]:
    """Every cell's verdict, the cells judged together (module doc). Cells without judgeable evidence are
    ``inconclusive`` and take no share of ``alpha``."""
    check_floor(floor)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be within (0, 1), got {alpha!r}")
    t = _t()
    judged = [cid for cid, e in evidence.items() if e.judgeable]
    p_reg: dict[str, float] = {}
    p_imp: dict[str, float] = {}
    for cid in judged:
        e = evidence[cid]
        assert e.estimate is not None and e.se is not None
        if e.se > 0:
            p_reg[cid] = float(t.cdf(e.estimate / e.se, e.df))
            p_imp[cid] = float(t.sf(e.estimate / e.se, e.df))
        else:  # no spread at all: the estimate is exact
            p_reg[cid] = 0.0 if e.estimate < 0 else 1.0
            p_imp[cid] = 0.0 if e.estimate > 0 else 1.0
    adj_reg = dict(zip(judged, holm([p_reg[c] for c in judged]), strict=True))
    adj_imp = dict(zip(judged, holm([p_imp[c] for c in judged]), strict=True))
    margin = math.log(1.0 / (1.0 - floor))
    out = {}
    for cid, e in evidence.items():
        if not e.judgeable:
            ratio = None if e.estimate is None else math.exp(e.estimate)
            out[cid] = CellVerdict(INCONCLUSIVE, ratio, None, None, None, None, None, None, floor, alpha,
                                   len(judged), e.units, e.unit, e.df, e.weak, f"not judged: {e.note}",
                                   e.within_sd, e.between_sd)
            continue
        assert e.estimate is not None and e.se is not None
        half = float(t.ppf(1 - alpha / 2, e.df)) * e.se
        ratio, low, high = math.exp(e.estimate), math.exp(e.estimate - half), math.exp(e.estimate + half)
        slower = e.estimate < 0
        adjusted = adj_reg[cid] if slower else adj_imp[cid]
        detectable = detectable_change(e.se, e.df, len(judged), floor, alpha, power)
        interval = f"{ratio:.3f} ({low:.3f}-{high:.3f})"
        family = f"Holm p {adjusted:.2g} over {len(judged)} cell(s)"
        if adjusted <= alpha and abs(e.estimate) > margin:
            verdict = REGRESSION if slower else IMPROVEMENT
            reason = f"{interval}: {family} <= {alpha:g} and the change exceeds the {floor:.0%} floor"
        elif adjusted <= alpha:
            verdict, reason = UNCHANGED, f"{interval}: a real change ({family}) within the {floor:.0%} floor"
        elif low >= 1.0 - floor and high <= 1.0 + floor:
            verdict, reason = UNCHANGED, f"{interval} lies within ±{floor:.0%}"
        else:
            verdict = INCONCLUSIVE
            reason = f"{interval}: {family}; could see a slowdown of {detectable:.1%} or more"
        if e.note:
            reason += f"; {e.note}"
        if e.weak and verdict in (REGRESSION, IMPROVEMENT):
            reason += " (weak: one repeat a side, between-run noise unmeasured)"
        out[cid] = CellVerdict(verdict, ratio, low, high, p_reg[cid], p_imp[cid], adjusted, detectable, floor, alpha,
                               len(judged), e.units, e.unit, e.df, e.weak, reason, e.within_sd, e.between_sd)
    return out
