"""The journal: durable per cell, one run per file, claimed before any cell runs, never destroying a previous run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detbench.bench.core.journal import Journal, JournalError, read_journal, read_run_header
from detbench.bench.core.schema import Cell, CellResult


def _skipped(reason: str, batch_size: int = 1) -> CellResult:
    return CellResult(Cell("resnet50", batch_size=batch_size), status="skipped", reason=reason)


def test_a_new_run_keeps_the_previous_journal_under_its_run_id_and_says_so(tmp_path, capsys):
    path = tmp_path / "run.journal.jsonl"
    with Journal.claim(None, path) as first:
        first.append(_skipped("first run"))
        first.append(_skipped("first run", 2))
    with Journal.claim(None, path) as second:
        second.append(_skipped("second run", 4))
    assert [r.reason for r in read_journal(path)] == ["second run"]
    kept = tmp_path / f"run.journal.{first.run_id}.jsonl"
    assert [r.reason for r in read_journal(kept)] == ["first run", "first run"]
    assert f"previous journal kept as {kept}" in capsys.readouterr().err
    assert first.run_id != second.run_id


def test_the_previous_json_moves_with_its_journal(tmp_path):
    target = tmp_path / "run.json"
    with Journal.claim(target, None) as first:
        first.append(_skipped("first run"))
    target.write_text(json.dumps({"detbench": {"run_id": first.run_id}}))
    with Journal.claim(target, None) as second:
        assert second.path == tmp_path / "run.journal.jsonl"
    # no stale JSON of the previous run beside the new journal: it sits beside its own journal
    assert not target.exists()
    assert json.loads((tmp_path / f"run.{first.run_id}.json").read_text())["detbench"]["run_id"] == first.run_id
    assert (tmp_path / f"run.journal.{first.run_id}.jsonl").exists()


def test_the_run_id_is_in_the_journal_header_and_read_journal_skips_it(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal.claim(tmp_path / "out.json", path) as journal:
        journal.append(_skipped("x"))
    header = read_run_header(path)
    assert header["run_id"] == journal.run_id and header["benchmark_json"] == str(tmp_path / "out.json")
    assert json.loads(path.read_text().splitlines()[0])["schema"] == "detbench.run"
    assert [r.reason for r in read_journal(path)] == ["x"]


def test_the_report_loader_reads_a_claimed_journal(tmp_path):
    from detbench.reports.load import load_run

    path = tmp_path / "j.jsonl"
    with Journal.claim(None, path) as journal:
        journal.append(_skipped("x"))
    assert [r.reason for r in load_run(path).results] == ["x"]


def test_a_second_concurrent_writer_is_refused_in_one_line(tmp_path):
    target = tmp_path / "run.json"
    with Journal.claim(target, None) as first:
        first.append(_skipped("first run"))
        # another process: the lock is on the file system, not in this interpreter
        code = (
            "import sys\nfrom detbench.bench.core.journal import Journal, JournalError\n"
            f"try:\n    Journal.claim({str(target)!r}, None)\nexcept JournalError as exc:\n"
            "    print(exc)\n    sys.exit(3)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, PYTHONPATH=os.getcwd()))
        assert proc.returncode == 3, proc.stderr
        lines = proc.stdout.strip().splitlines()
        assert len(lines) == 1 and "another detbench run" in lines[0] and str(os.getpid()) in lines[0]
        assert [r.reason for r in read_journal(first.path)] == ["first run"]  # untouched
    with Journal.claim(target, None):  # free again once the first run closed
        pass


def test_a_journal_claimed_twice_in_one_process_is_refused(tmp_path):
    with Journal.claim(None, tmp_path / "j.jsonl"), pytest.raises(JournalError, match="another detbench run"):
        Journal.claim(None, tmp_path / "j.jsonl")


def test_an_unwritable_results_folder_is_refused_before_any_cell(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(JournalError, match=r"--benchmark-json .*file/run.json") as info:
        Journal.claim(blocker / "run.json", None)  # its folder cannot be created: a file is in the way
    assert "\n" not in str(info.value) and isinstance(info.value, ValueError)
    with pytest.raises(JournalError, match="is a directory"):
        Journal.claim(tmp_path, None)
    with pytest.raises(JournalError, match="journal"):
        Journal.claim(tmp_path / "ok.json", blocker / "j.jsonl")


@pytest.mark.parametrize("kind", ["chmod", "procfs"])
def test_a_read_only_results_folder_is_refused(tmp_path, kind):
    """A folder the user may not write (mode 0555: root writes through it, so that case needs a non-root user)
    and one no one may write, root included (procfs takes no new files): CI runs as root, the second runs there."""
    if kind == "chmod" and os.geteuid() == 0:
        pytest.skip("root writes through file permissions; the procfs case covers root")
    if kind == "procfs" and not Path("/proc/self").is_dir():
        pytest.skip("no procfs on this system")
    folder = tmp_path / "ro" if kind == "chmod" else Path("/proc/self")
    if kind == "chmod":
        folder.mkdir()
        folder.chmod(0o555)
    try:
        with pytest.raises(JournalError, match=f"cannot write .*: folder {folder} is not writable"):
            Journal.claim(folder / "run.json", None)
    finally:
        if kind == "chmod":
            folder.chmod(0o755)


def test_each_append_is_on_disk_before_close(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.append(CellResult(Cell("resnet50"), status="oom", reason="CUDA out of memory"))
    assert [r.status for r in read_journal(path)] == ["oom"]
    journal.close()
    assert not (tmp_path / "j.jsonl.lock").exists()  # the lock goes with the run


def _pytest_bench(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytest", "bench/", "-p", "no:cacheprovider", "-q", "--profile", "smoke",
               "--models", "tiny_convnet", "--modes", "infer", "--image-size", "32x32", "--isolation", "inline",
               "--model-modules", "tests.bench.tiny_models", *args]
    root = str(Path(__file__).resolve().parents[3])
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, PYTHONPATH=root))


def test_the_pytest_face_refuses_a_second_writer_and_an_unwritable_folder_before_any_cell(tmp_path):
    target = tmp_path / "run.json"
    with Journal.claim(target, None):
        proc = _pytest_bench(f"--benchmark-json={target}")
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]  # pytest's usage error
    assert "another detbench run" in proc.stderr and "Traceback" not in proc.stderr
    assert "tiny_convnet" not in proc.stdout  # refused before collecting a cell
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = _pytest_bench(f"--benchmark-json={blocker / 'run.json'}")
    assert proc.returncode == 4 and "cannot create the folder of --benchmark-json" in proc.stderr


def test_the_pytest_face_keeps_the_previous_run_and_says_so(tmp_path):
    target = tmp_path / "run.json"
    first = _pytest_bench(f"--benchmark-json={target}")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    first_id = read_run_header(tmp_path / "run.journal.jsonl")["run_id"]
    second = _pytest_bench(f"--benchmark-json={target}")
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    kept = tmp_path / f"run.journal.{first_id}.jsonl"
    assert f"previous journal kept as {kept}" in second.stdout + second.stderr
    assert read_journal(kept) and read_journal(tmp_path / "run.journal.jsonl")
    assert len(list(tmp_path.glob("run.*.json"))) == 1  # the first run's JSON, kept
    assert not list(tmp_path.glob("*.lock"))


def test_benchmark_json_given_as_an_open_file_by_older_pytest_benchmark_is_read_as_its_path(tmp_path):
    from types import SimpleNamespace

    from detbench.bench.plugin.plugin import benchmark_json_path

    target = tmp_path / "run.json"
    with open(target, "wb") as handle:  # pytest-benchmark < 5 hands argparse.FileType("wb") objects
        assert benchmark_json_path(SimpleNamespace(option=SimpleNamespace(benchmark_json=handle))) == str(target)
    assert benchmark_json_path(SimpleNamespace(option=SimpleNamespace(benchmark_json=str(target)))) == str(target)
    assert benchmark_json_path(SimpleNamespace(option=SimpleNamespace(benchmark_json=target))) == str(target)
    assert benchmark_json_path(SimpleNamespace(option=SimpleNamespace())) is None


def test_a_journal_named_as_the_json_is_refused_naming_the_default(tmp_path):
    """``--detbench-journal`` equal to ``--benchmark-json`` used to be refused as "another detbench run (this very
    process) is writing it"; now one line says both options name one file, and nothing is created."""
    target = tmp_path / "x.json"
    with pytest.raises(JournalError) as refused:
        Journal.claim(target, target)
    message = str(refused.value)
    assert "both name" in message and str(tmp_path / "x.journal.jsonl") in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


class _FullDisk:
    """A file on a full disk: it opens (a new file takes an inode, not a block), every write fails with ENOSPC."""

    def __init__(self, handle):
        self._handle = handle

    def write(self, text):
        raise OSError(28, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._handle, name)


@pytest.mark.parametrize("full", ["lock", "journal"])
def test_a_full_disk_at_start_is_one_line_and_leaves_no_lock_or_empty_journal(tmp_path, monkeypatch, full):
    """It used to be a 45-line INTERNALERROR with a 0-byte ``.lock`` left behind."""
    import builtins

    from detbench.bench.core import journal as journal_module

    def full_open(path, mode="r", *args, **kwargs):
        handle = builtins.open(path, mode, *args, **kwargs)  # noqa: SIM115 - the journal closes it
        return _FullDisk(handle) if str(path).endswith(".lock" if full == "lock" else ".jsonl") else handle

    monkeypatch.setattr(journal_module, "open", full_open, raising=False)
    with pytest.raises(JournalError) as error:
        Journal.claim(tmp_path / "run.json", None)
    message = str(error.value)
    assert "No space left on device" in message and "\n" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no lock, no empty journal
