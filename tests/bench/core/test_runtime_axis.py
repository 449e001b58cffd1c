"""The deployment-runtime axis (issue 35) in the cell, the matrix, the options and the schema: eager cells keep their
ids, runtime cells are inference without torch.compile, the deploy profile covers every torchvision detector on
every runtime, and a deployed cell's figures survive the schema round trip."""

from __future__ import annotations

import pytest

from detbench.bench.core import config, matrix
from detbench.bench.core.advice import PARITY_DISAGREE, advise, within_latency
from detbench.bench.core.options import OptionError
from detbench.bench.core.ratios import finish_group
from detbench.bench.core.schema import (
    RUNTIMES,
    SCHEMA_VERSION,
    BlockRecord,
    Cell,
    CellResult,
    DeployInfo,
    LatencyStats,
    Measurement,
    Parity,
)


def test_an_eager_cell_keeps_its_id_and_an_old_file_reads_as_eager():
    cell = Cell("retinanet_resnet50_fpn", "infer", "default", "amp-bf16", 8)
    assert cell.runtime == "eager" and cell.id == "retinanet_resnet50_fpn-infer-compiled-bf16-bs8-gpu1"
    old = {"model": "ssdlite320_mobilenet_v3_large", "mode": "infer", "compile": "eager", "precision": "fp32",
           "batch_size": 1, "gpus": 1, "image_size": [320, 320], "memory_format": "contiguous"}  # written by v3
    assert Cell.from_dict(old).id == "ssdlite320_mobilenet_v3_large-infer-eager-fp32-bs1-gpu1-320x320"


def test_a_runtime_cell_names_its_runtime_and_refuses_training_or_compile():
    cell = Cell("ssdlite320_mobilenet_v3_large", runtime="onnxruntime", image_size=(320, 320))
    assert cell.id == "ssdlite320_mobilenet_v3_large-infer-onnxruntime-fp32-bs1-gpu1-320x320" and cell.deployed
    assert cell.configuration == "onnxruntime/fp32" and Cell.from_dict(cell.to_dict()) == cell
    with pytest.raises(ValueError, match=r"runs inference without torch\.compile"):
        Cell("ssdlite320_mobilenet_v3_large", "train", runtime="torchscript")
    with pytest.raises(ValueError, match=r"runs inference without torch\.compile"):
        Cell("ssdlite320_mobilenet_v3_large", compile="default", runtime="aot-inductor")
    with pytest.raises(ValueError, match="valid: eager, torchscript, onnxruntime, aot-inductor"):
        Cell("ssdlite320_mobilenet_v3_large", runtime="tensorrt")


def test_the_deploy_profile_runs_every_torchvision_detector_on_every_runtime_at_batch_1():
    cells = matrix.expand("deploy", matrix.MatrixFilters(), matrix.TORCHVISION_DETECTORS)
    assert len(cells) == len(matrix.TORCHVISION_DETECTORS) * len(RUNTIMES) == 44
    assert {c.runtime for c in cells if c.model == "maskrcnn_resnet50_fpn"} == set(RUNTIMES)
    assert {(c.batch_size, c.precision, c.image_size, c.mode) for c in cells} == {(1, "fp32", (320, 320), "infer")}
    assert [c.runtime for c in cells[:4]] == list(RUNTIMES)  # eager first: the twin break-even is measured against


def test_runtimes_filter_and_its_errors():
    known = [*matrix.TORCHVISION_DETECTORS, "resnet50"]
    resolved = config.resolve({"runtimes": "eager,onnxruntime", "profile": "smoke"}, cuda_available=False,
                              known_models=known)
    cells = matrix.expand("smoke", resolved.filters, known)
    assert {c.runtime for c in cells if c.mode == "infer"} == {"eager", "onnxruntime"}
    assert all(c.runtime == "eager" for c in cells if c.mode == "train")  # training cells stay eager
    with pytest.raises(OptionError, match="unknown runtime 'tensorrt'; valid: eager, torchscript"):
        config.resolve({"runtimes": "tensorrt"}, cuda_available=False, known_models=["resnet50"])
    with pytest.raises(OptionError, match="--runtimes is empty"):
        config.resolve({"runtimes": ","}, cuda_available=False, known_models=["resnet50"])


