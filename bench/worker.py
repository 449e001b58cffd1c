"""Worker entry point: ``python -m bench.worker REQUEST.json PROGRESS.json RESULT.json``.

Measures one group (bench.engine.measure_group), writing its progress as it goes; the results are written
atomically at the end. Exit 75 after a sticky CUDA error (recorded in the progress file).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

EXIT_STICKY = 75


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m bench.worker REQUEST.json PROGRESS.json RESULT.json", file=sys.stderr)
        return 2
    from bench.engine import WorkerMustEnd, measure_group  # noqa: PLC0415 (after the usage check: imports torch)
    from bench.options import RunOptions, import_model_modules  # noqa: PLC0415
    from bench.schema import Cell  # noqa: PLC0415
    from bench.session import cell_device  # noqa: PLC0415

    request_path, progress_path, result_path = argv
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    options = RunOptions.from_dict(request["options"])
    import_model_modules(options.model_modules)
    cells = [Cell.from_dict(c) for c in request["cells"]]
    try:
        results = measure_group(cells, options, cell_device(), progress_path=Path(progress_path))
    except WorkerMustEnd as exc:
        print(f"bench.worker: ending after a sticky CUDA error: {exc}", file=sys.stderr)
        return EXIT_STICKY
    partial = result_path + ".partial"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump([r.to_dict() for r in results], handle)
    os.replace(partial, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
