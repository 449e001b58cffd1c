"""``--detbench-resume`` takes only a journal of this machine, software and measurement options (issue 24): another
fingerprint or other options are refused in one line naming what differs, no more repeats than the run's are merged,
a bad line is named by its file and line, and the progress counts stay within the run's total."""

from __future__ import annotations

import json

import pytest

from detbench.bench.core.journal import Journal, JournalError, check_resume, read_journal
from detbench.bench.core.matrix import Capabilities
from detbench.bench.core.options import RunOptions
from detbench.bench.core.record import RecordError
from detbench.bench.core.schema import Cell
from detbench.bench.plugin.plugin import _read_resume
from detbench.bench.runtime import run as suite
from tests.bench.plugin.test_smoke_e2e import run_pytest
from tests.fakes.launcher import FakeLauncher, measured

CPU = Capabilities(cuda_available=False)
CELLS = [Cell("a"), Cell("b"), Cell("c"), Cell("d")]
ENVIRONMENT = {"hostname": "node-1", "platform": "Linux-6.1", "gpu": "NVIDIA H100 80GB HBM3", "cpu": "x86_64",
               "cpu_count": 64, "driver": "550.54", "torch": "2.4.0", "torchvision": "0.19.0", "cuda": "12.4",
               "cudnn": 90100, "python": "3.11.7", "image": None, "cuda_visible_devices": None}
TINY = ("--profile", "smoke", "--models", "tiny_convnet", "--modes", "infer", "--image-size", "32x32",
        "--model-modules", "tests.bench.tiny_models")


def _journal(tmp_path, options: RunOptions, environment: dict, repeats: range | None = None):
    """A journal of the four cells measured under ``options`` on ``environment`` (one line per repeat when given)."""
    with Journal(tmp_path / "old.journal.jsonl", options=options.to_dict(), environment=environment) as journal:
        for cell in CELLS:
            for repeat in repeats or [None]:
                result = measured(cell, 10.0)
                result.repeat, result.environment = repeat, environment  # as BenchRun completes it
                journal.append(result)
    return journal.path, read_journal(journal.path)


@pytest.mark.parametrize(("change", "named"), [
    ({"torch": "2.14.1+cu130"}, "torch: journal \"2.4.0\", this run \"2.14.1+cu130\""),
    ({"gpu": None, "driver": None}, "gpu: journal \"NVIDIA H100 80GB HBM3\", this run null"),
    ({"image": "registry/detbench:2"}, "image"),
])
def test_a_journal_of_another_machine_or_software_is_refused_naming_what_differs(tmp_path, change, named):
    path, results = _journal(tmp_path, RunOptions(), ENVIRONMENT)
    with pytest.raises(JournalError) as refused:
        check_resume(path, results, RunOptions().to_dict(), {**ENVIRONMENT, **change})
    message = str(refused.value)
    assert named in message and str(path) in message and "\n" not in message


@pytest.mark.parametrize(("options", "named"), [
    (RunOptions(repeats=2), "repeats: journal 5, this run 2"),
    (RunOptions(repeats=5, seed=1), "seed: journal 0, this run 1"),
    (RunOptions(repeats=5, profile="quick"), "profile"),
    (RunOptions(repeats=5, rounds_count=7), "rounds_count"),
    (RunOptions(repeats=5, block_s=0.3), "block_s"),
    (RunOptions(repeats=5, cudnn_benchmark=False), "cudnn_benchmark"),
])
def test_a_journal_of_other_measurement_options_is_refused_naming_them(tmp_path, options, named):
    path, results = _journal(tmp_path, RunOptions(repeats=5), ENVIRONMENT)
    with pytest.raises(JournalError, match=named):
        check_resume(path, results, options.to_dict(), ENVIRONMENT)


def test_host_noise_and_options_that_change_no_figure_may_differ(tmp_path):
    path, results = _journal(tmp_path, RunOptions(), ENVIRONMENT)
    here = {**ENVIRONMENT, "hostname": "node-2", "platform": "Linux-6.2", "cuda_visible_devices": "1"}
    check_resume(path, results, RunOptions(cell_timeout_s=30.0, model_modules=("x",)).to_dict(), here)


def test_a_journal_without_a_fingerprint_is_refused(tmp_path):
    with Journal(tmp_path / "bare.journal.jsonl") as journal:
        journal.append(measured(CELLS[0], 10.0))
    with pytest.raises(JournalError, match="holds no environment fingerprint"):
        check_resume(journal.path, read_journal(journal.path), RunOptions().to_dict(), ENVIRONMENT)


def test_never_more_repeats_than_the_runs_repeats_are_merged(monkeypatch, tmp_path):
    _, results = _journal(tmp_path, RunOptions(repeats=5), ENVIRONMENT, repeats=range(5))
    launcher = FakeLauncher()
    monkeypatch.setattr(suite, "run_group", launcher)
    run = suite.BenchRun(RunOptions(repeats=2), CPU, list(CELLS), resumed=results)
    run.run(CELLS[0])
    assert launcher.calls == []  # repeats 0 and 1 of every cell are in the journal
    assert {r.measurement.repeats for r in run.results.values()} == {2}
    assert all(len(r.times_ms) == 2 * len(results[0].times_ms) for r in run.results.values())


def test_a_merged_cell_of_more_repeats_is_not_taken_as_this_runs_result(monkeypatch, tmp_path):
    merged = measured(CELLS[0], 10.0)
    merged.measurement.repeats = 5
    launcher = FakeLauncher()
    monkeypatch.setattr(suite, "run_group", launcher)
    run = suite.BenchRun(RunOptions(repeats=2), CPU, [CELLS[0]], resumed=[merged])
    assert run.run(CELLS[0]) is not merged and launcher.calls == [[CELLS[0].id]] * 2


