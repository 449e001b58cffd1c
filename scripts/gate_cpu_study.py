"""Where a CPU gate run's noise comes from, from its sides' own iteration times (docs/ab.md: "On the CPU").

``python scripts/gate_cpu_study.py OUT [--json FILE]``: OUT holds the acceptance runs (``same-K/`` and
``planted-K/``, each a detbench-ab --out folder: ab.json and every side's run file with each block's iterations;
scripts/gate_cpu_acceptance.py). Every run's rounds are rebuilt from the sides' iterations under variants of the
design and judged with the one judge (detbench.bench.core.stats.judge: pair medians, t over pairs, Holm across the run's
cells, floor 2 %, at the last look's level), over all the runs of the folder:

- the block's statistic: lower quartile (the gate's), median, tenth percentile, minimum, mean;
- shorter blocks: each block's first half only, its second half only (half the timed seconds, the same rounds),
  and both halves as two rounds (0.125-s blocks emulated: the same timed seconds, twice the rounds; the halves
  are back to back on one side, not alternated with the other side's);
- the first round after set-up left out.

Per variant: the runs flagging a cell without a plant, the planted cells flagged, and per cell the median
log-width of the intervals (narrower: more power). A cell decided at the gate's first look was timed no further:
its rounds are judged here as they stand, at the last look's level.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from gate_block_stats import block_times, planted  # this script's folder is on sys.path

from detbench.bench.core.stats.judge import ALPHA, IMPROVEMENT, REGRESSION, decide, look_alpha, pair_evidence

FLOOR = 0.02
STATISTICS: dict[str, Callable[[list[float]], float]] = {
    "p25": lambda x: float(np.percentile(x, 25)), "median": lambda x: float(np.median(x)),
    "p10": lambda x: float(np.percentile(x, 10)), "min": lambda x: float(np.min(x)),
    "mean": lambda x: float(np.mean(x))}
Rounds = Callable[[list[float], list[float]], list[tuple[list[float], list[float]]]]


def whole(b: list[float], c: list[float]) -> list[tuple[list[float], list[float]]]:
    return [(b, c)]


def first_half(b: list[float], c: list[float]) -> list[tuple[list[float], list[float]]]:
    return [(b[: max(1, len(b) // 2)], c[: max(1, len(c) // 2)])]


def second_half(b: list[float], c: list[float]) -> list[tuple[list[float], list[float]]]:
    return [(b[len(b) // 2:] or b, c[len(c) // 2:] or c)]


def halves_as_rounds(b: list[float], c: list[float]) -> list[tuple[list[float], list[float]]]:
    if len(b) < 2 or len(c) < 2:
        return whole(b, c)
    return first_half(b, c) + second_half(b, c)


def without_first_iteration(b: list[float], c: list[float]) -> list[tuple[list[float], list[float]]]:
    return [(b[1:] or b, c[1:] or c)]


VARIANTS: dict[str, tuple[str, Rounds, int]] = {  # name -> (statistic, how a block gives rounds, first round)
    **{f"{stat}, 0.25-s blocks": (stat, whole, 1) for stat in STATISTICS},
    "p25, first half of each block": ("p25", first_half, 1),
    "p25, second half of each block": ("p25", second_half, 1),
    "p25, 0.125-s blocks emulated (halves as rounds)": ("p25", halves_as_rounds, 1),
    "p25, first round left out": ("p25", whole, 2),
    "p25, each block's first iteration left out": ("p25", without_first_iteration, 1)}


def first_iterations(runs: list) -> dict[str, list[float]]:
    """Per cell, the mean of each block's first three iterations over the block's median (every side, block):
    what resuming a side after the other side's block costs."""
    found: dict[str, list[list[float]]] = {}
    for _name, _ab, sides in runs:
        for cells in sides.values():
            for cid, rounds in cells.items():
                for times in rounds.values():
                    if len(times) >= 3:
                        middle = float(np.median(times))
                        found.setdefault(cid, []).append([t / middle for t in times[:3]])
    return {cid: [round(float(x), 3) for x in np.mean(v, axis=0)] for cid, v in sorted(found.items())}


def load(out: Path) -> list[tuple[str, dict, dict[str, dict[str, dict[int, list[float]]]]]]:
    runs = []
    for ab_json in sorted(out.glob("*-*/ab.json")):
        sides = {p.stem: block_times(p) for p in sorted(ab_json.parent.glob("*-[0-9]*.json"))}
        runs.append((ab_json.parent.name, json.loads(ab_json.read_text()), sides))
    return runs


def evaluate(runs: list, statistic: str, rounds_of: Rounds, first_round: int) -> dict:
    stat = STATISTICS[statistic]
    alpha = look_alpha(ALPHA, 2)
    false_runs = 0
    found: dict[str, list[bool]] = {}
    widths: dict[str, list[float]] = {}
    for _name, ab, sides in runs:
        evidence = {}
        for cid in sorted(ab["verdicts"]):
            per_pair = []
            for pair in range(ab["pairs"]):
                base = sides.get(f"baseline-{pair}", {}).get(cid, {})
                cand = sides.get(f"candidate-{pair}", {}).get(cid, {})
                per_pair.append([stat(b) / stat(c) for r in sorted(base) if r >= first_round and r in cand
                                 and base[r] and cand[r] for b, c in rounds_of(base[r], cand[r])])
            evidence[cid] = pair_evidence(per_pair)
        flagged_unplanted = False
        for cid, verdict in decide(evidence, FLOOR, alpha=alpha).items():
            if verdict.low and verdict.high:
                widths.setdefault(cid, []).append(math.log(verdict.high / verdict.low))
            if planted(ab, cid) is None:
                flagged_unplanted |= verdict.verdict in (REGRESSION, IMPROVEMENT)
            else:
                found.setdefault(cid, []).append(verdict.verdict == REGRESSION)
        false_runs += flagged_unplanted
    return {"runs": len(runs), "runs_flagging_an_unplanted_cell": false_runs,
            "planted_flagged": {cid: f"{sum(v)} of {len(v)}" for cid, v in found.items()},
            "interval_log_width_median": {cid: round(float(np.median(w)), 4) for cid, w in sorted(widths.items())}}


def short(cell_id: str) -> str:
    """``ssdlite320_mobilenet_v3_large-infer-eager-fp32-bs1-gpu1-160x160`` -> ``ssdlite320 bs1``."""
    return f"{cell_id.split('_')[0].split('-')[0]} {next((p for p in cell_id.split('-') if p.startswith('bs')), '')}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    runs = load(args.out)
    if not runs:
        print(f"no run folder with an ab.json under {args.out}", file=sys.stderr)
        return 2
    results = {}
    for name, (statistic, rounds_of, first_round) in VARIANTS.items():
        results[name] = entry = evaluate(runs, statistic, rounds_of, first_round)
        widths = ", ".join(f"{short(cid)} {w:.3f}" for cid, w in entry["interval_log_width_median"].items())
        flagged = "; ".join(f"{short(cid)}: {n}" for cid, n in entry["planted_flagged"].items())
        print(f"{name:50s} false {entry['runs_flagging_an_unplanted_cell']}/{entry['runs']}, planted flagged "
              f"{flagged or '-'}; interval log-widths {widths}")
    resumes = first_iterations(runs)
    print("a block's first three iterations over its median: " + "; ".join(
        f"{short(cid)} {' '.join(f'{x:.3f}' for x in v)}" for cid, v in resumes.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": [name for name, _, _ in runs], "floor": FLOOR,
                                         "variants": results, "first_iterations_over_block_median": resumes},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
