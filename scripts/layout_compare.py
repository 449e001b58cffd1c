"""Cell ids and throughputs of scripts/layout_check.sh's old and new runs, side by side.

``python scripts/layout_compare.py OUTDIR``: for smoke and quick, every cell id of either run with its status and
images/s in each and the new/old ratio; then whether the id sets are equal.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def cells(path: Path) -> dict[str, tuple[str, float | None]]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    out = {}
    for bench in data.get("benchmarks", []):
        cell = (bench.get("extra_info") or {}).get("detbench") or {}
        if cell:
            cid = bench["name"].split("[", 1)[1].rstrip("]")
            out[cid] = (cell.get("status", "?"), cell.get("throughput_ips"))
    for cell in (data.get("detbench") or {}).get("not_measured", []):
        c = cell.get("cell", {})
        out[f"{c.get('model')}:{cell.get('status')}"] = (cell.get("status", "?"), None)
    return out


def main(folder: str) -> int:
    root = Path(folder)
    same = True
    for run in ("smoke", "quick"):
        old, new = cells(root / f"old-{run}.json"), cells(root / f"new-{run}.json")
        print(f"-- {run}: {len(old)} old cells, {len(new)} new cells")
        for cid in sorted(set(old) | set(new)):
            o, n = old.get(cid, ("missing", None)), new.get(cid, ("missing", None))
            ratio = f"{n[1] / o[1]:.3f}" if o[1] and n[1] else "-"
            print(f"{cid[:60]:60s} old {o[0]:7s} {o[1] or 0:9.1f}  new {n[0]:7s} {n[1] or 0:9.1f}  new/old {ratio}")
        same = same and set(old) == set(new)
    print("cell ids: " + ("the same" if same else "DIFFERENT"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
