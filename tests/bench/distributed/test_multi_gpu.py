"""The multi-GPU check's plan and table (the run itself needs GPUs: scripts/multi_gpu.sh)."""

from bench.distributed.multi_gpu import FIDELITY_MODEL, MODELS, plan, print_table
from bench.schema import Cell, CellResult


def test_training_comes_first_with_the_fidelity_references_right_after_its_model():
    steps = plan(MODELS, ("train", "infer"), [1, 2, 4])
    kinds = [k for k, _ in steps]
    assert kinds[:6] == ["one_gpu", "group", "group", "plain", "plain", "one_gpu"]
    assert steps[0][1].model == FIDELITY_MODEL and steps[0][1].mode == "train" and steps[0][1].gpus == 1
    assert [c.gpus for k, w in steps if k == "group" for c in w] == [2, 4] * 4
    assert all(c.precision == "amp-bf16" and c.batch_size == 8 for k, w in steps if k == "group" for c in w)
    assert plan(MODELS, ("infer",), [1, 2]) and all(k != "plain" for k, _ in plan(MODELS, ("infer",), [1, 2]))


def test_the_table_quotes_scaling_and_the_fidelity_ratio(capsys):
    cell = Cell(FIDELITY_MODEL, "train", "eager", "amp-bf16", 8, 2)
    result = CellResult(cell, throughput_ips=98.0, config={"distributed": {
        "scaling_efficiency": 0.91, "slowest_rank": 1, "allreduce_wait_share": 0.12}})
    print_table([{"world_size": 2, "status": "pass", "detail": "busbw 290 GB/s"}], [result],
                [{"gpus": 2, "throughput_ips": 100.0}, {"gpus": 4, "skipped": "time budget"}])
    out = capsys.readouterr().out
    assert "0.91" in out and "12%" in out
    assert "suite/plain 0.980 (within 5 %)" in out and "4 GPUs: time budget" in out
