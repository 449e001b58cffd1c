"""The journal: durable per cell, one run per file."""

from bench.journal import Journal, read_journal
from bench.schema import Cell, CellResult


def test_a_new_run_replaces_the_previous_journal(tmp_path):
    path = tmp_path / "run.journal.jsonl"
    with Journal(path) as first:
        first.append(CellResult(Cell("resnet50"), status="skipped", reason="first run"))
        first.append(CellResult(Cell("resnet50", batch_size=2), status="skipped", reason="first run"))
    with Journal(path) as second:
        second.append(CellResult(Cell("resnet50", batch_size=4), status="skipped", reason="second run"))
    assert [r.reason for r in read_journal(path)] == ["second run"]


def test_each_append_is_on_disk_before_close(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.append(CellResult(Cell("resnet50"), status="oom", reason="CUDA out of memory"))
    assert [r.status for r in read_journal(path)] == ["oom"]
    journal.close()
