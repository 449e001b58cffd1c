"""The pytest face end to end: real pytest + pytest-benchmark in a subprocess, writing --benchmark-json, with a
worker per model group measuring only the cells pytest selected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detbench.bench.core.journal import read_journal
from detbench.bench.core.record import load_results
from detbench.bench.core.schema import SCHEMA_NAME
from detbench.envcheck.isolate import command_line, descendants

ROOT = Path(__file__).resolve().parents[3]


def run_pytest(*args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytest", "bench/", "-p", "no:cacheprovider", "-q", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


# session scope: the xdist group keeps these tests on one worker (tests/conftest.py), where a session fixture runs
# once even if another module's tests run between them
@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The smoke profile on a real torchvision model plus tiny test models, one of them crashing its worker."""
    out = tmp_path_factory.mktemp("smoke")
    proc = run_pytest(
        "--profile", "smoke", "--models", "resnet50,tiny_convnet,tiny_needs_extra", "--modes", "infer,train",
        "--image-size", "32x32", "-k", "not resnet50-train", "--model-modules", "tests.bench.tiny_models",
        "--isolation", "model", f"--benchmark-json={out / 'results.json'}",
        env={"DETBENCH_TEST_FAULT": "tiny_convnet-train:segfault"},
    )
    return proc, out


@pytest.mark.xdist_group("smoke_run")  # one worker runs the module's smoke run once
def test_smoke_run_exits_zero_and_prints_the_summary(smoke_run):
    proc, _ = smoke_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "detbench summary" in proc.stdout
    assert "2 passed, 2 skipped" in proc.stdout and "1 xfailed" in proc.stdout  # tiny_needs_extra x2 skipped
    assert "SIGSEGV" in proc.stdout
    assert "median per-cell overhead (wall minus timed region): eager" in proc.stdout
    assert "tiny_convnet @ 32x32 x1 GPU  2 cell(s), interleaved rounds (model)" in proc.stdout
    assert "detbench: what should I use?" in proc.stdout  # the closing summary's advice (detbench.bench.core.advice)
    assert "Name (time in" not in proc.stdout  # pytest-benchmark's own table is off (--detbench-benchmark-table)
    table = proc.stdout.split("detbench cells\n")[1].split("median per-cell overhead")[0]
    assert max(len(line) for line in table.splitlines()) <= 100  # reads at 100 columns and in a log


@pytest.mark.xdist_group("smoke_run")  # one worker runs the module's smoke run once
def test_benchmark_json_holds_device_timed_iterations_and_the_detbench_schema(smoke_run):
    _, out = smoke_run
    data = json.loads((out / "results.json").read_text())
    assert "detbench_environment" in data["machine_info"]
    benches = {b["param"]: b for b in data["benchmarks"]}
    assert set(benches) == {"resnet50-infer-eager-fp32-bs2-gpu1-32x32", "tiny_convnet-infer-eager-fp32-bs1-gpu1-32x32"}
    whole = {r.cell.id: r for r in load_results(out / "results.json")}
    assert data["detbench"]["options"]["profile"] == "smoke"  # the run's options, once
    for cell_id, bench in benches.items():
        payload = bench["extra_info"]["detbench"]
        # one run record: the run's options and environment and the stats' iterations are not copied per cell
        assert "environment" not in payload and "times_ms" not in payload and "options" not in payload["config"]
        cell = whole[cell_id]
        assert cell.status == "ok" and cell.environment
        # pytest-benchmark's stats are exactly our measured iterations (seconds)
        assert bench["stats"]["data"] == pytest.approx([t / 1000.0 for t in cell.times_ms])
        assert bench["stats"]["median"] == pytest.approx(cell.latency.median_ms / 1000.0)
        assert bench["stats"]["rounds"] == cell.latency.n
    not_measured = {r["cell_id"]: r for r in data["detbench"]["not_measured"]}
    assert not_measured["tiny_convnet-train-eager-fp32-bs1-gpu1-32x32"]["status"] == "error"
    assert not_measured["tiny_needs_extra-infer-eager-fp32-bs1-gpu1-32x32"]["status"] == "skipped"
    assert data["detbench"]["schema"] == SCHEMA_NAME and len(data["detbench"]["cell_ids"]) == 6  # the matrix, before -k


