"""The run journal: one CellResult per JSON line, flushed and fsynced as each cell finishes, so a crash of
the whole pytest process keeps every finished cell. Read it back with :func:`read_journal`.

A run claims its journal (and its ``--benchmark-json``) before any cell runs, with :meth:`Journal.claim`:
the folders must be writable, a second writer is refused (an ``fcntl`` lock beside each file), and the
previous run's journal and JSON are kept under their run ids, never overwritten. The first line of a
journal is a run header (``{"schema": "detbench.run", "run_id": ...}``); the same id goes into the JSON.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from detbench.bench.core.options import RunOptions
from detbench.bench.core.record import RUN_SCHEMA, cell_payload, is_special_path, journal_results
from detbench.bench.core.schema import CellResult

_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # a run id that can go into a file name as it is

# The fingerprint fields (detbench.envcheck.fingerprint) that name the machine and its software: a resumed run must
# match them. Host noise (host name, kernel build, CUDA_VISIBLE_DEVICES, GPU UUIDs) may differ.
RESUME_ENVIRONMENT_KEYS = ("gpu", "cpu", "cpu_count", "driver", "driver_cuda", "torch", "torchvision", "cuda", "cudnn",
                           "nccl", "python", "image")
# RunOptions fields that change no figure, so a resume may set them anew: every other option must match.
RESUME_FREE_OPTIONS = frozenset({"cell_timeout_s", "model_modules"})
# RunOptions fields that set the rounds policy: compared as the policy they give (see _rounds_differences)
ROUNDS_OPTIONS = frozenset({"rounds", "rounds_count", "block_s"})


class JournalError(ValueError):
    """The results cannot be claimed (unwritable, or another run writes them); the message is one line."""


def default_journal_path(benchmark_json: str | None, run_id: str | None = None) -> Path:
    """Next to ``--benchmark-json`` (``X.json`` -> ``X.journal.jsonl``) where that is a file's path, else
    ``.detbench/journal-<run id>.jsonl``
    (the run id: UTC time and 6 random hex digits, so runs started in the same second differ)."""
    if benchmark_json and not is_special_path(benchmark_json):  # no journal beside /dev/stdout or /dev/full
        target = Path(benchmark_json)
        return target.with_name(target.stem + ".journal.jsonl")
    return Path(".detbench") / f"journal-{run_id or new_run_id()}.jsonl"


def new_run_id(now: float | None = None) -> str:
    """``<UTC time>-<6 hex>``: sorts by start time, unique across machines sharing a folder."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}-{secrets.token_hex(3)}"


