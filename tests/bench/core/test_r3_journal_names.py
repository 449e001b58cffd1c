"""Runs started in the same second in one folder without ``--benchmark-json`` each get a journal of their own
(issue 24): the default name carries the run id, and the file is created exclusively."""

from __future__ import annotations

import time

from detbench.bench.core import journal as journal_module
from detbench.bench.core.journal import Journal, read_run_header


def test_two_runs_started_in_the_same_second_get_two_journals(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frozen = time.gmtime(1_800_000_000)
    monkeypatch.setattr(journal_module.time, "gmtime", lambda *_: frozen)
    with Journal.claim(None) as first, Journal.claim(None) as second:
        assert first.path != second.path and first.path.parent == second.path.parent
        assert first.path.resolve().parent == tmp_path / ".detbench"
        assert first.path.name == f"journal-{first.run_id}.jsonl"
        assert read_run_header(second.path)["run_id"] == second.run_id


def test_a_name_already_taken_is_not_reused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frozen = time.gmtime(1_800_000_000)
    monkeypatch.setattr(journal_module.time, "gmtime", lambda *_: frozen)
    tokens = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(journal_module.secrets, "token_hex", lambda _n: next(tokens))
    with Journal.claim(None) as first:
        first.close()  # finished: its journal stays, and is not overwritten by the next run
        with Journal.claim(None) as second:
            assert first.path.exists() and second.path.name.endswith("-bbbbbb.jsonl")
