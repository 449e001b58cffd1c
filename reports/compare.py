"""Per-cell comparison of a candidate run against a baseline, and the CI verdict.

A cell ok on both sides is judged one of two ways (the table's ``basis`` column says which):

- **Repeats** (runs made with ``--repeats N``, N >= 3 on both sides): each repeat of a cell (measured at
  another moment of its run, by a fresh worker) gives one throughput, the median of its blocks, and Welch's t
  on their logarithms (:func:`detbench.bench.core.stats.judge.two_sample_evidence`) tests those: the between-repeat
  spread, where a shared host's noise lives, is what the test sees. Every cell judged so is judged together with the
  others by :func:`detbench.bench.core.stats.judge.decide` (the one judge of detbench-ab and detbench-history too): Holm
  across the cells, one-sided for regressions and improvements apart, so a pair of runs of unchanged software
  flags any cell at most 5 % of the time; a change is flagged only when it also exceeds the threshold (the
  floor); a cell the noise leaves undecided is ``inconclusive``, with the slowdown it could have seen.
- **Blocks** (schema v2 results with fewer repeats): each side's timed blocks give one throughput each and
  are tested the same way. With two repeats on both sides a flag must also exceed the between-repeat spread
  (the relative range of the repeats' medians, both sides in quadrature), else the cell is ``inconclusive``.
  With a single repeat on a side the verdict is *weak*: the blocks share their run's host state, so the
  noise between runs (another lease, another neighbour) is unmeasured; ``--repeats 3`` or ``detbench-ab``
  (paired rounds on one machine) is the strong form. Fewer than ``MIN_BLOCKS`` units on a side is
  ``inconclusive``.
- **Noise band** (v1 results, or a side without blocks): the change must exceed the threshold and
  ``hypot(spread_baseline, spread_candidate)``, a run's spread being the IQR of its per-iteration times over
  their median (CoV when IQR is missing). Labelled as such: iteration spread misses between-run noise, so these
  verdicts are *weak* too.

**Weak evidence does not gate.** A weak regression (one repeat a side, or the noise band) is shown, counted and
listed, but fails the gate only when its move is larger than ``LEASE_MOVE_MAX`` (60 %), the widest move between
leases of the same software the docs quote: no host change measured so far explains that. A *stated* between-run
band (``between_run_band``, ``--between-run-band``; e.g. measured by rerunning the same software on other leases)
makes single-repeat verdicts strong: a flag must then exceed it too, else it is ``inconclusive`` (noise band
rule: ``within noise``). Moves are folds: ``max(r, 1/r) - 1`` for a throughput ratio ``r``, so both file orders
agree (0.625 and 1.6 are both a 60 % move).

The hosts are checked too: a run's host canary (the median of its blocks' fixed pure-Python loop) differing
by more than ``CANARY_TOLERANCE``, or another CPU, CPU count, GPU, torch, CUDA or driver, is said at the top.
When the canaries differ, a regression or improvement of a host-bound cell (GPU utilisation below
``HOST_BOUND_UTIL_PCT`` on either side, or not measured) becomes ``inconclusive`` ("host differs"): the host,
not the code, may have moved it.

A cell whose figures no run can produce (an ok cell's throughput or a block's images/s not finite, not positive or
beyond ``significance.MAX_THROUGHPUT_IPS``; a block time of 0 or 1e-300 ms) is ``invalid`` on either side: named
with the figure, left out of the verdicts and the gate, never judged.

A cell that was ok in the baseline and failed (oom, error, timeout, skipped) in the candidate is a regression.
The gate (:func:`gate`) fails on a regression (a weak one only beyond ``LEASE_MOVE_MAX``, see above) and on a
baseline cell the candidate has no result for: a run that lost cells must not pass for having fewer cells to judge.
Inconclusive cells neither pass nor fail it: they are counted in the verdict and listed. Two runs that share no
cell cannot be judged at all: that is its own state, never a pass.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import pandas as pd

from detbench.bench.core.stats import judge, significance
from detbench.reports.load import Run

REGRESSION = judge.REGRESSION  # "regression": the names CI and the tests grep stay fixed
IMPROVEMENT = judge.IMPROVEMENT  # "improvement"
UNCHANGED = judge.UNCHANGED  # "unchanged": judged on blocks, no change beyond the threshold
INCONCLUSIVE = judge.INCONCLUSIVE  # "inconclusive": too noisy, too few blocks, or the host differs
WITHIN_NOISE = "within noise"  # noise band rule: beyond the threshold, inside the band
WITHIN_THRESHOLD = "within threshold"  # noise band rule
BOTH_FAILED = "both not ok"
ONLY_BASELINE = "missing in candidate"
ONLY_CANDIDATE = "new in candidate"
INVALID = "invalid"  # an implausible figure on a side (significance.implausible_throughput): named, never judged

BASIS_REPEATS = "repeats (between-repeat spread)"
BASIS_BLOCKS_BAND = "blocks + between-repeat band (2 repeats)"
BASIS_BLOCKS = "blocks (weak: one repeat on a side)"
BASIS_BAND = "noise band: per-iteration IQR, v1 result"
HOST_DIFFERS = "host differs"

MIN_BLOCKS = significance.MIN_UNITS
CANARY_TOLERANCE = 0.25  # the canary moves a few % between quiet leases; beyond this the host is another one
HOST_BOUND_UTIL_PCT = 80.0  # below this mean GPU utilisation the host sets the pace
# The widest lease-to-lease move of the same software the docs quote: docs/results-h100.md ("host-bound figures
# (most detectors at batch 8) move 10-60 % between leases"), measured on lent H100 VMs (torch 2.11.0+cu130); the
# widest pair in docs/NOTES.md is SSDlite320 eager FP32 batch 8 at 67.1 vs 42.4 img/s on two leases (1.58x). A weak
# (single-repeat) regression gates only beyond it. A fold: max(r, 1/r) - 1 of the throughput ratio r.
LEASE_MOVE_MAX = 0.60
WEAK_NOT_GATING = "one repeat a side, between-run noise unmeasured; rerun with --repeats 3"

GATE_NONE = "nothing to compare"  # a single run
GATE_PASS = "pass"
GATE_FAIL = "fail"  # a regression, or a baseline cell without a candidate result
GATE_INCOMPARABLE = "nothing comparable"  # the two runs share no cell

# The environment facts that change what a throughput means; a difference is said in the verdict.
GATE_ENV_KEYS = (
    ("gpu", "GPU"),
    ("torch", "torch"),
    ("cuda", "CUDA"),
    ("driver", "driver"),
    ("cpu", "CPU"),
    ("cpu_count", "CPU count"),
)

_KEY = ["cell_id"]
_CARRY = ["model", "mode", "compile", "precision", "batch_size", "gpus", "variant"]
TABLE_COLUMNS = [
    "cell_id",
    *_CARRY,
    "status_base",
    "status_cand",
    "reason_cand",
    "throughput_base",
    "throughput_cand",
    "ratio",
    "change",
    "ci_low",
    "ci_high",
    "p_value",
    "blocks_base",
    "blocks_cand",
    "repeats_base",
    "repeats_cand",
    "spread_base",
    "spread_cand",
    "noise_band",
    "band",
    "gpu_util_base",
    "gpu_util_cand",
    "host_bound",
    "basis",
    "weak",
    "host_differs",
    "verdict",
    "gating",
    "why",
]
_NUMERIC = [
    "throughput_base",
    "throughput_cand",
    "ratio",
    "change",
    "ci_low",
    "ci_high",
    "p_value",
    "blocks_base",
    "blocks_cand",
    "repeats_base",
    "repeats_cand",
    "spread_base",
    "spread_cand",
    "noise_band",
    "band",
    "gpu_util_base",
    "gpu_util_cand",
]


@dataclass(frozen=True)
class RunEvidence:
    """What one run says about its own noise and host: per-cell block throughputs and its host canary."""

    block_ips: dict[str, list[float]]  # cell id -> images/s of each timed block (ok cells with blocks only)
    canary_ms: float | None  # median host canary over every block of the run; None when none was timed
    repeat_ips: dict[str, list[float]] = field(default_factory=dict)  # cell id -> each repeat's median block images/s
    invalid: dict[str, str] = field(default_factory=dict)  # cell id -> the implausible figure of an ok cell

    @property
    def repeats(self) -> int:
        """The most repeats any cell of the run has (1 for a run without ``--repeats``, 0 without blocks)."""
        return max((len(v) for v in self.repeat_ips.values()), default=0)

    @classmethod
    def of(cls, run: Run) -> RunEvidence:
        blocks: dict[str, list[float]] = {}
        repeats: dict[str, list[float]] = {}
        canaries: list[float] = []
        invalid = {r.cell.id: why for r in run.results if r.status == "ok" for why in [implausible_figures(r)] if why}
        for result in run.results:
            measured = result.measurement
            if measured is None or result.cell.id in invalid:
                continue
            canaries += [b.host_canary_ms for b in measured.blocks if _ok(b.host_canary_ms) and b.host_canary_ms > 0]
            if result.status == "ok" and measured.blocks:
                # per-GPU images/s for multi-GPU cells too: the ratio of medians does not depend on the scale
                timed = [b for b in measured.blocks if b.median_ms > 0]
                batch = result.measured_batch_size
                if batch is None:  # a batch search that found no batch that fits: nothing timed to compare
                    continue
                blocks[result.cell.id] = [batch * 1000.0 / b.median_ms for b in timed]
                per_repeat: dict[int, list[float]] = {}
                for block, ips in zip(timed, blocks[result.cell.id]):
                    per_repeat.setdefault(block.repeat, []).append(ips)
                repeats[result.cell.id] = [statistics.median(per_repeat[r]) for r in sorted(per_repeat)]
        return cls(blocks, statistics.median(canaries) if canaries else None, repeats, invalid)


def implausible_figures(result: Any) -> str | None:
    """Why an ok cell's figures cannot be a measurement (its throughput, or a block's time), or None."""
    if result.throughput_ips is not None:
        why = significance.implausible_throughput(result.throughput_ips)
        if why:
            return why
    batch = result.measured_batch_size
    for block in result.measurement.blocks if result.measurement and batch else ():
        ms = block.median_ms
        ips = batch * 1000.0 / ms if _ok(ms) and ms > 0 else float("nan")
        if significance.implausible_throughput(ips):
            return f"a block of {ms:.3g} ms (round {block.round}) is {ips:.3g} images/s"
    return None


@dataclass(frozen=True)
class HostCheck:
    """The two runs' host canaries (ms; lower is a faster host)."""

    canary_base_ms: float | None = None
    canary_cand_ms: float | None = None

    @property
    def shift(self) -> float | None:
        """Candidate canary over baseline canary, minus 1 (+0.5: the candidate's host ran the loop 50% slower)."""
        if self.canary_base_ms and self.canary_cand_ms:
            return self.canary_cand_ms / self.canary_base_ms - 1.0
        return None

    @property
    def differs(self) -> bool:
        # symmetric: 1.0 -> 1.3 ms and 1.3 -> 1.0 ms are the same difference of hosts, in either file order
        if not (self.canary_base_ms and self.canary_cand_ms):
            return False
        high, low = max(self.canary_base_ms, self.canary_cand_ms), min(self.canary_base_ms, self.canary_cand_ms)
        return high / low - 1.0 > CANARY_TOLERANCE

    def describe(self) -> str:
        return f"host canary {self.canary_base_ms:.3g} -> {self.canary_cand_ms:.3g} ms ({self.shift:+.0%})"