class Journal:
    """Append-only JSONL writer for one run; every :meth:`append` is durable when it returns.

    ``Journal(path)`` opens (locks, keeps the previous file, writes the header) on the first append;
    :meth:`Journal.claim` does it at once, after checking that the results can be written.
    """

    def __init__(self, path: str | os.PathLike[str], run_id: str | None = None,
                 benchmark_json: str | os.PathLike[str] | None = None, *, options: dict[str, Any] | None = None,
                 environment: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.run_id = run_id or new_run_id()
        self.benchmark_json = Path(benchmark_json) if benchmark_json else None
        self.options, self.environment = options, environment  # the run's, once, in the header
        self._handle: TextIO | None = None
        self._locks: list[tuple[Path, TextIO]] = []

    @classmethod
    def claim(cls, benchmark_json: str | os.PathLike[str] | None,
              journal_path: str | os.PathLike[str] | None = None, *, options: dict[str, Any] | None = None,
              environment: dict[str, Any] | None = None) -> Journal:
        """Check, lock and open the run's results before any cell runs; :class:`JournalError` if they can't be.

        ``journal_path`` None: next to ``benchmark_json`` (see :func:`default_journal_path`).
        """
        json_path = Path(benchmark_json) if benchmark_json else None
        run_id = None
        if journal_path is None and json_path is None:
            path, run_id = _reserve_default_journal()
        else:
            path = Path(journal_path) if journal_path else default_journal_path(str(json_path) if json_path else None)
        if json_path is not None and os.path.realpath(path) == os.path.realpath(json_path):
            raise JournalError(f"--detbench-journal and --benchmark-json both name {json_path}; the journal and the "
                               f"JSON are two files (leave --detbench-journal out: it goes beside the JSON, as "
                               f"{default_journal_path(str(json_path))})")
        if json_path is not None:
            _check_writable(json_path, "--benchmark-json")
        _check_writable(path, "journal")
        journal = cls(path, run_id, benchmark_json=json_path, options=options, environment=environment)
        journal._open()
        return journal

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            for target in ([self.benchmark_json] if self.benchmark_json else []) + [self.path]:
                self._locks.append((target, _lock(target)))
            for note in _keep_previous(self.path, self.benchmark_json):
                print(f"detbench: {note}", file=sys.stderr, flush=True)
            self._handle = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
            header = {"schema": RUN_SCHEMA, "run_id": self.run_id,
                      "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "benchmark_json": str(self.benchmark_json) if self.benchmark_json else None,
                      "host": socket.gethostname(), "pid": os.getpid(), "options": self.options,
                      "environment": self.environment}
            self._write(header)
        except OSError as exc:  # a full disk at start: one line, and no empty journal or lock left behind
            self._abandon()
            raise JournalError(f"cannot write the journal {self.path} ({exc.strerror or exc})") from None
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        """Undo a failed open: the journal this run created (empty or a partial header) and every lock go."""
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
            self._handle = None
            self.path.unlink(missing_ok=True)
        self._release()

    def append(self, result: CellResult) -> None:
        if self._handle is None:
            self._open()
        self._write(cell_payload(result, self.options, self.environment))

    def _write(self, record: dict[str, Any]) -> None:
        assert self._handle is not None
        self._handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self._release()

    def _release(self) -> None:
        for target, handle in reversed(self._locks):
            # unlink while still holding the lock: a waiting claimant re-checks the inode (see _lock)
            with_lock_name(target).unlink(missing_ok=True)
            handle.close()
        self._locks = []

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reserve_default_journal(attempts: int = 100) -> tuple[Path, str]:
    """A new ``.detbench/journal-<run id>.jsonl``, created exclusively (two runs started in the same second in one
    folder never share it); returns it and its run id."""
    folder = default_journal_path(None, "x").parent
    _check_writable(folder / "journal.jsonl", "journal")
    for _ in range(attempts):
        run_id = new_run_id()
        path = default_journal_path(None, run_id)
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            continue
        return path, run_id
    raise JournalError(f"cannot find a free journal name in {folder}; give one with --detbench-journal")


def with_lock_name(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _check_writable(target: Path, what: str) -> None:
    """One-line JournalError unless ``target``'s folder exists (or can be made) and takes a new file."""
    if target.is_dir():
        raise JournalError(f"{what} {target} is a directory; give a file path, e.g. {target / 'results.json'}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JournalError(f"cannot create the folder of {what} {target} ({exc.strerror or exc})") from None
    try:
        with tempfile.TemporaryFile(dir=target.parent):
            pass
    except OSError as exc:
        raise JournalError(f"cannot write {what} {target}: folder {target.parent} is not writable "
                           f"({exc.strerror or exc})") from None


def writer_of(target: Path) -> str | None:
    """Who holds ``target``'s lock (``"pid N on HOST"``) while a live run writes it, else None; takes no lock."""
    try:
        handle = open(with_lock_name(target), encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError:
        return None  # no lock file: nobody writes it
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "another process"
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return None


def _lock(target: Path) -> TextIO:
    """An exclusive, non-blocking ``flock`` on ``<target>.lock`` holding our pid; JournalError when held."""
    lock_path = with_lock_name(target)
    while True:
        handle = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held until Journal.close
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip()
            handle.close()
            raise JournalError(f"another detbench run{f' ({owner})' if owner else ''} is writing {target}; "
                               "wait for it to finish, or give another --benchmark-json") from None
        try:  # the holder we waited on may have removed the file between our open and flock
            current = os.stat(lock_path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(handle.fileno()).st_ino:
            break
        handle.close()
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
    except OSError as exc:  # a full disk: the lock file this call made goes, with one line saying why
        lock_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            handle.close()
        raise JournalError(f"cannot write {lock_path} ({exc.strerror or exc})") from None
    return handle


def _keep_previous(journal: Path, benchmark_json: Path | None) -> list[str]:
    """Rename the previous run's journal and JSON to ``<name>.<their run id>.<ext>``; one note per file kept.

    Each file is named by its own run id, so a stale JSON left by a run killed before writing it is not
    mistaken for the killed run's journal's partner."""
    notes = []
    if journal.exists() and _holds_cells(journal):
        header = read_run_header(journal) or {}
        kept = _rename_aside(journal, header.get("run_id"))
        notes.append(f"previous journal kept as {kept}")
    if benchmark_json is not None and benchmark_json.is_file() and benchmark_json.stat().st_size:
        kept = _rename_aside(benchmark_json, _json_run_id(benchmark_json))
        notes.append(f"previous --benchmark-json kept as {kept}")
    return notes


def _holds_cells(path: Path) -> bool:
    """Anything besides a run header (a run that measured nothing leaves nothing worth keeping)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip() and not _is_run_header(line):
                return True
    return False


def _is_run_header(line: str) -> bool:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return False
    return isinstance(record, dict) and record.get("schema") == RUN_SCHEMA


def _json_run_id(path: Path) -> str | None:
    try:
        block = json.loads(path.read_text(encoding="utf-8")).get("detbench")
    except (OSError, ValueError, AttributeError):
        return None
    return block.get("run_id") if isinstance(block, dict) else None


def _rename_aside(path: Path, run_id: object) -> Path:
    """``X.journal.jsonl`` -> ``X.journal.<id>.jsonl``; the file's modification time when it has no usable id."""
    tag = str(run_id) if isinstance(run_id, str) and _SAFE_ID.match(run_id) else \
        time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(path.stat().st_mtime))
    stem, suffix = (path.stem, path.suffix) if path.suffix else (path.name, "")
    target, n = path.with_name(f"{stem}.{tag}{suffix}"), 2
    while target.exists():
        target, n = path.with_name(f"{stem}.{tag}-{n}{suffix}"), n + 1
    os.replace(path, target)
    return target


def read_run_header(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The journal's run header (``run_id``, ``started_utc``, ``benchmark_json``, ...), None for an older journal."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                return json.loads(line) if _is_run_header(line) else None
    return None


def check_resume(path: str | os.PathLike[str], results: list[CellResult], options: dict[str, Any],
                 environment: dict[str, Any]) -> None:
    """JournalError, one line naming what differs, unless every result of the journal ``path`` was measured on this
    machine and software (:data:`RESUME_ENVIRONMENT_KEYS`) with this run's measurement options (all but
    :data:`RESUME_FREE_OPTIONS`; the cells chosen may differ, since a resume continues a run)."""
    for result in results:
        stored_options = result.config.get("options") if isinstance(result.config, dict) else None
        if not isinstance(result.environment, dict) or not isinstance(stored_options, dict):
            raise JournalError(f"--detbench-resume {path}: cell {result.cell.id} holds no environment fingerprint or "
                               "options, so it cannot be checked against this run; start a new run")
        differences = _differences(result.environment, environment, RESUME_ENVIRONMENT_KEYS)
        keys = sorted((set(stored_options) | set(options)) - RESUME_FREE_OPTIONS - ROUNDS_OPTIONS)
        differences += _differences(stored_options, options, keys)
        differences += _rounds_differences(result, stored_options, options)
        if differences:
            raise JournalError(f"--detbench-resume {path} was measured otherwise ({'; '.join(differences)}); resume "
                               "only a journal of this machine, software and measurement options (the cells chosen "
                               "may differ), or start a new run")


def _rounds_differences(result: CellResult, stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The rounds policy in effect for the result's device kind, compared as a policy: ``--rounds 3`` given where
    3 is that device's default measures as leaving it out does (the options alone would differ)."""
    config = result.config if isinstance(result.config, dict) else {}
    policy, device_type = config.get("rounds_policy"), config.get("device_type")
    if not isinstance(policy, dict) or not isinstance(device_type, str):  # an older journal: the options as given
        return _differences(stored, current, sorted(ROUNDS_OPTIONS))
    try:
        now = RunOptions.from_dict(current).rounds_policy(device_type).to_dict()
    except (TypeError, ValueError):
        return _differences(stored, current, sorted(ROUNDS_OPTIONS))
    return _differences({"rounds policy": policy}, {"rounds policy": now}, ["rounds policy"])


def _differences(stored: dict[str, Any], current: dict[str, Any], keys: Any) -> list[str]:
    """``"<key>: journal <value>, this run <value>"`` for each of ``keys`` whose JSON values differ."""
    out = []
    for key in keys:
        old, new = (json.dumps(d.get(key), sort_keys=True, default=str) for d in (stored, current))
        if old != new:
            out.append(f"{key}: journal {old}, this run {new}")
    return out


def read_journal(path: str | os.PathLike[str]) -> list[CellResult]:
    """Every complete line of a journal as a whole CellResult (see
    :func:`detbench.bench.core.record.journal_results`)."""
    return journal_results(Path(path).read_text(encoding="utf-8").splitlines(), str(path))
