"""Re-judge committed sides-mode gate runs under other decision rules (docs/ab.md quotes its output).

``python scripts/gate_rejudge.py RUN_DIR...`` reads each RUN_DIR/ab.json (its per-pair, per-round ratios), judges
every inference cell with :func:`bench.core.significance.judge_nested` under each sometimes-pool level, with and
without Holm's family-wise adjustment across the run's cells, and counts flags on unplanted cells (false flags:
both sides ran the same software) and on the planted ones (DETBENCH_TEST_SLOWDOWN in the candidate's settings).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gate_block_stats import planted  # this script's folder is on sys.path

import bench.core.significance as significance

THRESHOLD = 0.03
FLAGS = (significance.REGRESSION, significance.IMPROVEMENT)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error across the list)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def main(folders: list[str]) -> int:
    runs = [json.loads((Path(f) / "ab.json").read_text()) for f in folders]
    for pool_alpha in (0.25, 0.5, 1.01):
        significance.POOL_ALPHA = pool_alpha  # 1.01: never pooled, the pair means always carry the interval
        for family in (False, True):
            false_flags = judged = 0
            plants: dict[str, list[int]] = {}
            for ab in runs:
                cells = {cid: c for cid, c in ab["cells"].items() if "-infer-" in cid}
                estimates = {cid: significance.judge_nested(
                    [[r["base_ms"] / r["cand_ms"] for r in rounds] for rounds in c["blocks"].values()], THRESHOLD)
                    for cid, c in cells.items()}
                ids = list(estimates)
                p_values = [estimates[i].p_value if estimates[i].p_value is not None else 1.0 for i in ids]
                for cid, p in zip(ids, holm(p_values) if family else p_values, strict=True):
                    flagged = estimates[cid].verdict in FLAGS and p < 1 - significance.CONFIDENCE
                    truth = planted(ab, cid)  # the throughput ratio the plant should give
                    if truth is None:
                        false_flags += flagged
                        judged += 1
                    else:
                        plant = f"{1 / truth - 1:.0%}"
                        plants.setdefault(plant, [0, 0])
                        plants[plant][0] += flagged
                        plants[plant][1] += 1
            found = ", ".join(f"planted {k} flagged {v[0]}/{v[1]}" for k, v in sorted(plants.items()))
            print(f"pool level {pool_alpha:<4g} {'Holm' if family else 'per cell':8s}: false flags {false_flags}/"
                  f"{judged}; {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
