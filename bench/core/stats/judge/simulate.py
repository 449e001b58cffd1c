"""What a gate design can promise, on noise fitted from real runs: the false-flag rate and the detectable change.

The model of one cell's log round ratio (candidate / baseline throughput) in pair ``p``, round ``r``::

    d = -log(1 + plant) + u_p + g_p * (sqrt(1 - rho) * e_pr + sqrt(rho) * c_pr) + i_pr

- ``u_p ~ N(0, pair_sd)``: the per-process offset of the pair (fresh processes of the same software differ);
- ``e_pr``: block-to-block noise, Student t with ``nu`` degrees of freedom (near-Cauchy tails: a host stall
  moves a round by tens of %), scaled so its robust SD (1.4826 x MAD) is ``block_sd``; ``c_pr`` the same noise
  shared by every cell of that pair and round (``rho``: the host's state is common to the cells timed then);
  ``g_p`` a pair's noise level (log-normal, ``pair_level_sd``: some pairs are noisier throughout);
- ``i_pr ~ N(0, sqrt(iteration_share / block_s * fitted_block_s) * block_sd)``: iteration noise inside a block,
  which shrinks with longer blocks (the block noise does not: it is one draw of the host's state per resume).

:func:`fit` estimates the components from A/B files (``ab.json``: every round of every pair); :func:`simulate`
runs a design thousands of times through the product's own judge
(:func:`~detbench.bench.core.stats.judge.evidence.pair_evidence` statistics,
:func:`~detbench.bench.core.stats.judge.family.holm`), vectorised, seeded. ``python -m
detbench.bench.core.stats.judge.simulate FILE...`` fits and prints both for the default design.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detbench.bench.core.stats.judge.evidence import MAD_SCALE
from detbench.bench.core.stats.judge.family import ALPHA, POWER, detectable_change, look_alpha

SEED = 20261205


@dataclass(frozen=True)
class Components:
    """One cell's noise (log scale; see the module doc)."""

    block_sd: float
    pair_sd: float
    name: str = "cell"


@dataclass(frozen=True)
class Noise:
    """Noise of a set of cells and what they share."""

    cells: tuple[Components, ...]
    nu: float = 1.2
    rho: float = 0.0
    pair_level_sd: float = 0.0
    fitted_block_s: float = 0.5
    iteration_share: float = 0.2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Design:
    pairs: int = 8
    rounds: int = 6
    block_s: float = 0.25
    floor: float = 0.02
    alpha: float = ALPHA
    looks: int = 1  # 2: a first look at half the rounds (alpha split between the looks)


@dataclass
class Simulated:
    """What ``runs`` simulated gates of a design gave."""

    runs: int
    false_flag_rate: float  # runs flagging any cell without a plant (a regression or an improvement)
    false_regression_rate: float  # runs flagging a regression in a cell without a plant (the gate fails)
    flag_rate: list[float]  # per cell: share of runs flagging it as a regression
    detectable: list[float]  # per cell: median detectable change (family doc of detbench.bench.core.stats.judge.family)
    stopped_early: float = 0.0  # share of planted cells flagged at the first look
    plants: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _t_robust_sd(nu: float) -> float:
    from scipy.stats import t  # noqa: PLC0415

    return MAD_SCALE * float(t.ppf(0.75, nu))


def tail_share(nu: float, scales: float = 3.0) -> float:
    """Share of a t(nu) draw beyond ``scales`` robust SDs."""
    from scipy.stats import t  # noqa: PLC0415

    return float(2 * t.sf(scales * _t_robust_sd(nu), nu))


def fit_nu(share: float, scales: float = 3.0) -> float:
    """The t degrees of freedom whose share beyond ``scales`` robust SDs is ``share`` (bisection on log nu)."""
    low, high = math.log(0.3), math.log(200.0)
    if share <= tail_share(200.0, scales):
        return 200.0
    for _ in range(60):
        mid = (low + high) / 2
        if tail_share(math.exp(mid), scales) > share:
            low = mid
        else:
            high = mid
    return math.exp((low + high) / 2)


