"""The request a multi-GPU group runs (cells, run options, distribution options), as one JSON file.

``run_group`` writes it for torchrun's ranks; for a multi-node job write one yourself and start
``torchrun ... -m detbench.bench.runtime.rank REQUEST.json RESULT.jsonl`` on every node (docs/distributed.md)::

    python -m detbench.bench.runtime.request --model retinanet_resnet50_fpn --mode train --precision amp-bf16 \\
        --batch-size 8 --gpus 16 --out request.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detbench.bench.core import config as config_table
from detbench.bench.core import matrix
from detbench.bench.core.distributed_options import DistributedOptions
from detbench.bench.core.options import RunOptions
from detbench.bench.core.schema import Cell, CellResult


@dataclass
class GroupRequest:
    """Cells with the same GPU count (and model), run one after the other by the same ranks."""

    cells: list[Cell]
    options: RunOptions
    distributed: DistributedOptions = field(default_factory=DistributedOptions)
    prior: list[CellResult] = field(default_factory=list)  # partial results to continue (detbench.bench.runtime.engine)

    def __post_init__(self) -> None:
        if not self.cells:
            raise ValueError("a group request needs at least one cell")
        counts = sorted({c.gpus for c in self.cells})
        if len(counts) != 1:
            raise ValueError(f"the cells of one group must share a GPU count, got {counts}")

    @property
    def world_size(self) -> int:
        return self.cells[0].gpus

    def to_dict(self) -> dict[str, Any]:
        return {"cells": [c.to_dict() for c in self.cells], "options": self.options.to_dict(),
                "distributed": self.distributed.to_dict(), "prior": [r.to_dict() for r in self.prior]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GroupRequest:
        return cls([Cell.from_dict(c) for c in data["cells"]], RunOptions.from_dict(data["options"]),
                   DistributedOptions.from_dict(data.get("distributed", {})),
                   [CellResult.from_dict(r, source="request prior") for r in data.get("prior") or []])

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")

    @classmethod
    def read(cls, path: str | Path) -> GroupRequest:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Write a request for `torchrun ... -m detbench.bench.runtime.rank`.")
    config_table.add_cell_arguments(parser)
    parser.add_argument("--gpus", type=int, required=True, help="world size: nodes x GPUs per node")
    parser.add_argument("--cell-timeout", **config_table.argument_spec(config_table.table_option("--cell-timeout")))
    parser.add_argument("--out", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cell = config_table.cell_from(args, gpus=args.gpus)
        options = RunOptions(profile="multi-node", isolation="inline", cell_timeout_s=args.cell_timeout,
                             model_modules=matrix.parse_csv(args.model_modules) or ())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    GroupRequest([cell], options).write(args.out)
    print(f"wrote {args.out}: {cell.id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