@dataclass
class Comparison:
    """One candidate run against the baseline; ``table`` has one row per cell seen in either."""

    baseline: str
    candidate: str
    threshold: float
    table: pd.DataFrame
    environment_changes: list[str] = field(default_factory=list)  # "GPU A -> B", see environment_changes
    host: HostCheck = field(default_factory=HostCheck)
    repeats: tuple[int, int] = (0, 0)  # the most repeats a cell has in the baseline / candidate (0: no blocks)
    between_run_band: float | None = None  # stated between-run noise (a fold); None: not stated

    def count(self, verdict: str) -> int:
        return int((self.table["verdict"] == verdict).sum())

    @property
    def regressions(self) -> pd.DataFrame:
        return self.table[self.table["verdict"] == REGRESSION]

    @property
    def improvements(self) -> pd.DataFrame:
        return self.table[self.table["verdict"] == IMPROVEMENT]

    @property
    def inconclusive(self) -> pd.DataFrame:
        """Cells too noisy, too thinly measured or on too different hosts to judge: listed, never passed or failed."""
        return self.table[self.table["verdict"] == INCONCLUSIVE]

    @property
    def invalid(self) -> pd.DataFrame:
        """Cells with an implausible figure on a side: named with it, never judged."""
        return self.table[self.table["verdict"] == INVALID]

    @property
    def missing(self) -> pd.DataFrame:
        """Baseline cells the candidate has no result for."""
        return self.table[self.table["verdict"] == ONLY_BASELINE]

    @property
    def against_gate(self) -> pd.DataFrame:
        """Rows that fail the gate: regressions (ok -> not ok included) and baseline cells missing in the candidate;
        a weak regression only beyond ``LEASE_MOVE_MAX``."""
        return self.table[self.table["gating"].astype(bool)]

    @property
    def weak_regressions(self) -> pd.DataFrame:
        """Regressions on weak evidence (one repeat a side, no stated band) that do not fail the gate."""
        return self.table[(self.table["verdict"] == REGRESSION) & ~self.table["gating"].astype(bool)]

    @property
    def shared(self) -> int:
        """Cells present in both runs, whatever their status."""
        return int(((self.table["status_base"] != "") & (self.table["status_cand"] != "")).sum())

    @property
    def comparable(self) -> bool:
        """Some cell is in both runs with no implausible figure on either side: a pair whose shared cells are all
        invalid compares nothing (it used to pass the gate)."""
        both = (self.table["status_base"] != "") & (self.table["status_cand"] != "")
        return bool((both & (self.table["verdict"] != INVALID)).any())

    @property
    def weak(self) -> int:
        """Cells judged on blocks with one repeat on a side (weak evidence: between-run noise unmeasured)."""
        return int((self.table["basis"] == BASIS_BLOCKS).sum())

    @property
    def repeats_note(self) -> str:
        """The header line saying what the verdicts rest on: the repeats per side."""
        base, cand = self.repeats
        if min(base, cand) >= MIN_BLOCKS:
            basis = "verdicts test the between-repeat spread"
        elif min(base, cand) >= 2:
            basis = f"fewer than {MIN_BLOCKS} repeats: blocks tested, flags must exceed the between-repeat spread"
        elif min(base, cand) == 1:
            basis = "weak: one repeat on a side, between-run noise unmeasured (use --repeats 3 or detbench-ab)"
        else:
            basis = "no blocks on a side: judged on the per-iteration noise band"
        if min(base, cand) < 2:
            basis += (f"; stated between-run band ±{self.between_run_band:.0%}" if self.between_run_band is not None
                      else f"; weak regressions gate only beyond a {LEASE_MOVE_MAX:.0%} move")
        return f"repeats ({self.candidate} vs {self.baseline}): baseline {base}, candidate {cand}; {basis}"

    @property
    def banded(self) -> int:
        """Cells judged on the per-iteration noise band (a side without blocks: a v1 result)."""
        return int((self.table["basis"] == BASIS_BAND).sum())

    @property
    def host_notes(self) -> list[str]:
        """What differs between the two hosts: the canary (when beyond the tolerance), then the environment."""
        notes = [f"{self.host.describe()}, beyond ±{CANARY_TOLERANCE:.0%}"] if self.host.differs else []
        return notes + self.environment_changes