def runs_of(path: Path) -> list[tuple[dict[str, list[list[float]]], float]]:
    """Per run in a file, per cell, per pair, the log round ratios (baseline / candidate block time) and the block
    length: an ``ab.json`` (one run), or a summary holding ``runs`` with their ``log_ratios`` (the CPU acceptance
    summary, scripts/gate_cpu_acceptance.py)."""
    data = json.loads(Path(path).read_text())
    if "runs" in data:
        return [({cid: [p for p in pairs if p] for cid, pairs in run["log_ratios"].items()
                  if sum(1 for p in pairs if p) >= 2}, float(run.get("block_s") or 0.25)) for run in data["runs"]]
    out: dict[str, list[list[float]]] = {}
    for cell_id, cell in data.get("cells", {}).items():
        pairs = [[math.log(r["base_ms"] / r["cand_ms"]) for r in rounds if r.get("cand_ms", 0) > 0 and
                  r.get("base_ms", 0) > 0] for rounds in cell.get("blocks", {}).values()]
        pairs = [p for p in pairs if p]
        if len(pairs) >= 2:
            out[cell_id] = pairs
    return [(out, float(data.get("block_s") or 0.5))]


def fit(paths: Iterable[Path], *, iteration_share: float = 0.2, seed: int = SEED) -> Noise:
    """The components of every cell over the given runs (each run's pairs are fresh: pooled per cell name).

    ``block_sd``: robust SD of rounds around their pair's median; ``nu``: from the share of rounds beyond 3 robust
    SDs (all cells pooled); ``rho``: the mean correlation of two cells' residuals in the same pair and round;
    ``pair_level_sd``: SD of log(each pair's robust SD / its cell's) beyond a few rounds' own scatter; ``pair_sd``:
    the variance of the pair medians beyond what their rounds' noise explains (that part simulated with the
    fitted noise), pooled over the cells."""
    per_cell: dict[str, list[list[float]]] = {}
    by_slot: dict[tuple[int, int, int], dict[str, float]] = {}  # (run, pair, round index) -> cell -> residual
    runs = [run for path in paths for run in runs_of(path)]
    block_s = runs[-1][1] if runs else 0.5
    for run_index, (cells, _) in enumerate(runs):
        for cell_id, pairs in cells.items():
            per_cell.setdefault(cell_id, []).extend(pairs)
            for p, rounds in enumerate(pairs):
                median = float(np.median(rounds))
                for r, value in enumerate(rounds):
                    by_slot.setdefault((run_index, p, r), {})[cell_id] = value - median
    if not per_cell:
        raise ValueError("no cell with 2 worker pairs or more in the given files")
    robust = {}
    standardised = []
    levels: list[float] = []
    level_sizes: list[int] = []
    for cell_id, pairs in per_cell.items():
        residuals = np.concatenate([np.asarray(p) - np.median(p) for p in pairs if len(p) >= 3])
        scale = MAD_SCALE * float(np.median(np.abs(residuals[residuals != 0]))) if len(residuals) else 0.0
        robust[cell_id] = scale
        if scale > 0:
            standardised.append(residuals[residuals != 0] / scale)
            for one in pairs:
                if len(one) >= 3:
                    own = np.abs(np.asarray(one) - np.median(one))
                    own = own[own > 0]
                    if len(own):
                        levels.append(math.log(max(MAD_SCALE * float(np.median(own)), 1e-6) / scale))
                        level_sizes.append(len(one))
    pooled = np.concatenate(standardised)
    nu = fit_nu(float(np.mean(np.abs(pooled) > 3.0)))
    correlations = []
    names = sorted(robust)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            xs = [(s[a] / robust[a], s[b] / robust[b]) for s in by_slot.values() if a in s and b in s
                  and s[a] != 0 and s[b] != 0]
            if len(xs) >= 8:
                arr = np.clip(np.asarray(xs), -3, 3)  # winsorised: one stall must not make the correlation
                correlations.append(float(np.corrcoef(arr[:, 0], arr[:, 1])[0, 1]))
    rho = float(np.clip(np.mean(correlations), 0.0, 0.95)) if correlations else 0.0
    rng = np.random.default_rng(seed)
    level_sd = _level_sd(rng, levels, level_sizes, nu)
    base = Noise((), nu, rho, level_sd, block_s, iteration_share)
    excess, weights = [], []
    for cell_id, pairs in per_cell.items():
        medians = np.array([np.median(p) for p in pairs])
        n = round(np.mean([len(p) for p in pairs]))
        noise_only = _noise(rng, base, np.array([robust[cell_id]]), np.zeros(1), 4000, 1, n, block_s)[:, 0, 0, :]
        var_median = float(np.var(np.median(noise_only, axis=-1)))
        excess.append(float(np.var(medians, ddof=1)) - var_median)
        weights.append(len(medians) - 1)
    # pooled over cells: a few pairs per cell estimate a variance too loosely to tell the cells apart
    pair_sd = math.sqrt(max(0.0, float(np.average(excess, weights=weights))))
    fitted = tuple(Components(robust[cell_id], pair_sd, cell_id) for cell_id in per_cell)
    return Noise(fitted, nu, rho, level_sd, block_s, iteration_share)


