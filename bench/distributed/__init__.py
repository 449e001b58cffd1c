"""Multi-GPU cells: DDP training and data-parallel inference, one process per GPU under torchrun.

``run_group(cells, options, baselines=...)`` runs cells that share a GPU count N > 1 (and a model) and
returns their CellResults; the distributed figures are ``result.distributed`` (:class:`DistributedStats`).
See docs/distributed.md.
"""

from __future__ import annotations

from typing import Any


def run_group(*args: Any, **kwargs: Any) -> Any:
    """:func:`bench.distributed.launch.run_group`, imported on first use (it imports torch)."""
    from bench.distributed.launch import run_group as run  # noqa: PLC0415

    return run(*args, **kwargs)
