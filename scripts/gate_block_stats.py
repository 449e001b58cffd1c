"""Re-judge a sides-mode detbench-ab run with other block statistics, from the sides' own run files.

``python scripts/gate_block_stats.py RUN_DIR`` (a detbench-ab --out folder: ab.json and <side>-<pair>.json). Every
side's run file holds each block's iterations; this rebuilds every round's candidate/baseline ratio with the
block's median, lower quartile, minimum and mean, judges the cells together with the one judge
(detbench.bench.core.stats.judge), and prints per
statistic the mean log-width of the 95 % intervals and each cell's verdict, ratio and interval (with the planted
change, where the candidate had one, checked against the interval). docs/ab.md quotes its output.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from detbench.bench.core.record import load_results
from detbench.bench.core.stats.judge import decide, pair_evidence

FLOOR = 0.02
STATISTICS = {"median": np.median, "p25": lambda x: np.percentile(x, 25), "min": np.min, "mean": np.mean}


def block_times(path: Path) -> dict[str, dict[int, list[float]]]:
    """cell id -> round -> that block's iteration times (ms), from one side's run file."""
    out: dict[str, dict[int, list[float]]] = {}
    for result in load_results(path):
        if result.measurement is None:
            continue
        start, rounds = 0, {}
        for block in result.measurement.blocks:
            rounds[block.round] = result.times_ms[start:start + block.iterations]
            start += block.iterations
        out[result.cell.id] = rounds
    return out


def planted(ab: dict, cell_id: str) -> float | None:
    """The throughput ratio a planted slowdown should give (1 / (1 + fraction)), or None."""
    for side in ab.get("sides", []):
        for name, value in side.get("env", []):
            if name == "DETBENCH_TEST_SLOWDOWN":
                for part in value.split(","):
                    target, _, fraction = part.rpartition(":")
                    if target and target in cell_id:
                        return 1.0 / (1.0 + float(fraction))
    return None


def main(folder: str, first_round: int = 1) -> int:
    root = Path(folder)
    ab = json.loads((root / "ab.json").read_text())
    sides = {p.stem: block_times(p) for p in sorted(root.glob("*-[0-9]*.json"))}
    pairs = ab["pairs"]
    for name, statistic in STATISTICS.items():
        rows, widths = [], []
        evidence = {}
        for cell_id in sorted(ab["verdicts"]):
            per_pair = []
            for pair in range(pairs):
                base = sides.get(f"baseline-{pair}", {}).get(cell_id, {})
                cand = sides.get(f"candidate-{pair}", {}).get(cell_id, {})
                per_pair.append([float(statistic(base[r]) / statistic(cand[r])) for r in sorted(base)
                                 if r >= first_round and r in cand and base[r] and cand[r]])
            evidence[cell_id] = pair_evidence(per_pair)
        for cell_id, estimate in decide(evidence, FLOOR).items():
            truth = planted(ab, cell_id)
            if estimate.low is None or estimate.high is None or estimate.ratio is None:
                rows.append(f"  {cell_id:55s} {estimate.verdict}")
                continue
            widths.append(math.log(estimate.high / estimate.low))
            check = "" if truth is None else (f"  planted {truth:.3f} " +
                                              ("inside" if estimate.low <= truth <= estimate.high else "OUTSIDE"))
            split = "" if estimate.within_sd is None else (
                f"  round noise {estimate.within_sd:.1%}, pair spread "
                f"{'-' if estimate.between_sd is None else f'{estimate.between_sd:.1%}'}")
            rows.append(f"  {cell_id:55s} {estimate.verdict:12s} {estimate.ratio:.3f} "
                        f"[{estimate.low:.3f}, {estimate.high:.3f}]{check}{split}")
        print(f"{name}: mean log-width of the intervals {np.mean(widths):.3f}")
        print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
