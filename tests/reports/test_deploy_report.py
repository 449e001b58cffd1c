"""The report's deployment-runtime columns (issue 35): a run with an eager cell, a deployed one, a deployed one whose
outputs disagree and a not-supported one gives cells.csv the runtime, cold start, artifact and parity columns, and
report.html a deployment section where the disagreeing cell is marked and not recommended."""

from __future__ import annotations

import csv
import io

from detbench.bench.core.record import RunRecord
from detbench.bench.core.schema import BlockRecord, Cell, CellResult, DeployInfo, LatencyStats, Measurement, Parity
from detbench.reports.cli import main


def _timed(cell: Cell, median_ms: float, deploy: DeployInfo | None = None) -> CellResult:
    stats = LatencyStats(4, median_ms, median_ms, median_ms, median_ms, median_ms * 1.1, median_ms * 1.3, 0.0, 0.0,
                         0.0)
    blocks = [BlockRecord(round=r, median_ms=median_ms, iterations=2, host_canary_ms=1.0, start_offset_s=r)
              for r in range(2)]
    return CellResult(cell, times_ms=[median_ms] * 4, latency=stats, throughput_ips=1000.0 / median_ms, deploy=deploy,
                      timer="perf-counter+sync", device="cpu",
                      measurement=Measurement("perf-counter+sync", 4, 1.0, "inline", rounds=2, blocks=blocks))


def test_the_report_shows_runtimes_with_cold_start_artifact_and_parity(tmp_path):
    model = "ssdlite320_mobilenet_v3_large"
    ok = DeployInfo("onnxruntime", "CPUExecutionProvider", "whole model", export_s=3.1, artifact_bytes=14 * 2**20,
                    load_s=0.4, cold_start_s=0.5, cold_import_s=3.0, serving_peak_rss_bytes=800 * 2**20,
                    parity=Parity("agree", {}, 300, 300, 300, min_box_iou=0.99999, max_score_diff=5e-7))
    bad = DeployInfo("torchscript", export_s=1.7, cold_start_s=2.4,
                     parity=Parity("disagree", {}, 300, 299, 299, unmatched=1, failures=["1 detection(s) ..."]))
    results = [_timed(Cell(model, image_size=(320, 320)), 1200.0),
               _timed(Cell(model, image_size=(320, 320), runtime="onnxruntime"), 80.0, ok),
               _timed(Cell(model, image_size=(320, 320), runtime="torchscript"), 280.0, bad),
               CellResult(Cell(model, image_size=(320, 320), runtime="aot-inductor"), status="not-supported",
                          reason="NotSupportedError: backbone: ...", deploy=DeployInfo("aot-inductor"))]
    results[2].reason = "outputs disagree with eager FP32: 1 detection(s) ..."
    path = RunRecord(results, options={"profile": "deploy"}, environment={"torch": "2.14.1"}).write(tmp_path / "r.json")
    assert main([str(path), "--out", str(tmp_path / "out")]) == 0
    rows = {r["cell_id"]: r for r in csv.DictReader(io.StringIO((tmp_path / "out" / "cells.csv").read_text()))}
    onnx = rows[f"{model}-infer-onnxruntime-fp32-bs1-gpu1-320x320"]
    assert onnx["runtime"] == "onnxruntime" and float(onnx["cold_start_s"]) == 0.5 and onnx["parity"] == "agree"
    assert float(onnx["artifact_bytes"]) == 14 * 2**20 and float(onnx["latency_p99_ms"]) == 104.0
    assert rows[f"{model}-infer-aot-inductor-fp32-bs1-gpu1-320x320"]["status"] == "not-supported"
    page = (tmp_path / "out" / "report.html").read_text()
    assert 'id="deploy"' in page and "1 here" in page and "CPUExecutionProvider" not in page  # provider: the CSV's
    advice = (tmp_path / "out" / "recommendations.csv").read_text()
    assert "onnxruntime/fp32" in advice and "parity disagree" in advice