def _level_sd(rng: np.random.Generator, levels: list[float], sizes: list[int], nu: float) -> float:
    """The SD of the pairs' noise levels beyond what a robust SD of a few rounds scatters by itself."""
    if len(levels) <= 2:
        return 0.0
    n = max(3, round(float(np.mean(sizes))))
    draws = rng.standard_t(nu, (4000, n))
    spread = np.abs(draws - np.median(draws, axis=1, keepdims=True))
    spread = np.where(spread > 0, spread, np.nan)
    sampling = float(np.nanvar(np.log(np.nanmedian(spread, axis=1))))
    return math.sqrt(max(0.0, float(np.var(levels, ddof=1)) - sampling))


def _noise(rng: np.random.Generator, noise: Noise, block_sd: np.ndarray, pair_sd: np.ndarray, runs: int, pairs: int,
           rounds: int, block_s: float) -> np.ndarray:
    """Log round ratios without a plant, shape (runs, cells, pairs, rounds)."""
    cells = len(block_sd)
    unit = _t_robust_sd(noise.nu)
    iteration = math.sqrt(noise.iteration_share * noise.fitted_block_s / block_s)
    block_part = math.sqrt(max(0.0, 1.0 - noise.iteration_share))
    own = rng.standard_t(noise.nu, (runs, cells, pairs, rounds)) / unit
    shared = rng.standard_t(noise.nu, (runs, 1, pairs, rounds)) / unit
    level = np.exp(rng.normal(0.0, noise.pair_level_sd, (runs, 1, pairs, 1)))
    mixed = level * (math.sqrt(1 - noise.rho) * own + math.sqrt(noise.rho) * shared)
    b = block_sd[None, :, None, None]
    offsets = rng.normal(0.0, 1.0, (runs, cells, pairs, 1)) * pair_sd[None, :, None, None]
    return offsets + b * (block_part * mixed + iteration * rng.normal(0.0, 1.0, (runs, cells, pairs, rounds)))


