"""run_cell inline on the CPU with a tiny model: every field it can fill is filled, consistently."""

from __future__ import annotations

import pytest
import torch

from bench.journal import Journal, read_journal
from bench.options import RunOptions
from bench.runner import run_cell
from bench.schema import Cell, CellResult
from bench.timing import MeasurePolicy, WarmupPolicy

MODULES = ("tests.bench.tiny_models",)
FAST = dict(model_modules=MODULES, warmup=WarmupPolicy(window=2, tolerance=0.5, min_iterations=2, max_iterations=20,
                                                        max_s=1.0),
            measure=MeasurePolicy(min_iterations=6, min_s=0.05, max_iterations=50, max_s=1.0))


def test_inference_cell_fills_its_fields():
    result = run_cell(Cell("tiny_convnet", "infer", batch_size=4, image_size=(32, 32)), RunOptions(**FAST))
    assert result.status == "ok", result.reason
    assert result.timer == "perf-counter+sync"
    assert result.latency.n == len(result.times_ms) >= 6
    assert result.throughput_ips == pytest.approx(4 * 1000.0 / result.latency.median_ms)
    assert result.throughput_ips_p10 <= result.throughput_ips <= result.throughput_ips_p90
    assert result.warmup_iterations >= 2 and result.warmup_s > 0 and result.warmup_converged is not None
    assert result.first_call_s > 0 and result.compile_s is None and result.graph_breaks is None
    assert result.peak_memory_bytes is None  # not measured on CPU, and says so
    assert result.config["measurement"]["memory"] == "not measured on CPU"
    assert result.flops_per_image and result.flops_per_image > 0
    assert result.achieved_tflops == pytest.approx(result.flops_per_image * result.throughput_ips / 1e12)
    assert result.peak_tflops is None and result.mfu is None  # no datasheet peak for a CPU
    config = result.config
    assert config["seed"] == 0 and config["profile"] == "smoke" and config["cell_id"] == result.cell.id
    assert config["warmup_policy"]["window"] == 2 and config["measure_policy"]["min_iterations"] == 6
    assert config["inference_context"] == "torch.no_grad()" and "optimizer" not in config
    assert CellResult.from_dict(result.to_dict()).to_dict() == result.to_dict()


def test_training_cell_states_its_optimizer_and_loss():
    result = run_cell(Cell("tiny_convnet", "train", batch_size=2, image_size=(32, 32)),
                      RunOptions(optimizer="adamw", **FAST))
    assert result.status == "ok", result.reason
    assert result.config["optimizer"] == {"name": "adamw", "lr": 1e-4, "momentum": None, "grad_scaler": False}
    assert isinstance(result.config["final_loss"], float)
    assert result.config["flops"]["backward_counted"] is True


def test_missing_extra_is_skipped_with_the_install_command():
    result = run_cell(Cell("tiny_needs_extra"), RunOptions(**FAST))
    assert result.status == "skipped" and "pip install" in result.reason


def test_oom_inside_a_cell_is_an_oom_result_with_the_requested_bytes(monkeypatch):
    monkeypatch.setenv("DETBENCH_TEST_FAULT", "tiny_convnet-infer:oom")
    result = run_cell(Cell("tiny_convnet", "infer", image_size=(32, 32)), RunOptions(**FAST))
    assert result.status == "oom"
    assert result.memory_requested_bytes == int(2.5 * 2**30)
    assert "Tried to allocate 2.50 GiB" in result.reason


def test_an_exception_is_an_error_result_with_its_traceback(monkeypatch):
    monkeypatch.setenv("DETBENCH_TEST_FAULT", "tiny_convnet-infer:raise")
    result = run_cell(Cell("tiny_convnet", "infer", image_size=(32, 32)), RunOptions(**FAST))
    assert result.status == "error" and result.reason == "RuntimeError: injected failure (bench.faults)"
    assert "faults.py" in result.config["traceback_tail"]


def test_journal_is_durable_line_by_line_and_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "j" / "journal.jsonl"
    results = [CellResult(Cell("resnet50", batch_size=b), status="skipped", reason="x") for b in (1, 2)]
    with Journal(path) as journal:
        journal.append(results[0])
        assert len(path.read_text().splitlines()) == 2  # run header + the cell: on disk before the next cell runs
        journal.append(results[1])
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"schema": "detbench.cell", "cell": {"mo')  # a crash mid-write
    assert [r.cell.id for r in read_journal(path)] == [r.cell.id for r in results]


def test_device_name_asks_torch_cuda_for_a_gpu_and_describes_the_cpu(monkeypatch):
    # a GPU path a CPU machine never takes on its own: a typo here broke every GPU cell once
    from bench.runner import device_name

    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: asked.append(device) or "NVIDIA H100 80GB HBM3")
    assert device_name(torch.device("cuda", 0)) == "NVIDIA H100 80GB HBM3" and asked == [torch.device("cuda", 0)]
    cpu = device_name(torch.device("cpu"))
    assert cpu.startswith("cpu (") and "cores" in cpu and "threads" in cpu