def relative_spread(iqr_ms: float | None, median_ms: float | None, cov: float | None) -> float | None:
    """IQR / median of the per-iteration times, else their CoV, else None (not measured)."""
    if _ok(iqr_ms) and _ok(median_ms) and median_ms > 0:
        return iqr_ms / median_ms
    if _ok(cov):
        return cov
    return None


def environment_changes(base: dict[str, Any], cand: dict[str, Any]) -> list[str]:
    """``["GPU A -> B", "torch x -> y"]`` for the GPU, torch, CUDA, driver, CPU and CPU-count facts that differ."""
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
    runs: tuple[Run, Run] | None = None,
    between_run_band: float | None = None,
) -> Comparison:
    """Compare two runs of the tidy table (see :func:`detbench.reports.load.tidy`) cell by cell.

    ``runs``: the (baseline, candidate) :class:`Run` objects; their blocks and host canaries give the block
    verdicts and the host check, and their environments the fingerprint check. Without them every cell is
    judged on the noise band. ``environments``: the fingerprints, when ``runs`` is not given.
    ``between_run_band``: the between-run noise to assume (a fold, 0.3 = one run up to 1.3x the other); every
    flag must exceed it, and single-repeat verdicts are then no longer weak. None: weak, see the module doc.
    """
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be a fraction in [0, 1), got {threshold!r}")
    if between_run_band is not None and not (math.isfinite(between_run_band) and between_run_band >= 0):
        raise ValueError(f"between-run band must be a fraction >= 0, got {between_run_band!r}")
    evidence = (RunEvidence.of(runs[0]), RunEvidence.of(runs[1])) if runs else None
    if environments is None and runs:
        environments = (runs[0].environment, runs[1].environment)
    host = HostCheck(evidence[0].canary_ms, evidence[1].canary_ms) if evidence else HostCheck()
    cols = _KEY + _CARRY + [
        "status", "reason", "throughput_ips", "latency_iqr_ms", "latency_median_ms", "latency_cov", "gpu_util_pct_mean",
    ]
    base = frame.loc[frame["run"] == baseline, cols]
    cand = frame.loc[frame["run"] == candidate, cols]
    merged = base.merge(cand, on=_KEY, how="outer", suffixes=("_base", "_cand"), indicator=True)
    rows = [_judge_row(row, threshold, evidence, host, between_run_band) for row in merged.to_dict("records")]
    _judge_family(rows, threshold, between_run_band)
    for out in rows:
        _check_host(out, host)
        out["gating"] = _gates(out)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    table[_NUMERIC] = table[_NUMERIC].astype(float)  # all-None columns would otherwise stay object dtype
    table["gating"] = table["gating"].astype(bool)
    changes = environment_changes(*environments) if environments else []
    return Comparison(
        baseline=baseline, candidate=candidate, threshold=threshold, table=table, environment_changes=changes,
        host=host, repeats=(evidence[0].repeats, evidence[1].repeats) if evidence else (0, 0),
        between_run_band=between_run_band,
    )