def _timed(cell: Cell, median_ms: float, deploy: DeployInfo | None = None) -> CellResult:
    stats = LatencyStats(3, median_ms, median_ms, median_ms, median_ms, median_ms, median_ms, 0.0, 0.0, 0.0)
    blocks = [BlockRecord(round=r, median_ms=median_ms, iterations=3, host_canary_ms=1.0, start_offset_s=r)
              for r in range(2)]
    return CellResult(cell, latency=stats, throughput_ips=1000.0 / median_ms, deploy=deploy,
                      measurement=Measurement("perf-counter+sync", 6, 1.0, "inline", rounds=2, blocks=blocks))


def test_a_deployed_cell_round_trips_with_its_break_even_against_the_eager_twin():
    eager = _timed(Cell("m", image_size=(320, 320)), 100.0)
    parity = Parity("agree", {"min_box_iou": 0.99}, 12, 12, 12, min_box_iou=0.9999, max_score_diff=1e-6)
    info = DeployInfo("onnxruntime", "CPUExecutionProvider", export_s=6.0, artifact_bytes=14_000_000, load_s=0.4,
                      cold_start_s=0.8, cold_import_s=3.1, serving_peak_rss_bytes=900 * 2**20, parity=parity)
    deployed = _timed(Cell("m", image_size=(320, 320), runtime="onnxruntime"), 40.0, info)
    finish_group([eager, deployed])
    assert deployed.ratio.median == pytest.approx(2.5) and deployed.ratio.baseline_cell_id == eager.cell.id
    assert info.break_even_requests == pytest.approx(6.0 / 0.060)  # export seconds over 60 ms saved per request
    back = CellResult.from_dict(deployed.to_dict())
    assert back.schema_version == SCHEMA_VERSION == 5 and back.deploy == info and back.cell == deployed.cell
    slower = _timed(Cell("m", image_size=(320, 320), runtime="torchscript"), 120.0,
                    DeployInfo("torchscript", export_s=1.0))
    finish_group([eager, slower])
    assert slower.deploy.break_even_requests is None and "never pays off" in slower.deploy.break_even_basis


def _at_latency(runtime: str, median_ms: float, p99_ms: float, verdict: str = "agree") -> CellResult:
    cell = Cell("m", image_size=(320, 320), runtime=runtime)
    result = _timed(cell, median_ms, None if runtime == "eager" else DeployInfo(runtime, parity=Parity(verdict)))
    assert result.latency is not None
    result.latency.p99_ms = p99_ms
    if verdict == "disagree":
        result.reason = "outputs disagree with eager FP32: box IoU 0.9 < 0.99"
    return result


def test_the_fastest_within_a_p99_budget_at_batch_1_and_never_a_disagreeing_cell():
    results = [_at_latency("eager", 100.0, 140.0), _at_latency("torchscript", 80.0, 190.0),
               _at_latency("onnxruntime", 60.0, 95.0, verdict="disagree"), _at_latency("aot-inductor", 90.0, 110.0)]
    finish_group(results)
    [item] = within_latency(results, 150.0)
    assert item.pick.runtime == "aot-inductor" and [c.runtime for c in item.within] == ["aot-inductor", "eager"]
    assert [c.runtime for c in item.over] == ["torchscript"]  # p99 190 ms; the disagreeing onnxruntime is nowhere
    assert within_latency(results, 100.0)[0].pick is None
    [advice] = advise(results)
    assert advice.best.runtime == "torchscript" and "onnxruntime" not in {c.runtime for c in advice.ranked}
    [failed] = advice.failures
    assert failed.status == PARITY_DISAGREE and failed.reason.startswith("outputs disagree with eager FP32")
    with pytest.raises(ValueError, match="positive number of milliseconds"):
        within_latency(results, 0)
