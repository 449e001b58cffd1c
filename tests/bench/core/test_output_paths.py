"""Output files through links and special paths: a link is written through (never replaced), ``/dev/stdout`` and
``/dev/fd/N`` are written through the descriptor (a redirected log keeps what it held), and no journal or
temporary file is created beside a special file."""

from __future__ import annotations

import os
from pathlib import Path

from detbench.bench.core.journal import default_journal_path
from detbench.bench.core.record import is_special_path, write_file_atomically


def test_a_link_is_written_through_and_stays_a_link(tmp_path: Path) -> None:
    real = tmp_path / "results" / "run.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "latest.json"
    link.symlink_to(real)
    write_file_atomically(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new"
    assert sorted(p.name for p in real.parent.iterdir()) == ["run.json"]  # no temporary file left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "results"]


def test_a_dangling_link_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "out.json"
    link.symlink_to(tmp_path / "made.json")
    write_file_atomically(link, "{}")
    assert link.is_symlink() and (tmp_path / "made.json").read_text() == "{}"


def test_a_redirected_descriptor_gets_the_text_where_the_output_stands(tmp_path: Path) -> None:
    """As ``--benchmark-json=/dev/stdout`` with stdout redirected to a log: what the log held stays, the JSON
    follows it, and what the process writes next follows the JSON (the log is neither truncated nor replaced)."""
    log = tmp_path / "ci.log"
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(descriptor, b"before\n")
        write_file_atomically(f"/dev/fd/{descriptor}", '{"benchmarks": []}\n')
        os.write(descriptor, b"after\n")
    finally:
        os.close(descriptor)
    assert log.read_text() == 'before\n{"benchmarks": []}\nafter\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ci.log"]


def test_a_pipe_descriptor_is_written_in_place() -> None:
    read_end, write_end = os.pipe()
    try:
        write_file_atomically(f"/proc/self/fd/{write_end}", "through the pipe")
        os.close(write_end)
        assert os.read(read_end, 100) == b"through the pipe"
    finally:
        os.close(read_end)


def test_special_paths(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link_to_fifo = tmp_path / "link"
    link_to_fifo.symlink_to(fifo)
    for special in ("/dev/stdout", "/dev/full", "/dev/null", "/proc/self/fd/1", fifo, link_to_fifo):
        assert is_special_path(special), special
    for plain in (tmp_path / "run.json", tmp_path / "missing" / "run.json", tmp_path):
        assert not is_special_path(plain), plain


def test_no_journal_beside_a_special_file(tmp_path: Path) -> None:
    for special in ("/dev/stdout", "/dev/full", "/dev/fd/1"):
        journal = default_journal_path(special, "20261205T120000Z-abcdef")
        assert journal == Path(".detbench") / "journal-20261205T120000Z-abcdef.jsonl", special
    assert default_journal_path(str(tmp_path / "run.json")) == tmp_path / "run.journal.jsonl"