def _gates(out: dict[str, Any]) -> bool:
    """Whether the row fails the gate; a weak regression's ``why`` says whether it gates and why (not)."""
    if out["verdict"] == ONLY_BASELINE or out["status_cand"] == "partial":  # a cut cell counts as a missing one
        return True
    if out["verdict"] != REGRESSION:
        return False
    if not out["weak"]:
        return True
    move = _fold(out["ratio"])
    if move is not None and move > LEASE_MOVE_MAX:
        out["why"] += (f"; weak, but a {move:.0%} move is beyond the widest lease-to-lease move "
                       f"({LEASE_MOVE_MAX:.0%}, docs/results-h100.md): gates")
        return True
    out["why"] += f"; not gating ({WEAK_NOT_GATING})"
    return False


def _fold(ratio: float | None) -> float | None:
    """A throughput ratio's move in either direction: max(r, 1/r) - 1 (0.8 and 1.25 are both a 25% move)."""
    if not _ok(ratio) or ratio <= 0:
        return None
    return max(ratio, 1.0 / ratio) - 1.0


def _judge_row(row: dict, threshold: float, evidence: tuple[RunEvidence, RunEvidence] | None,
               host: HostCheck, stated: float | None) -> dict:
    side = "_base" if row["_merge"] != "right_only" else "_cand"
    out: dict[str, Any] = dict.fromkeys(TABLE_COLUMNS)
    out.update({"cell_id": row["cell_id"], **{c: row[c + side] for c in _CARRY}})
    out["batch_size"], out["gpus"] = int(out["batch_size"]), int(out["gpus"])
    out.update(
        status_base=_str(row["status_base"]),
        status_cand=_str(row["status_cand"]),
        reason_cand=_str(row["reason_cand"]),
        throughput_base=_val(row["throughput_ips_base"]),
        throughput_cand=_val(row["throughput_ips_cand"]),
        gpu_util_base=_val(row["gpu_util_pct_mean_base"]),
        gpu_util_cand=_val(row["gpu_util_pct_mean_cand"]),
        basis="",
        weak=False,
        host_differs=False,
        gating=False,
        why="",
    )
    out["host_bound"] = _host_bound(out["gpu_util_base"], out["gpu_util_cand"])
    if row["_merge"] == "left_only":
        out["verdict"] = ONLY_BASELINE
        return out
    if row["_merge"] == "right_only":
        out["verdict"] = ONLY_CANDIDATE
        return out
    invalid = _invalid_sides(out, evidence)
    if invalid:
        out["verdict"], out["why"] = INVALID, f"{invalid}: not judged"
        return out
    cut = [side for side in ("base", "cand") if out[f"status_{side}"] == "partial"]
    if cut:  # a cell cut short is neither a measurement to judge nor a failure (issue 37)
        out["verdict"] = INCONCLUSIVE
        out["why"] = f"partial in the {' and '.join('baseline' if s == 'base' else 'candidate' for s in cut)} " \
                     "(cut short): not judged; --detbench-resume finishes it"
        return out
    base_ok = out["status_base"] == "ok" and _ok(out["throughput_base"]) and out["throughput_base"] > 0
    cand_ok = out["status_cand"] == "ok" and _ok(out["throughput_cand"])
    if base_ok and not cand_ok:
        out["verdict"] = REGRESSION
        out["why"] = f"ok in the baseline, {out['status_cand'] or 'no throughput'} in the candidate"
        return out
    if cand_ok and not base_ok:
        out["verdict"] = IMPROVEMENT
        out["why"] = f"{out['status_base'] or 'no throughput'} in the baseline, ok in the candidate"
        return out
    if not base_ok:
        out["verdict"] = BOTH_FAILED
        return out
    cell_id = out["cell_id"]
    blocks = (evidence[0].block_ips.get(cell_id), evidence[1].block_ips.get(cell_id)) if evidence else None
    if evidence and blocks and blocks[0] and blocks[1]:
        _judge_units(out, (blocks[0], blocks[1]),
                     (evidence[0].repeat_ips.get(cell_id) or [], evidence[1].repeat_ips.get(cell_id) or []), threshold,
                     stated)
    else:
        _judge_band(out, row, threshold, stated)
    return out


