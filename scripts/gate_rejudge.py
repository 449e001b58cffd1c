"""Re-judge committed sides-mode gate runs with the one judge (detbench.bench.core.stats.judge; docs/ab.md quotes the
output).

``python scripts/gate_rejudge.py RUN_DIR...`` reads each RUN_DIR/ab.json (its per-pair, per-round ratios), judges
every run's inference cells together (pair medians, t over pairs, Holm across the cells, the floor) and counts the
flags on unplanted cells (false flags: both sides ran the same software) and on the planted ones
(DETBENCH_TEST_SLOWDOWN in the candidate's settings), with each cell's detectable change.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gate_block_stats import planted  # this script's folder is on sys.path

from detbench.bench.core.stats.judge import IMPROVEMENT, REGRESSION, decide, pair_evidence

FLOOR = 0.02


def main(folders: list[str]) -> int:
    false_flags = judged = 0
    plants: dict[str, list[int]] = {}
    for folder in folders:
        ab = json.loads((Path(folder) / "ab.json").read_text())
        cells = {cid: c for cid, c in ab["cells"].items() if "-infer-" in cid}
        verdicts = decide({cid: pair_evidence([[r["base_ms"] / r["cand_ms"] for r in rounds]
                                               for rounds in c["blocks"].values()]) for cid, c in cells.items()}, FLOOR)
        for cid, v in sorted(verdicts.items()):
            flagged = v.verdict in (REGRESSION, IMPROVEMENT)
            truth = planted(ab, cid)  # the throughput ratio the plant should give
            print(f"{Path(folder).name:4s} {cid:52s} {v.verdict:12s} {v.ratio or 0:.3f} "
                  f"({v.low or 0:.3f}-{v.high or 0:.3f}) detectable {v.detectable or 0:.1%}"
                  f"{'' if truth is None else f'  planted {1 / truth - 1:.0%}'}")
            if truth is None:
                false_flags += flagged
                judged += 1
            else:
                plant = f"{1 / truth - 1:.0%}"
                plants.setdefault(plant, [0, 0])
                plants[plant][0] += flagged
                plants[plant][1] += 1
    found = ", ".join(f"planted {k} flagged {v[0]}/{v[1]}" for k, v in sorted(plants.items()))
    print(f"false flags {false_flags}/{judged}; {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
