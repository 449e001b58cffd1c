"""The one progress protocol between a measuring process and whoever launched it: JSON events, one per line.

A process worker and torchrun's rank 0 append events to a file; a long-lived A/B side writes them to stdout
(so it runs unchanged through ``docker run -i``) and reads its commands from stdin. Every event line starts
with :data:`PREFIX`, so output a library prints on the same stream is never mistaken for one. Events:

- ``hello``: a process is up (``protocol``, ``pid``, ``torch``; a side adds its environment);
- ``phase``: ``cell`` (an id or null) entered ``phase`` (``set-up``, ``warm-up``, ``round N``, ``done``);
- ``result``: a cell's result so far (``final`` false after each block, true at the end of the group);
- ``ready`` / ``block`` / ``error`` / ``ok``: a side's answers to the coordinator's commands
(detbench.bench.runtime.side).

:class:`GroupProgress` folds a stream into what a launcher needs: the latest result per cell, the cell being
worked on and its phase, so a worker that dies or hangs loses nothing it had measured.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from detbench.bench.core.schema import CellResult, SchemaError

PROTOCOL_VERSION = 2  # 2: the side's probe and thresholds commands, its fixed warm-up
PREFIX = "@detbench "


class ProtocolError(RuntimeError):
    """A peer broke the protocol (unreadable event, wrong version, missing answer); one line."""


def encode(kind: str, **fields: Any) -> str:
    """One event line (without the newline)."""
    return PREFIX + json.dumps({"event": kind, **fields}, separators=(",", ":"), allow_nan=False)


def decode(line: str) -> dict[str, Any] | None:
    """The event on ``line``, or None for any other output (a torn last line included)."""
    if not line.startswith(PREFIX):
        return None
    try:
        event = json.loads(line[len(PREFIX):])
    except ValueError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("event"), str) else None


class EventLog:
    """Where a measuring process writes its events: a file (appended, flushed per event, fsynced if asked) or a
    text stream (a side's stdout). ``EventLog(None)`` drops them (an inline run that needs no record).
    ``listener`` is called with each event once written (an inline launcher journals progress through it)."""

    def __init__(self, target: str | os.PathLike[str] | TextIO | None, *, fsync: bool = False,
                 listener: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._path: Path | None = None
        self._stream: TextIO | None = None
        if isinstance(target, (str, os.PathLike)):
            self._path = Path(target)
        elif target is not None:
            self._stream = target
        self._fsync = fsync
        self._listener = listener

    def emit(self, kind: str, **fields: Any) -> None:
        line = encode(kind, **fields) + "\n"
        if self._path is not None:
            with open(self._path, "a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                if self._fsync:
                    os.fsync(handle.fileno())
        elif self._stream is not None:
            self._stream.write(line)
            self._stream.flush()
        if self._listener is not None:
            self._listener({"event": kind, **fields})

    def phase(self, cell_id: str | None, phase: str) -> None:
        self.emit("phase", cell=cell_id, phase=phase)

    def result(self, result: CellResult, *, final: bool) -> None:
        self.emit("result", result=result.to_dict(), final=final)


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every whole event in a file (none when it is missing); a line cut short by a kill ends the list."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return parse_events(text.splitlines())


def parse_events(lines: Iterable[str]) -> list[dict[str, Any]]:
    return [event for event in map(decode, lines) if event is not None]


class EventTail:
    """Follows a growing events file: :meth:`poll` hands each whole new event to ``listener`` once and returns
    the file's size (a supervisor's heartbeat), so a launcher forwards progress while its worker runs.

    The file is created and opened at once and read through that handle: a signal's clean-up may remove the
    folder it lives in (detbench.envcheck.isolate) before the last :meth:`poll`, which still reads every event
    written."""

    def __init__(self, path: str | os.PathLike[str], listener: Callable[[dict[str, Any]], None] | None) -> None:
        self.listener = listener
        Path(path).touch()
        self._handle: BinaryIO | None = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._offset = 0

    def poll(self) -> int:
        if self._handle is None:
            return -1
        self._handle.seek(self._offset)
        chunk = self._handle.read()
        size = self._offset + len(chunk)
        for line in chunk.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # still being written: the next poll takes it
            event = decode(line.decode("utf-8", errors="replace").rstrip("\n"))
            if event is not None and self.listener is not None:
                self.listener(event)
            self._offset += len(line)  # after the listener: a poll it was interrupted in is taken up again
        return size

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


@dataclass
class GroupProgress:
    """What a group's measuring process has done so far, folded from its events."""

    results: dict[str, CellResult] = field(default_factory=dict)  # cell id -> latest result (partial or final)
    final: set[str] = field(default_factory=set)  # cells whose result is final
    running: str | None = None  # cell being worked on when the stream ended
    phase: str | None = None
    done: bool = False
    unreadable: list[str] = field(default_factory=list)  # results that failed the schema, with the reason

    @classmethod
    def from_events(cls, events: Iterable[dict[str, Any]]) -> GroupProgress:
        progress = cls()
        for event in events:
            kind = event["event"]
            if kind == "phase":
                progress.running, progress.phase = event.get("cell"), event.get("phase")
                progress.done = progress.phase == "done"
            elif kind == "result":
                try:
                    result = CellResult.from_dict(event["result"], source="worker event")
                except (SchemaError, KeyError, TypeError) as exc:
                    progress.unreadable.append(str(exc))
                    continue
                progress.results[result.cell.id] = result
                if event.get("final"):
                    progress.final.add(result.cell.id)
        return progress

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> GroupProgress:
        return cls.from_events(read_events(path))