def _check_host(out: dict[str, Any], host: HostCheck) -> None:
    """A flag on a host-bound cell between two different hosts is inconclusive: the host may have moved it."""
    if host.differs and out["verdict"] in (REGRESSION, IMPROVEMENT) and out["host_bound"] is not False:
        util = (
            f"GPU utilisation {_pct_text(out['gpu_util_base'])} / {_pct_text(out['gpu_util_cand'])}"
            if out["host_bound"] else "GPU utilisation not measured"
        )
        out["why"] = (
            f"{HOST_DIFFERS}: {host.describe()} and the cell may be host-bound ({util}); "
            f"would be a {out['verdict']} ({out['why']})"
        )
        out["verdict"], out["host_differs"] = INCONCLUSIVE, True


def _invalid_sides(out: dict[str, Any], evidence: tuple[RunEvidence, RunEvidence] | None) -> str:
    """Each side's implausible figure ("baseline: throughput 0 images/s is not positive"), '' when none."""
    found = []
    for i, side in enumerate(("base", "cand")):
        why = evidence[i].invalid.get(out["cell_id"]) if evidence else None
        if why is None and out[f"status_{side}"] == "ok" and out[f"throughput_{side}"] is not None:
            why = significance.implausible_throughput(out[f"throughput_{side}"])
        if why:
            found.append(f"{'baseline' if side == 'base' else 'candidate'}: {why}")
    return "; ".join(found)


