"""The table of scripts/gate_proof.sh: one line per cell of every detbench-ab run under a folder.

``python scripts/gate_table.py OUTDIR`` reads OUTDIR/*/ab.json (sides mode) and prints, per run, its duty cycle
and per cell the verdict, ratio, interval, detectable change, block noise, pair spread and the planted change (if any).
Files written before the one judge (docs/examples/gate-h200*) carry their noise split under ``noise``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def planted(data: dict, cell_id: str) -> str:
    for side in data.get("sides", []):
        for name, value in side.get("env", []):
            if name == "DETBENCH_TEST_SLOWDOWN":
                for part in value.split(","):
                    target, _, fraction = part.rpartition(":")
                    if target and target in cell_id:
                        return f"{float(fraction):.0%}"
    return "-"


def main(folder: str) -> int:
    runs = sorted(Path(folder).glob("*/ab.json"))
    if not runs:
        print(f"no */ab.json under {folder}")
        return 0
    print(f"{'run':10s} {'cell':48s} {'plant':>5s} {'verdict':12s} {'ratio':>6s} {'interval':>13s} {'detect':>6s} "
          f"{'block':>6s} {'pair':>6s} {'pairs x rounds':>14s}")
    for path in runs:
        data = json.loads(path.read_text())
        for cell_id, v in sorted(data.get("verdicts", {}).items()):
            noise = v.get("noise") or v  # the one judge's verdicts carry the split at the top level
            ratio = "-" if v.get("ratio") is None else f"{v['ratio']:.3f}"
            interval = "-" if v.get("low") is None else f"{v['low']:.3f}-{v['high']:.3f}"
            detect = "-" if v.get("detectable") is None else f"{v['detectable']:.1%}"
            within = "-" if noise.get("within_sd") is None else f"{noise['within_sd']:.1%}"
            between = "-" if noise.get("between_sd") is None else f"{noise['between_sd']:.1%}"
            rounds = sum(len(r) for r in v.get("ratios") or [])
            shape = f"{noise.get('pairs', v.get('units', '-'))} x {noise.get('rounds', rounds)}"
            print(f"{path.parent.name:10s} {cell_id[:48]:48s} {planted(data, cell_id):>5s} {v['verdict']:12s} "
                  f"{ratio:>6s} {interval:>13s} {detect:>6s} {within:>6s} {between:>6s} {shape:>14s}")
        print(f"{path.parent.name:10s} wall {data.get('wall_s')} s, set-up {data.get('setup_s')} s, timed "
              f"{data.get('timed_s')} s, duty cycle {data.get('duty_cycle', 0):.0%}; {data.get('verdict_line')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
