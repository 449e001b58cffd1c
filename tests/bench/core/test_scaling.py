"""Aggregation of per-rank figures: totals per mode, spread, overlap, all-reduce share, scaling efficiency."""

import pytest

from detbench.bench.core import scaling as aggregate
from detbench.bench.core.distributed_stats import AllReduceStats
from detbench.bench.core.schema import Cell, CellResult

TRAIN = Cell("tiny_convnet", "train", batch_size=8, gpus=2)
INFER = Cell("tiny_convnet", "infer", batch_size=8, gpus=2)


def rank(r, times, start=0.0, end=1.0, share=None):
    allreduce = AllReduceStats("perf-counter", len(times), 3, 1.0, 2.0, share, share * 2) if share is not None else None
    return aggregate.rank_figures(r, times, 8, local_rank=r, node_rank=0, host="h", device="cpu",
                                  allreduce=allreduce, region_start_unix_s=start, region_end_unix_s=end)


def test_ddp_total_is_world_batch_over_the_slowest_rank():
    ranks = [rank(0, [100.0] * 5), rank(1, [125.0] * 5)]
    assert aggregate.total_throughput("train", ranks, 8) == pytest.approx(16 * 1000 / 125)


def test_data_parallel_total_adds_each_rank_rate():
    ranks = [rank(0, [100.0] * 5), rank(1, [125.0] * 5)]
    assert aggregate.total_throughput("infer", ranks, 8) == pytest.approx(80 + 64)


def test_rank_figures_median_iqr_and_own_rate():
    figures = rank(0, [10.0, 20.0, 30.0, 40.0, 50.0])
    assert figures.median_ms == 30.0 and figures.iqr_ms == 20.0
    assert figures.throughput_ips == pytest.approx(8 * 1000 / 30)


def test_slowest_rank_spread_and_overlap():
    ranks = [rank(0, [100.0] * 3, 0.0, 10.0), rank(1, [110.0] * 3, 2.0, 12.0)]
    assert aggregate.slowest_rank(ranks) == 1
    assert aggregate.median_spread(ranks) == pytest.approx(0.1)
    assert aggregate.region_overlap(ranks) == pytest.approx(8 / 12)
    apart = [rank(0, [1.0], 0.0, 1.0), rank(1, [1.0], 2.0, 3.0)]
    assert aggregate.region_overlap(apart) == 0.0


def test_allreduce_share_is_the_mean_over_timed_ranks():
    ranks = [rank(0, [1.0], share=0.1), rank(1, [1.0], share=0.3)]
    assert aggregate.allreduce_shares(ranks) == pytest.approx((0.2, 0.4))
    assert aggregate.allreduce_shares([rank(0, [1.0])]) == (None, None)


def test_scaling_efficiency():
    assert aggregate.scaling_efficiency(360.0, 4, 100.0) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="positive 1-GPU throughput"):
        aggregate.scaling_efficiency(1.0, 2, 0.0)


def summarised(cell, ranks):
    return aggregate.summarise(cell, ranks, nnodes=1, backend="gloo", device_type="cpu", launcher="torchrun",
                               ddp=None, telemetry_gpus=0, notes=["cpu"])


def test_the_group_result_takes_the_slowest_rank_and_round_trips():
    ranks = [rank(0, [100.0, 100.0, 120.0]), rank(1, [125.0, 125.0, 130.0])]
    stats = summarised(TRAIN, ranks)
    result = aggregate.apply_to_result(CellResult(TRAIN), stats)
    assert result.times_ms == [125.0, 125.0, 130.0] and result.latency.median_ms == 125.0
    assert result.throughput_ips == pytest.approx(128.0)
    assert result.throughput_ips_p10 <= result.throughput_ips <= result.throughput_ips_p90
    again = CellResult.from_dict(result.to_dict())
    back = again.distributed
    assert back == stats and back.parallelism == "ddp" and back.world_batch == 16


def test_scaling_is_attached_from_the_one_gpu_twin():
    stats = summarised(INFER, [rank(0, [100.0] * 3), rank(1, [100.0] * 3)])
    result = aggregate.apply_to_result(CellResult(INFER), stats)
    baseline = CellResult(aggregate.one_gpu_twin(INFER), throughput_ips=100.0)
    aggregate.attach_scaling(result, baseline, source="requested in this run")
    data = result.distributed.to_dict()
    assert data["scaling_efficiency"] == pytest.approx(160 / 200)
    assert data["baseline"] == {"cell_id": baseline.cell.id, "throughput_ips": 100.0, "source": "requested in this run"}


def test_a_missing_or_failed_baseline_says_why():
    stats = summarised(INFER, [rank(0, [100.0] * 3), rank(1, [100.0] * 3)])
    result = aggregate.apply_to_result(CellResult(INFER), stats)
    aggregate.attach_scaling(result, None, source="missing")
    assert "no 1-GPU cell" in result.distributed.to_dict()["scaling_note"]
    failed = CellResult(aggregate.one_gpu_twin(INFER), status="oom", reason="CUDA out of memory")
    aggregate.attach_scaling(result, failed, source="requested")
    assert "did not measure (oom: CUDA out of memory)" in result.distributed.to_dict()["scaling_note"]
    assert result.distributed.to_dict()["scaling_efficiency"] is None


def test_an_efficiency_above_one_is_said_not_to_be_scaling():
    """``--gpus 2`` on 2 CPU cores reported an efficiency of 2.97 with no note."""
    stats = summarised(INFER, [rank(0, [100.0] * 3), rank(1, [100.0] * 3)])
    stats.device_type = "cpu"
    result = aggregate.apply_to_result(CellResult(INFER), stats)
    aggregate.attach_scaling(result, CellResult(aggregate.one_gpu_twin(INFER), throughput_ips=54.0), source="run")
    data = result.distributed.to_dict()
    assert data["scaling_efficiency"] == pytest.approx(160 / 108)
    assert data["scaling_note"].startswith("efficiency 1.48 is above 1 (2 ranks did 2.96x one rank's work): CPU ranks")
    fair = aggregate.apply_to_result(CellResult(INFER), summarised(INFER, [rank(0, [100.0] * 3), rank(1, [100.0] * 3)]))
    aggregate.attach_scaling(fair, CellResult(aggregate.one_gpu_twin(INFER), throughput_ips=100.0), source="run")
    assert fair.distributed.to_dict()["scaling_note"] is None