def _judge_units(out: dict[str, Any], blocks: tuple[list[float], list[float]],
                 repeats: tuple[list[float], list[float]], threshold: float, stated: float | None = None) -> None:
    """The cell's evidence: the repeats' medians when both sides have enough repeats, else the blocks (see the
    module doc); the verdict comes with the other cells' (:func:`_judge_family`)."""
    n_base, n_cand = len(repeats[0]), len(repeats[1])
    spread_b, spread_c = _between_repeats(repeats[0]), _between_repeats(repeats[1])
    if min(n_base, n_cand) >= MIN_BLOCKS:
        evidence = judge.two_sample_evidence(repeats[0], repeats[1], "repeat")
        basis = BASIS_REPEATS
    elif min(n_base, n_cand) >= 2:
        evidence = judge.two_sample_evidence(blocks[0], blocks[1], "block")
        basis = BASIS_BLOCKS_BAND
    else:
        evidence = judge.two_sample_evidence(blocks[0], blocks[1], "block", weak=stated is None)
        basis = BASIS_BLOCKS
        spread_b, spread_c = significance.relative_spread(blocks[0]), significance.relative_spread(blocks[1])
    if min(len(blocks[0]), len(blocks[1])) < MIN_BLOCKS and basis != BASIS_REPEATS:
        few = f"too few samples ({len(blocks[0])} vs {len(blocks[1])} blocks; need {MIN_BLOCKS} a side)"
        evidence = judge.Evidence(evidence.estimate, None, 0, evidence.units, "block", evidence.weak, few)
    noise = math.hypot(spread_b or 0.0, spread_c or 0.0)
    out.update(
        evidence=evidence,
        blocks_base=len(blocks[0]),
        blocks_cand=len(blocks[1]),
        repeats_base=n_base,
        repeats_cand=n_cand,
        spread_base=spread_b,
        spread_cand=spread_c,
        noise_band=noise,
        band=max(threshold, noise, stated or 0.0),
        basis=basis,
        weak=evidence.weak,
        verdict=INCONCLUSIVE,
    )


