"""Child-process entry point: ``python -m bench.cell_worker REQUEST.json RESULT.json``.

The request holds the cell and the run options; the CellResult is written as JSON (atomically, via a
temporary file and rename) so a crash can never leave a half-written result behind.
"""

from __future__ import annotations

import json
import os
import sys

from bench.options import RunOptions
from bench.runner import run_cell
from bench.schema import Cell


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.cell_worker REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    request_path, result_path = argv
    with open(request_path, encoding="utf-8") as handle:
        request = json.load(handle)
    result = run_cell(Cell.from_dict(request["cell"]), RunOptions.from_dict(request["options"]))
    partial = result_path + ".partial"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(result.to_dict(), handle)
    os.replace(partial, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
