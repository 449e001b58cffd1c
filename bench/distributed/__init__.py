"""Multi-GPU cells: DDP training and data-parallel inference, one process per GPU under torchrun.

``run_group(cells, options)`` runs cells that share a GPU count N > 1 (and a model) and returns their
CellResults; the distributed figures sit in ``result.config["distributed"]`` (:class:`DistributedStats`).
See docs/distributed.md.
"""
