"""What a run writes when something goes wrong around it (issue 24): a ``--repeats`` run stopped by SIGINT or
SIGTERM still writes the repeats it finished, a full disk under ``--benchmark-json`` is one line and a non-zero exit
with no partial file, and ``--gpus 2`` alone measures the added 1-GPU twin first so the JSON has the scaling."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from detbench.bench.core import record
from detbench.bench.core.journal import read_journal
from detbench.bench.core.matrix import Capabilities, MatrixFilters, add_gpu_twins, expand
from detbench.bench.core.options import RunOptions
from detbench.bench.core.record import latest_lines, load_results
from detbench.bench.core.schema import Cell
from detbench.bench.models import list_models
from detbench.bench.runtime import run as suite
from tests.bench.plugin.test_smoke_e2e import ROOT, run_pytest
from tests.fakes.launcher import FakeLauncher

TINY = ("--profile", "smoke", "--modes", "infer", "--image-size", "32x32", "--model-modules", "tests.bench.tiny_models")
CONVNET = "tiny_convnet-infer-eager-fp32-bs1-gpu1-32x32"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_repeats_run_stopped_by_a_signal_writes_the_repeats_it_finished(tmp_path, stop):
    out, journal = tmp_path / "r.json", tmp_path / "r.journal.jsonl"
    command = [sys.executable, "-m", "pytest", "bench/", "-p", "no:cacheprovider", "-q", *TINY, "--models",
               "tiny_convnet,tiny_mlp", "--isolation", "model", "--repeats", "3", f"--benchmark-json={out}"]
    with open(tmp_path / "out.txt", "w") as sink:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, "DETBENCH_TEST_FAULT": "tiny_mlp:hang"})
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not (  # tiny_convnet's repeat 0 ended
                journal.exists() and any('"repeat":0' in line and '"status":"ok"' in line
                                         for line in journal.read_text().splitlines())):
            time.sleep(0.2)
        assert proc.poll() is None, (tmp_path / "out.txt").read_text()[-2000:]
        time.sleep(1.0)  # into tiny_mlp's hanging group
        proc.send_signal(stop)
        proc.wait(timeout=180)  # a signal the clean-up loses hangs to the cell timeout (600 s): see isolate.reap
    log = (tmp_path / "out.txt").read_text()
    assert proc.returncode != 0 and "Traceback" not in log, log[-3000:]
    (cell,) = load_results(out)  # the finished repeat of tiny_convnet; tiny_mlp measured nothing
    # never complete: 1 of its 3 repeats (issue 37)
    assert cell.cell.id == CONVNET and cell.status == "partial" and cell.measurement.repeats == 1
    assert cell.reason == "run stopped after 1 of 3 repeats"
    # the journal keeps the repeat lines (each block's progress, then the repeat's own), for a resume
    assert [r.repeat for r in latest_lines(read_journal(journal))] == [0]


def test_the_json_is_written_beside_and_renamed_so_a_full_disk_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    target.write_text('{"previous": true}')

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(record.os, "fsync", full)
    with pytest.raises(OSError, match="No space left on device"):
        record.write_file_atomically(target, '{"benchmarks": []}')
    assert json.loads(target.read_text()) == {"previous": True} and os.listdir(tmp_path) == ["r.json"]
    monkeypatch.undo()
    record.write_file_atomically(target, '{"benchmarks": []}')
    assert json.loads(target.read_text()) == {"benchmarks": []} and os.listdir(tmp_path) == ["r.json"]


@pytest.mark.skipif(not os.access("/dev", os.W_OK) or not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_under_benchmark_json_is_one_line_and_a_non_zero_exit_and_the_journal_keeps_every_cell(tmp_path):
    journal = tmp_path / "j.jsonl"
    proc = run_pytest(*TINY, "--models", "tiny_convnet", "--benchmark-json=/dev/full", "--detbench-journal",
                      str(journal))
    log = proc.stdout + proc.stderr
    assert proc.returncode not in (0, 4) and "Traceback" not in log, log[-3000:]
    lines = [line for line in log.splitlines() if "cannot write --benchmark-json /dev/full" in line]
    assert len(lines) == 1 and "No space left on device" in lines[0] and str(journal) in lines[0], log[-3000:]
    assert [r.cell.id for r in latest_lines(read_journal(journal))] == [CONVNET]


def test_the_added_one_gpu_twin_is_planned_before_its_multi_gpu_cells():
    wanted = expand("smoke", MatrixFilters(models=("resnet50",), gpus=(2,), batch_sizes=(1, 2)), list_models())
    cells, added = add_gpu_twins(wanted)
    gpus = [c.gpus for c in cells]
    assert gpus == sorted(gpus) and gpus.count(1) == gpus.count(2) >= 2  # every twin before every 2-GPU cell
    assert set(added) == {c.id for c in cells if c.gpus == 1}


def test_a_run_asked_for_a_multi_gpu_cell_first_measures_its_one_gpu_twin_first(monkeypatch):
    cells = [Cell("a", gpus=2), Cell("a")]  # whatever order pytest runs them in
    launcher = FakeLauncher()
    monkeypatch.setattr(suite, "run_group", launcher)
    run = suite.BenchRun(RunOptions(), Capabilities(cuda_available=True, gpu_count=2), cells)
    run.run(cells[0])
    assert launcher.calls == [[cells[1].id], [cells[0].id]] and launcher.baselines_seen[1] == [cells[1].id]


def test_gpus_2_alone_writes_the_scaling_efficiency_into_the_json(tmp_path):
    proc = run_pytest(*TINY, "--models", "tiny_convnet", "--gpus", "2", f"--benchmark-json={tmp_path / 'r.json'}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = {r.cell.gpus: r for r in load_results(tmp_path / "r.json")}
    assert results[1].added_reason and results[2].status == "ok"
    assert results[2].distributed.scaling_efficiency is not None, results[2].distributed.scaling_note
    assert results[2].distributed.baseline["cell_id"] == results[1].cell.id