def _judge_family(rows: list[dict[str, Any]], threshold: float, stated: float | None) -> None:
    """Every cell judged on units, judged together (detbench.bench.core.stats.judge.decide: Holm across these cells, the
    threshold as the floor); then the two-repeat spread and a stated between-run band must be exceeded too."""
    judged = {i: out.pop("evidence") for i, out in enumerate(rows) if out.get("evidence") is not None}
    for out in rows:
        out.pop("evidence", None)
    verdicts = judge.decide({str(i): e for i, e in judged.items()}, threshold)
    for i in judged:
        out, v = rows[i], verdicts[str(i)]
        verdict, why, ratio = v.verdict, v.reason, v.ratio
        flagged = verdict in (REGRESSION, IMPROVEMENT)
        if out["basis"] == BASIS_BLOCKS_BAND and flagged and ratio is not None and \
                abs(ratio - 1.0) <= out["noise_band"]:
            verdict = INCONCLUSIVE
            why = f"the blocks say {ratio - 1.0:+.1%}, inside the between-repeat spread ±{out['noise_band']:.1%}"
        move = _fold(ratio)
        if verdict in (REGRESSION, IMPROVEMENT) and stated is not None and ratio is not None and move is not None \
                and move <= stated:
            verdict = INCONCLUSIVE
            why = f"a {move:.1%} move ({ratio - 1.0:+.1%}), inside the stated between-run band ±{stated:.0%}"
        out.update(ratio=ratio, change=None if ratio is None else ratio - 1.0, ci_low=v.low, ci_high=v.high,
                   p_value=v.adjusted_p, verdict=verdict, why=why)


def _between_repeats(values: list[float]) -> float | None:
    """Relative range of the repeats' medians ((max - min) / median): the noise between moments of a run."""
    if len(values) < 2:
        return None
    median = statistics.median(values)
    return (max(values) - min(values)) / median if median > 0 else None


def _judge_band(out: dict[str, Any], row: dict, threshold: float, stated: float | None = None) -> None:
    """The v1 rule: beyond the threshold and the root-sum-square of the two runs' per-iteration spreads (and a
    stated between-run band). One run a side: without a stated band the verdict is weak."""
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
    move = _fold(ratio)
    if abs(change) > band and stated is not None and move is not None and move <= stated:
        verdict = WITHIN_NOISE
        why = f"a {move:.1%} move ({change:+.1%}), inside the stated between-run band ±{stated:.0%}"
    elif abs(change) > band:
        verdict = REGRESSION if change < 0 else IMPROVEMENT
        why = f"{change:+.1%} beyond the band ±{band:.1%}"
    elif abs(change) > threshold:
        verdict, why = WITHIN_NOISE, f"{change:+.1%} inside the noise band ±{noise:.1%}"
    else:
        verdict, why = WITHIN_THRESHOLD, f"{change:+.1%} within ±{threshold:.0%}"
    out.update(
        ratio=ratio,
        change=change,
        spread_base=spread_b,
        spread_cand=spread_c,
        noise_band=noise,
        band=max(band, stated or 0.0),
        basis=BASIS_BAND,
        weak=stated is None,
        verdict=verdict,
        why=why,
    )