@pytest.mark.xdist_group("smoke_run")  # one worker runs the module's smoke run once
def test_journal_next_to_the_json_has_every_selected_cell_and_the_groups_kept_their_results(smoke_run):
    _, out = smoke_run
    results = {r.cell.id: r for r in read_journal(out / "results.journal.jsonl")}
    assert sorted(r.status for r in results.values()) == ["error", "ok", "ok", "skipped", "skipped"]
    assert "resnet50-train-eager-fp32-bs2-gpu1-32x32" not in results  # deselected by -k: not measured
    infer = results["tiny_convnet-infer-eager-fp32-bs1-gpu1-32x32"]
    crashed = results["tiny_convnet-train-eager-fp32-bs1-gpu1-32x32"]
    assert crashed.failure.output_tail is not None and crashed.failure.returncode == -11
    assert infer.measurement.worker_attempt == 2 and infer.measurement.isolation == "model"  # a fresh worker
    assert infer.ratio.baseline_cell_id == infer.cell.id and infer.measurement.rounds == 3


@pytest.mark.xdist_group("smoke_run")  # one worker runs the module's smoke run once
def test_pytest_benchmark_compare_reads_the_file(smoke_run):
    _, out = smoke_run
    compare = "import sys; from pytest_benchmark.cli import main; sys.argv[0] = 'pytest-benchmark'; main()"
    proc = subprocess.run([sys.executable, "-c", compare, "compare", "--columns=min,median,max,rounds",
                           str(out / "results.json")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "tiny_convnet-infer-eager-fp32-bs1-gpu1-32x32" in proc.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["--profile", "huge"], ["unknown profile 'huge'", "auto, smoke, quick, full"]),
        (["--models", "yolo"], ["unknown model 'yolo'", "retinanet_resnet50_fpn"]),
        (["--precisions", "fp8"], ["unknown precision 'fp8'", "amp-bf16"]),
        (["--batch-sizes", "0"], ["bad batch size '0'"]),
        (["--isolation", "docker"], ["unknown isolation 'docker'", "model, cell, inline"]),
        (["--models="], ["--models is empty"]),
        (["--telemetry-hz", "inf"], ["telemetry rate must be within 0..1000 Hz"]),
        (["--image-size", "9000x9000"], ["bad image size '9000x9000'", "32..8192"]),
        (["--gpus", "0"], ["bad GPU count '0'"]),
        (["--compile", "eager,jit"], ["unknown compile mode 'jit'", "reduce-overhead, max-autotune-no-cudagraphs"]),
        (["--memory-format", "nhwc"], ["unknown memory format 'nhwc'", "contiguous, channels_last"]),
        (["--cudnn-benchmark", "yes"], ["bad --cudnn-benchmark 'yes'", "on, off"]),
        (["--batch-sizes", "1,maximum"], ["bad batch size 'maximum'", "e.g. 1,8,max"]),
        (["--profile", "tune", "--repeats", "2"], ["batch size max is not repeated"]),
    ],
)
def test_bad_options_are_one_line_usage_errors(args, words, capsys, tmp_path, monkeypatch):
    """In-process (pytest.main on bench/, as the command line would run it): a subprocess per case cost a torch
    import each (9-80 s on the 2-core CI machine); the case below checks one end to end."""
    monkeypatch.chdir(tmp_path)  # a journal, were one claimed, would land here, not in the checkout
    status = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "--capture=no", str(ROOT / "bench"),
                          *args])
    err = capsys.readouterr().err
    assert status == pytest.ExitCode.USAGE_ERROR  # 4, pytest's usage-error exit code
    errors = [line for line in err.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in errors[0]
    assert list(tmp_path.iterdir()) == []


def test_collect_only_writes_nothing(capsys, tmp_path, monkeypatch):
    """``--collect-only`` lists the cells and leaves no file behind (it used to leave a header-only journal, and to
    rename an existing journal at the same path aside)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.journal.jsonl").write_text("kept\n")
    status = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", str(ROOT / "bench"), "--profile", "smoke",
                          f"--benchmark-json={tmp_path / 'run.json'}"])
    assert status == pytest.ExitCode.OK
    assert "test_cell[resnet50-infer-eager-fp32-bs2-gpu1-64x64]" in capsys.readouterr().out
    # .benchmarks: pytest-benchmark's own storage folder, which it makes in the working folder of any run
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".benchmarks") == ["run.journal.jsonl"]
    assert (tmp_path / "run.journal.jsonl").read_text() == "kept\n"


def test_xdist_is_refused_in_one_line(capsys, tmp_path, monkeypatch):
    """``pytest bench/ -n 2`` would time cells against each other (it used to crash every worker)."""
    monkeypatch.chdir(tmp_path)
    status = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", str(ROOT / "bench"), "-n", "2",
                          "--profile", "smoke"])
    assert status == pytest.ExitCode.USAGE_ERROR
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and "pytest-xdist (-n)" in errors[0] and "Traceback" not in err, err


def test_a_bad_option_is_a_one_line_usage_error_end_to_end():
    proc = run_pytest("--collect-only", "--profile", "huge", timeout=120)
    assert proc.returncode == 4  # pytest's usage-error exit code
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and "unknown profile 'huge'" in errors[0] and "Traceback" not in proc.stderr


def test_cell_ids_select_cells_with_k(tmp_path):
    # the journal under tmp_path: by default it would be .detbench/ in the checkout, where this runs
    proc = run_pytest("--collect-only", "--profile", "quick", "-k",
                      "retinanet_resnet50_fpn-infer-compiled-fp32-bs8-gpu1",
                      f"--detbench-journal={tmp_path / 'j.jsonl'}", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "test_cell[retinanet_resnet50_fpn-infer-compiled-fp32-bs8-gpu1]" in proc.stdout
    assert "1/" in proc.stdout or "1 test collected" in proc.stdout or "1 selected" in proc.stdout


def test_the_tune_profile_collects_eight_cells_per_model_with_the_new_axes_in_their_ids(tmp_path):
    proc = run_pytest("--collect-only", "--profile", "tune", "--models", "retinanet_resnet50_fpn",
                      f"--detbench-journal={tmp_path / 'j.jsonl'}", timeout=120)
    assert proc.returncode == 0, proc.stderr
    for cell_id in ("retinanet_resnet50_fpn-infer-eager-fp32-bs8-gpu1",
                    "retinanet_resnet50_fpn-infer-compiled-bf16-channels_last-bs8-gpu1",
                    "retinanet_resnet50_fpn-infer-compiled-reduce-overhead-bf16-channels_last-bs8-gpu1",
                    "retinanet_resnet50_fpn-infer-eager-bf16-channels_last-bsmax-gpu1"):
        assert f"test_cell[{cell_id}]" in proc.stdout
    assert proc.stdout.count("test_cell[") == 8


def test_a_run_where_no_cell_measured_still_writes_its_benchmark_json(tmp_path):
    # pytest-benchmark itself writes nothing without a measured benchmark; the failed cells must not vanish
    from detbench.reports.load import load_run

    out = tmp_path / "run.json"
    proc = run_pytest("--profile", "smoke", "--models", "tiny_needs_extra,tiny_convnet", "--modes", "infer",
                      "--image-size", "32x32", "--model-modules", "tests.bench.tiny_models", "--isolation", "process",
                      f"--benchmark-json={out}", env={"DETBENCH_TEST_FAULT": "tiny_convnet-infer:segfault"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["benchmarks"] == [] and "detbench_environment" in data["machine_info"]
    statuses = {r["cell_id"].split("-")[0]: r["status"] for r in data["detbench"]["not_measured"]}
    assert statuses == {"tiny_needs_extra": "skipped", "tiny_convnet": "error"}
    assert sorted(r.status for r in load_run(out).results) == ["error", "skipped"]


def test_sigterm_ends_the_run_and_its_worker_like_ctrl_c(tmp_path):
    import signal
    import time

    log = tmp_path / "out.txt"
    command = [sys.executable, "-m", "pytest", "bench/", "-p", "no:cacheprovider", "-q", "--profile", "smoke",
               "--models", "tiny_convnet", "--modes", "infer", "--image-size", "32x32", "--model-modules",
               "tests.bench.tiny_models", "--isolation", "model", f"--benchmark-json={tmp_path / 'r.json'}"]
    with open(log, "w") as sink:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, "DETBENCH_TEST_FAULT": "tiny_convnet:hang"})
        worker = None
        deadline = time.time() + 120
        while worker is None and time.time() < deadline and proc.poll() is None:
            # /proc read tolerantly: a short-lived child can exit between the listing and the read of its command
            # line (CI, 2026-12-06: FileNotFoundError)
            worker = next((c for c in descendants(proc.pid) if b"detbench.bench.runtime.worker" in command_line(c)),
                          None)
            time.sleep(0.2)
        assert worker is not None, log.read_text()[-2000:]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode != 0 and "SIGTERM" in log.read_text()
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)  # killed with its process group and reaped, not left running
