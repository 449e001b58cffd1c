"""Simulations of the one judge (detbench.bench.core.stats.judge) behind every verdict; docs/ab.md quotes the output.

``python scripts/judge_simulate.py [--runs N] [--json FILE]`` prints, seeded:

- gate: the noise fitted on the committed H200 gate runs (docs/examples/gate-h200*) and on the committed CPU
  acceptance runs (docs/examples/gate-cpu/acceptance.json), then per design the family-wise false-flag rate of
  same-software runs and each cell's detectable change (detbench.bench.core.stats.judge.simulate);
- history: ``detbench-history compare`` on a 15-cell run of unchanged software against 8 earlier runs per cell
  (between-run noise 3 %, log-normal): the share of runs that fail, judged by the one judge
  (detbench.reports.history.analysis.judge_cells) and, for reference, by the former per-cell rule (analysis.judge);
- report: ``detbench-report --fail-on-regression`` on two runs of 15 cells with 3 repeats a side (between-repeat
  noise 3 %): the share of runs that flag a cell, with the judge's two-run evidence and Holm across the cells.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from detbench.bench.core.stats import judge
from detbench.bench.core.stats.judge import simulate
from detbench.reports.history import analysis

ROOT = Path(__file__).resolve().parents[1]
H200 = sorted(ROOT.glob("docs/examples/gate-h200*/**/ab.json"))
CPU = sorted(ROOT.glob("docs/examples/gate-cpu/acceptance.json"))
SEED = 20261205
CPU_PLANTS = ("ssdlite320_mobilenet_v3_large-infer-eager-fp32-bs1-gpu1-160x160",  # 10 %
              "resnet50-infer-eager-fp32-bs1-gpu1-160x160")  # 5 %
CPU_BUDGET_S = 275.0  # scripts/gate_cpu_acceptance.py's


def cpu_costs(path: Path) -> dict[str, float]:
    """What a CPU acceptance run's time went to (medians over its runs): fixed seconds per side (the sides' start,
    set-up and block sizing, less a constant 5 s), timed seconds per paired visit (two blocks, as the host's load
    stretched them) and the seconds neither timed nor fixed (the coordinator between blocks, the results)."""
    runs = json.loads(path.read_text())["runs"]
    per_side = np.median([(r["setup_s"] - 5.0) / (2 * r["pairs"]) for r in runs])
    visits = [sum(len(p) for pairs in r["log_ratios"].values() for p in pairs) for r in runs]
    per_visit = np.median([r["timed_s"] / v for r, v in zip(runs, visits, strict=True)])
    other = np.median([r["wall_s"] - r["setup_s"] - r["timed_s"] for r in runs])
    return {"fixed_s_per_side": round(float(per_side), 2), "timed_s_per_visit": round(float(per_visit), 3),
            "other_s": round(float(other), 1), "cells": 4.0, "budget_s": CPU_BUDGET_S}


def cpu_rounds(costs: dict[str, float], pairs: int) -> int:
    """Rounds per pair a CPU budget leaves for ``pairs`` worker pairs (detbench-ab's reserve: 5 s + 1.5 s a side)."""
    sides = 2 * pairs
    timed = costs["budget_s"] - 5.0 - costs["fixed_s_per_side"] * sides - (5.0 + 1.5 * sides) - costs["other_s"]
    return max(2, int(timed / (costs["timed_s_per_visit"] * pairs * costs["cells"])))


def history_fail_rate(runs: int, cells: int = 15, history: int = 8, noise: float = 0.03, threshold: float = 0.05,
                      seed: int = SEED) -> tuple[float, float]:
    """Share of pure-noise runs that ``detbench-history compare --fail-on-regression`` fails: (one judge, former
    per-cell rule)."""
    rng = np.random.default_rng(seed)
    family = single = 0
    for _ in range(runs):
        series = np.exp(rng.normal(0.0, noise, (cells, history + 1))) * 100.0
        bands = {str(c): (float(series[c, -1]), analysis.noise_band(list(series[c, :-1]))) for c in range(cells)}
        verdicts = analysis.judge_cells(bands, threshold)
        family += any(v.verdict == analysis.REGRESSION for v in verdicts.values())
        single += any(analysis.judge(value, band, threshold).verdict == analysis.REGRESSION
                      for value, band in bands.values())
    return family / runs, single / runs


def report_flag_rate(runs: int, cells: int = 15, repeats: int = 3, noise: float = 0.03, threshold: float = 0.05,
                     seed: int = SEED) -> float:
    """Share of pure-noise run pairs in which the two-run judge flags any cell (regression or improvement)."""
    rng = np.random.default_rng(seed)
    flagged = 0
    for _ in range(runs):
        values = np.exp(rng.normal(0.0, noise, (cells, 2, repeats))) * 100.0
        evidence = {str(c): judge.two_sample_evidence(list(values[c, 0]), list(values[c, 1]), "repeat")
                    for c in range(cells)}
        flagged += any(v.verdict in (judge.REGRESSION, judge.IMPROVEMENT)
                       for v in judge.decide(evidence, threshold).values())
    return flagged / runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=4000, help="simulated gate runs per design")
    parser.add_argument("--history-runs", type=int, default=2000)
    parser.add_argument("--parts", default="h200,cpu,history", help="comma-separated: h200, cpu, history")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    out: dict = {"seed": SEED}
    fits = {"h200": H200, "cpu": CPU}
    for name, files in fits.items():
        if not files or name not in parts:
            continue
        noise = simulate.fit(files)
        cells = len(noise.cells)
        print(f"{name}: fitted on {len(files)} runs, {cells} cells: nu {noise.nu:.2f}, rho {noise.rho:.2f}, pair "
              f"noise level SD {noise.pair_level_sd:.2f}, pair offset SD {noise.cells[0].pair_sd:.2%}")
        entry: dict = {"files": [str(f.relative_to(ROOT)) for f in files], "noise": noise.to_dict(), "designs": []}
        if name == "h200":  # the 8 inference cells of the gate's matrix
            noise = simulate.Noise(tuple(c for c in noise.cells if "-infer-" in c.name), noise.nu, noise.rho,
                                   noise.pair_level_sd, noise.fitted_block_s, noise.iteration_share)
            designs = [simulate.Design(3, 4, 0.5), simulate.Design(8, 6, 0.25), simulate.Design(8, 6, 0.25, looks=2)]
            ten, five = 0, 1  # plants as the H200 figures were first published: the first two cells
        else:
            costs = cpu_costs(files[0])
            entry["costs"] = costs
            designs = [simulate.Design(8, rounds, noise.fitted_block_s, looks=2) for rounds in (4, 6, 8, 10)]
            # the same wall (a budget of CPU_BUDGET_S) spent on fewer or more pairs: the rounds they leave
            designs += [simulate.Design(pairs, cpu_rounds(costs, pairs), noise.fitted_block_s, looks=2)
                        for pairs in (4, 6, 8, 10)]
            names = [c.name for c in noise.cells]  # the acceptance's plants (scripts/gate_cpu_acceptance.py)
            ten, five = names.index(CPU_PLANTS[0]), names.index(CPU_PLANTS[1])
        for design in designs:
            result = simulate.simulate(noise, design, runs=args.runs)
            plants = [0.0] * len(noise.cells)
            plants[ten], plants[five] = 0.10, 0.05
            planted = simulate.simulate(noise, design, plants, runs=args.runs)
            print(f"  {design.pairs} pairs x {design.rounds} rounds x {design.block_s:g} s, {design.looks} look(s), "
                  f"floor {design.floor:.0%}, {len(noise.cells)} cells: a false regression in "
                  f"{result.false_regression_rate:.1%} of the runs, any false flag in {result.false_flag_rate:.1%}; "
                  f"a 10 % plant in {noise.cells[ten].name} flagged "
                  f"{planted.flag_rate[ten]:.0%}, 5 % in {noise.cells[five].name} {planted.flag_rate[five]:.0%}")
            for cell, detectable in zip(noise.cells, result.detectable, strict=True):
                print(f"    {cell.name:58s} block {cell.block_sd:5.1%}  detectable {detectable:.1%}")
            entry["designs"].append({"design": design.__dict__, "false_flag_rate": result.false_flag_rate,
                                     "false_regression_rate": result.false_regression_rate,
                                     "detectable": dict(zip([c.name for c in noise.cells], result.detectable,
                                                            strict=True)),
                                     "planted_10": noise.cells[ten].name,
                                     "planted_10_flag_rate": planted.flag_rate[ten],
                                     "planted_5": noise.cells[five].name,
                                     "planted_5_flag_rate": planted.flag_rate[five]})
        out[name] = entry
    if "history" not in parts:
        return _write(args.json, out)
    family, single = history_fail_rate(args.history_runs)
    print(f"history compare, 15 cells x 8 earlier runs, 3 % between-run noise, {args.history_runs} pure-noise runs: "
          f"fails {family:.1%} (one judge, Holm), {single:.1%} (the former per-cell rule)")
    report = report_flag_rate(args.history_runs)
    print(f"report --fail-on-regression, 15 cells, 3 repeats a side, 3 % noise, {args.history_runs} pure-noise "
          f"pairs of runs: a cell flagged in {report:.1%}")
    out["history"] = {"cells": 15, "earlier_runs": 8, "noise": 0.03, "runs": args.history_runs,
                      "fail_rate_one_judge": family, "fail_rate_former_rule": single}
    out["report"] = {"cells": 15, "repeats": 3, "noise": 0.03, "runs": args.history_runs, "flag_rate": report}
    return _write(args.json, out)


def _write(path: Path | None, out: dict) -> int:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
