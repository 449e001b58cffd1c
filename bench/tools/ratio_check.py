"""Do the matrix's paired ratios agree with ``detbench.bench.tools.interleaved``'s, measured in the same sitting?

``python -m detbench.bench.tools.ratio_check MATRIX.json INTERLEAVED.json [--json OUT]`` pairs every interleaved ratio
whose baseline is eager fp32 with the matrix cell of the same id (whose ``ratio`` is to the same baseline) and prints
both with their IQRs and the difference; the last line is the largest absolute difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from detbench.bench.core.comparison import ModelComparison
from detbench.bench.core.schema import CellResult


def matrix_ratios(data: dict[str, Any]) -> dict[str, CellResult]:
    """Cell id -> result for every matrix cell that carries a ratio (pytest-benchmark JSON)."""
    cells = [CellResult.from_dict(b["extra_info"]["detbench"]) for b in data.get("benchmarks", [])
             if isinstance(b.get("extra_info"), dict) and "detbench" in b["extra_info"]]
    return {c.cell.id: c for c in cells if c.ratio is not None}


def pairs(matrix: dict[str, CellResult], interleaved: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for model in interleaved.get("models", []):
        if model.get("status") != "ok":
            continue
        comparison = ModelComparison.from_dict({"schema": interleaved["schema"],
                                                "schema_version": interleaved["schema_version"], **model})
        if not comparison.variants[0].variant.endswith("-eager-fp32"):
            continue  # the matrix's ratios are to eager fp32
        ids = {v.variant: v.cell_id for v in comparison.variants}
        for ratio in comparison.ratios:
            cell = matrix.get(ids[ratio.variant])
            if cell is None or cell.ratio is None:
                continue
            out.append({"cell_id": cell.cell.id, "matrix": cell.ratio.median,
                        "matrix_iqr": [cell.ratio.q1, cell.ratio.q3],
                        "interleaved": ratio.median, "interleaved_iqr": [ratio.q1, ratio.q3],
                        "difference": cell.ratio.median / ratio.median - 1.0})
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m detbench.bench.tools.ratio_check",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("matrix")
    parser.add_argument("interleaved")
    parser.add_argument("--json", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with open(args.matrix, encoding="utf-8") as handle:
        matrix = matrix_ratios(json.load(handle))
    with open(args.interleaved, encoding="utf-8") as handle:
        rows = pairs(matrix, json.load(handle))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)
    print(f"{'cell':58s} {'matrix (IQR)':>22s} {'interleaved (IQR)':>22s} {'diff':>7s}")
    for row in rows:
        m, i = row["matrix_iqr"], row["interleaved_iqr"]
        print(f"{row['cell_id']:58s} {row['matrix']:7.3f} ({m[0]:.3f}-{m[1]:.3f}) "
              f"{row['interleaved']:7.3f} ({i[0]:.3f}-{i[1]:.3f}) {row['difference']:+7.1%}")
    if not rows:
        print("no pairs: run both on the same models with an eager fp32 first variant")
        return 1
    print(f"largest difference {max(abs(r['difference']) for r in rows):.1%} over {len(rows)} pair(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