def _host_bound(util_base: float | None, util_cand: float | None) -> bool | None:
    """True when either side's mean GPU utilisation is below the mark, False when both are above, else None."""
    known = [u for u in (util_base, util_cand) if u is not None]
    if any(u < HOST_BOUND_UTIL_PCT for u in known):
        return True
    return False if len(known) == 2 else None


def _pct_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}%"


def gate(comparisons: list[Comparison]) -> str:
    """GATE_NONE (single run), GATE_INCOMPARABLE (a pair shares no cell), GATE_FAIL or GATE_PASS.

    Nothing comparable wins over a failure: the inputs are wrong, and no other figure can be trusted.
    Inconclusive cells do not fail the gate; the verdict line counts them.
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
            f"{c.candidate} and {c.baseline} share no cell "
            f"({_n(int((c.table['status_base'] != '').sum()), 'baseline cell')}"
            f", {_n(int((c.table['status_cand'] != '').sum()), 'candidate cell')})" if not c.shared else
            f"every cell {c.candidate} and {c.baseline} share has an implausible figure "
            f"({_n(c.count(INVALID), 'invalid cell')}, not judged)"
            for c in incomparable
        )
        return f"VERDICT: nothing comparable: {pairs}" + _env_note(comparisons)
    weak_regressions = sum(len(c.weak_regressions) for c in comparisons)
    regressions = sum(c.count(REGRESSION) for c in comparisons) - weak_regressions
    missing = sum(c.count(ONLY_BASELINE) for c in comparisons)
    improvements = sum(c.count(IMPROVEMENT) for c in comparisons)
    inconclusive = sum(c.count(INCONCLUSIVE) for c in comparisons)
    invalid = sum(c.count(INVALID) for c in comparisons)
    host_inconclusive = sum(int(c.table["host_differs"].sum()) for c in comparisons)
    compared = sum(int(c.table["ratio"].notna().sum()) for c in comparisons)
    weak = sum(c.weak for c in comparisons)
    pairs = "; ".join(f"{c.candidate} vs {c.baseline}" for c in comparisons)
    if regressions or missing:
        head = f"{_n(regressions, 'regression')} beyond {pct} and the measured noise"
        if missing:
            head += f", {_n(missing, 'baseline cell')} missing in candidate"
    else:
        head = f"no regressions beyond {pct} and the measured noise"
    if weak_regressions:
        head += f", {_n(weak_regressions, 'weak regression')} not gating ({WEAK_NOT_GATING})"
    undecided = f"{inconclusive} inconclusive" + (f" ({host_inconclusive} because the host differs)"
                                                  if host_inconclusive else "")
    weak_note = f"; weak: {weak} of them judged on one run per side" if weak else ""
    invalid_note = f"; {invalid} invalid (implausible figures, not judged)" if invalid else ""
    return (
        f"VERDICT: {head}, {_n(improvements, 'improvement')}, {undecided}, {compared} cells compared ({pairs})"
        + weak_note + invalid_note + _env_note(comparisons)
    )


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


def _env_note(comparisons: list[Comparison]) -> str:
    notes = []
    for c in comparisons:
        if c.host.differs:
            notes.append(f"host differs ({c.candidate} vs {c.baseline}): {c.host.describe()}, beyond "
                         f"±{CANARY_TOLERANCE:.0%}: host-bound cells' changes are inconclusive")
        if c.environment_changes:
            notes.append(f"environment differs ({c.candidate} vs {c.baseline}): {', '.join(c.environment_changes)}")
    return "; " + "; ".join(notes) if notes else ""


def has_regression(comparisons: list[Comparison]) -> bool:
    """True when a comparison has a row against the gate (a regression or a missing baseline cell)."""
    return any(len(c.against_gate) for c in comparisons)


def _ok(value: float | None) -> TypeGuard[float]:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def _val(value: object) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if not isinstance(value, (int, float, str)):
        raise TypeError(f"not a number: {value!r:.40}")
    return float(value)


def _str(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