def test_a_bad_journal_line_is_named_by_its_file_and_line(tmp_path):
    path = tmp_path / "broken.journal.jsonl"
    path.write_text('{"schema": "detbench.run", "run_id": "x"}\n{"cell_id": \n{"cell_id": "a"}\n')
    with pytest.raises(RecordError) as bad:
        read_journal(path)
    assert f"{path}: line 2, column 13 is not valid JSON" in str(bad.value)
    assert "line 1 column" not in str(bad.value)
    with pytest.raises(JournalError) as refused:
        _read_resume(str(path), RunOptions().to_dict(), ENVIRONMENT)
    assert "line 1 column" not in str(refused.value) and f"{path}: line 2," in str(refused.value)


def test_a_journal_a_live_run_is_writing_is_not_resumed(tmp_path):
    """Resuming a journal whose run is still writing it would measure its cells twice; once that run has ended (its
    lock released) the same journal resumes."""
    live = Journal.claim(tmp_path / "live.json", options=RunOptions().to_dict(), environment=ENVIRONMENT)
    try:
        with pytest.raises(JournalError) as refused:
            _read_resume(str(live.path), RunOptions().to_dict(), ENVIRONMENT)
        assert "being written by a live run (pid" in str(refused.value) and str(live.path) in str(refused.value)
    finally:
        live.close()
    assert _read_resume(str(live.path), RunOptions().to_dict(), ENVIRONMENT) == []


def test_progress_after_a_resume_counts_within_the_runs_total(monkeypatch, tmp_path):
    _, results = _journal(tmp_path, RunOptions(repeats=3), ENVIRONMENT, repeats=range(3))
    whole = [r for r in results if r.cell.id != CELLS[3].id]  # d's repeats failed: measured again
    for cell in CELLS[:3]:  # the other cells ended merged
        done = measured(cell, 10.0)
        done.measurement.repeats = 3
        whole.append(done)
    monkeypatch.setattr(suite, "run_group", FakeLauncher())
    shown: list[tuple[int, int, int]] = []
    display = suite.RunDisplay(group=lambda label, cells, done, total, isolation: shown.append((done + 1, done + cells,
                                                                                                 total)),
                               result=lambda result, index, total: shown.append((index, index, total)))
    run = suite.BenchRun(RunOptions(repeats=3), CPU, list(CELLS), display=display, resumed=whole)
    run.run(CELLS[3])
    assert shown and all(first <= last <= total for first, last, total in shown), shown


@pytest.mark.timeout(600)  # 290-340 s on the 2-core machine loaded 6-fold (docs/compat.md)
def test_the_pytest_face_refuses_a_journal_of_other_options_or_another_environment_and_takes_its_own(tmp_path):
    first = run_pytest(*TINY, "--repeats", "2", f"--benchmark-json={tmp_path / 'r.json'}")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    journal = tmp_path / "r.journal.jsonl"
    other = run_pytest(*TINY, "--repeats", "3", "--detbench-resume", str(journal),
                       f"--benchmark-json={tmp_path / 'r3.json'}")
    assert other.returncode == 4 and "repeats: journal 2, this run 3" in other.stderr, other.stderr[-2000:]
    assert "Traceback" not in other.stdout + other.stderr and not (tmp_path / "r3.json").exists()
    lines = journal.read_text().splitlines()
    header = json.loads(lines[0])
    header["environment"]["torch"] = "1.13.0"
    moved = tmp_path / "h100.journal.jsonl"
    moved.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    elsewhere = run_pytest(*TINY, "--repeats", "2", "--detbench-resume", str(moved))
    assert elsewhere.returncode == 4 and 'torch: journal "1.13.0"' in elsewhere.stderr, elsewhere.stderr[-2000:]
    same = run_pytest(*TINY, "--repeats", "2", "--cell-timeout", "300", "--detbench-resume", str(journal),
                      f"--benchmark-json={tmp_path / 'again.json'}")
    assert same.returncode == 0, same.stdout[-3000:] + same.stderr[-3000:]
    assert "▶" not in same.stdout and "tiny_convnet-infer-eager-fp32-bs1-gpu1-32x32  OK" in same.stdout  # taken


@pytest.mark.parametrize(("options", "refused"), [
    (RunOptions(rounds_count=3), False),  # the CPU default given explicitly: measures as leaving it out
    (RunOptions(block_s=0.1), False),
    (RunOptions(rounds_count=7), True),
    (RunOptions(block_s=0.3), True),
])
def test_the_rounds_options_are_compared_as_the_policy_in_effect(tmp_path, options, refused):
    """A CPU journal of the default rounds policy (3 rounds of 0.1 s blocks): an explicit ``--rounds 3`` resumes it
    (it used to be refused: ``rounds_count: journal null, this run 3``); another policy is refused, named."""
    policy = RunOptions().rounds_policy("cpu")
    assert (policy.rounds, policy.block_s) == (3, 0.1)
    with Journal(tmp_path / "cpu.journal.jsonl", options=RunOptions().to_dict(), environment=ENVIRONMENT) as journal:
        for cell in CELLS:
            result = measured(cell, 10.0)
            result.environment = ENVIRONMENT
            result.config.update(rounds_policy=policy.to_dict(), device_type="cpu")
            journal.append(result)
    results = read_journal(journal.path)
    if refused:
        with pytest.raises(JournalError, match="rounds policy: journal"):
            check_resume(journal.path, results, options.to_dict(), ENVIRONMENT)
    else:
        check_resume(journal.path, results, options.to_dict(), ENVIRONMENT)
