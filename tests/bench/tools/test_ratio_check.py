"""detbench.bench.tools.ratio_check pairs the matrix's ratios with detbench.bench.tools.interleaved's for the same
cells."""

from __future__ import annotations

from detbench.bench.core.schema import Cell, CellResult, PairedRatio
from detbench.bench.tools import ratio_check


def test_pairs_match_cells_by_id_and_state_the_difference():
    bf16 = Cell("m", "infer", "eager", "amp-bf16", 8)
    base = Cell("m", "infer", "eager", "fp32", 8)
    matrix = {bf16.id: CellResult(bf16, ratio=PairedRatio(base.id, 1.5, 1.4, 1.6))}
    interleaved = {"schema": "detbench.interleaved", "schema_version": 2, "models": [{
        "model": "m", "batch_size": 8, "image_size": None, "rounds": 4, "block_s": 0.5, "device": "d",
        "timer": "cuda-events", "host_canary_ms": [], "status": "ok",
        "variants": [{"variant": "infer-eager-fp32", "cell_id": base.id},
                     {"variant": "infer-eager-bf16", "cell_id": bf16.id}],
        "ratios": [{"variant": "infer-eager-bf16", "baseline": "infer-eager-fp32", "per_round": [1.4, 1.6],
                    "median": 1.6, "q1": 1.5, "q3": 1.7}]}]}
    (row,) = ratio_check.pairs(matrix, interleaved)
    assert row["cell_id"] == bf16.id and row["matrix"] == 1.5 and row["interleaved"] == 1.6
    assert abs(row["difference"] - (1.5 / 1.6 - 1)) < 1e-12
