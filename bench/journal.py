"""The run journal: one CellResult per JSON line, flushed and fsynced as each cell finishes, so a crash of
the whole pytest process keeps every finished cell. Read it back with :func:`read_journal`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TextIO

from bench.schema import CellResult


def default_journal_path(benchmark_json: str | None, now: float | None = None) -> Path:
    """Next to ``--benchmark-json`` (``X.json`` -> ``X.journal.jsonl``), else ``.detbench/journal-<UTC time>.jsonl``."""
    if benchmark_json:
        target = Path(benchmark_json)
        return target.with_name(target.stem + ".journal.jsonl")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return Path(".detbench") / f"journal-{stamp}.jsonl"


class Journal:
    """Append-only JSONL writer; every :meth:`append` is durable when it returns."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._handle: TextIO | None = None  # opened on the first append: a run that measures nothing writes nothing

    def append(self, result: CellResult) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # "w": a journal holds one run; re-running with the same --benchmark-json must not mix two runs
            self._handle = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._handle.write(json.dumps(result.to_dict(), separators=(",", ":")) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_journal(path: str | os.PathLike[str]) -> list[CellResult]:
    """Every complete line of a journal as a CellResult (a torn last line from a crash is ignored)."""
    results = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # the write the crash interrupted
            raise
        results.append(CellResult.from_dict(data, source=f"{path}:{number}"))
    return results