def _judge(logs: np.ndarray, alpha: float, floor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The product's rule, vectorised over runs: (regression flags, improvement flags, se, df) per run and cell."""
    from scipy.stats import t  # noqa: PLC0415

    medians = np.median(logs, axis=-1)  # (runs, cells, pairs)
    pairs = medians.shape[-1]
    estimate = medians.mean(axis=-1)
    se = medians.std(axis=-1, ddof=1) / math.sqrt(pairs)
    df = pairs - 1
    stat = estimate / np.where(se > 0, se, np.inf)
    margin = math.log(1.0 / (1.0 - floor))
    regression = _holm_reject(t.cdf(stat, df), alpha) & (estimate < -margin)
    improvement = _holm_reject(t.sf(stat, df), alpha) & (estimate > margin)
    return regression, improvement, se, np.full(se.shape, df)


def _holm_reject(p: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's step-down rejections along the last axis (cells)."""
    m = p.shape[-1]
    order = np.argsort(p, axis=-1)
    ranked = np.take_along_axis(p, order, axis=-1)
    passes = ranked <= alpha / (m - np.arange(m))
    accepted = np.cumprod(passes, axis=-1).astype(bool)  # step-down: stop at the first that fails
    out = np.zeros_like(accepted)
    np.put_along_axis(out, order, accepted, axis=-1)
    return out


def simulate(noise: Noise, design: Design, plants: Sequence[float] | None = None, *, runs: int = 4000,
             seed: int = SEED) -> Simulated:
    """``runs`` gates of ``design`` over ``noise``'s cells; ``plants[c]``: cell c's planted slowdown (fraction of
    its time, 0 for none). Two looks: the first at half the rounds, each at ``alpha / 2``; a cell flagged at the
    first look keeps its verdict."""
    cells = len(noise.cells)
    plants = list(plants) if plants is not None else [0.0] * cells
    if len(plants) != cells:
        raise ValueError(f"{len(plants)} plants for {cells} cells")
    if design.pairs < 2 or design.rounds < 1:
        raise ValueError("a design needs 2 pairs or more and 1 round or more")
    rng = np.random.default_rng(seed)
    block_sd = np.array([c.block_sd for c in noise.cells])
    pair_sd = np.array([c.pair_sd for c in noise.cells])
    logs = _noise(rng, noise, block_sd, pair_sd, runs, design.pairs, design.rounds, design.block_s)
    logs -= np.log1p(np.asarray(plants))[None, :, None, None]
    regression = np.zeros((runs, cells), dtype=bool)
    improvement = np.zeros((runs, cells), dtype=bool)
    early = np.zeros((runs, cells), dtype=bool)
    if design.looks == 2 and design.rounds >= 2:
        regression, improvement, _, _ = _judge(logs[..., : design.rounds // 2],
                                               look_alpha(design.alpha, 2, 1), design.floor)
        early = regression.copy()
    final_reg, final_imp, se, df = _judge(logs, look_alpha(design.alpha, design.looks), design.floor)
    regression |= final_reg
    improvement |= final_imp
    unplanted = np.asarray(plants) == 0
    flagged_any = (regression | improvement)[:, unplanted].any(axis=-1) if unplanted.any() else np.zeros(runs, bool)
    failed = regression[:, unplanted].any(axis=-1) if unplanted.any() else np.zeros(runs, bool)
    final_alpha = look_alpha(design.alpha, design.looks)
    detectable = [float(np.median([detectable_change(float(s), float(d), cells, design.floor, final_alpha, POWER)
                                   for s, d in zip(se[:200, c], df[:200, c], strict=True)])) for c in range(cells)]
    planted = ~unplanted
    return Simulated(runs, float(flagged_any.mean()), float(failed.mean()), [float(x) for x in regression.mean(axis=0)],
                     detectable,
                     float(early[:, planted].mean()) if planted.any() else 0.0, plants)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detbench.bench.core.stats.judge.simulate",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="ab.json files (or a CPU acceptance summary) to fit on")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--block-s", type=float, default=0.25)
    parser.add_argument("--floor", type=float, default=0.02)
    parser.add_argument("--looks", type=int, default=1)
    parser.add_argument("--runs", type=int, default=4000)
    parser.add_argument("--json", type=Path, help="also write the fit and the results here")
    args = parser.parse_args(argv)
    noise = fit(args.files)
    design = Design(args.pairs, args.rounds, args.block_s, args.floor, looks=args.looks)
    result = simulate(noise, design, runs=args.runs)
    print(f"fitted on {len(args.files)} file(s): nu {noise.nu:.2f}, rho {noise.rho:.2f}, pair noise level SD "
          f"{noise.pair_level_sd:.2f}, fitted block {noise.fitted_block_s:g} s")
    print(f"design {design.pairs} pairs x {design.rounds} rounds x {design.block_s:g} s blocks, floor "
          f"{design.floor:.0%}, {design.looks} look(s), {result.runs} simulated runs over {len(noise.cells)} cells: a "
          f"false regression in {result.false_regression_rate:.1%}, any false flag in {result.false_flag_rate:.1%}")
    for cell, detectable in sorted(zip(noise.cells, result.detectable, strict=True), key=lambda x: x[0].name):
        print(f"  {cell.name:48s} block {cell.block_sd:.1%}  pair {cell.pair_sd:.1%}  detectable {detectable:.1%}")
    if args.json:
        args.json.write_text(json.dumps({"noise": noise.to_dict(), "design": asdict(design),
                                         "result": result.to_dict()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
