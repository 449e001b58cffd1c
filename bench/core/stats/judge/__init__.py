"""One judge for every verdict the product makes over many cells (``detbench-ab``, ``detbench-report
--fail-on-regression``, ``detbench-history compare``).

Each design turns its measurements into one :class:`Evidence` per cell (:mod:`.evidence`: worker pairs of an
A/B run, repeats or blocks of two runs, a new run against a cell's history); :func:`decide` then judges the cells
of one verdict together (:mod:`.family`): one-sided Holm across the cells for regressions (improvements a family
apart), a floor below which nothing is flagged, and each cell's detectable change stated. :mod:`.simulate` states
the error rates of a design on fitted noise. No torch here: numpy and scipy.stats only.
"""

from detbench.bench.core.stats.judge.evidence import Evidence, pair_evidence, prediction_evidence, two_sample_evidence
from detbench.bench.core.stats.judge.family import (
    ALPHA,
    IMPROVEMENT,
    INCONCLUSIVE,
    POWER,
    REGRESSION,
    UNCHANGED,
    VERDICTS,
    CellVerdict,
    decide,
    holm,
    look_alpha,
)

__all__ = ["ALPHA", "IMPROVEMENT", "INCONCLUSIVE", "POWER", "REGRESSION", "UNCHANGED", "VERDICTS", "CellVerdict",
           "Evidence", "decide", "holm", "look_alpha", "pair_evidence", "prediction_evidence", "two_sample_evidence"]
