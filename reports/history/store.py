"""The history store: every run's cells in one SQLite file (stdlib ``sqlite3``), queryable with plain SQL.

Why SQLite: it ships with Python (no new dependency on any torch line or image), and it serialises concurrent
writers itself: the store runs in WAL mode with a busy timeout, and every write is one ``BEGIN IMMEDIATE``
transaction, so two ``detbench-history add`` at once both land, one after the other, and a failure adds nothing.
docs/history.md has the schema and example queries.

A run is known by its measurements, not by its file: each cell result is hashed (``result_sha256``), and a file whose
cells match cells already stored belongs to that run (a run's pytest-benchmark JSON and its journal are one run; a
resumed run's journal adds its new cells to it). A file already added (same bytes) changes nothing.

Every way a store can be unusable is a :class:`StoreError` with a one-line message naming the file: not an SQLite
file, truncated, another program's database, written by a newer detbench. A store written by an older detbench is
migrated (:data:`MIGRATIONS`, one transaction) when opened for writing; nothing is written to a store that fails
these checks.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import math
import os
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from detbench.bench.core.journal import read_run_header
from detbench.reports.compare import INVALID, implausible_figures
from detbench.reports.history import derive, method
from detbench.reports.load import Run, redact_environment

SCHEMA_VERSION = 3  # the history store's own schema (not the cell result schema)
APPLICATION_ID = 0x64627368  # "dbsh": PRAGMA application_id of a detbench history store
BUSY_TIMEOUT_S = 60.0
SQLITE_MAGIC = b"SQLite format 3\x00"

# The environment fingerprint kept as columns of ``runs``; ENV_KEY ones define "the same environment" (host name
# and host canary are left out: leases of one machine kind are what the band is to cover).
FINGERPRINT = ("gpu", "gpu_count", "driver", "torch", "torchvision", "cuda", "cudnn", "nccl", "image", "hostname",
               "cpu", "python")
ENV_KEY = ("machine", "driver", "torch", "torchvision", "cuda", "cudnn", "image", "method_key")

SCHEMA = """
CREATE TABLE detbench_schema (
    version INTEGER NOT NULL,       -- the history store's schema version (history.store.SCHEMA_VERSION)
    written_by TEXT NOT NULL,       -- detbench version that created or last migrated the store
    updated_at TEXT NOT NULL
);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,        -- hash of the cell results first added for the run
    seq INTEGER NOT NULL UNIQUE,    -- order in which runs were added
    label TEXT NOT NULL,            -- the first file's name without extension
    kind TEXT NOT NULL,             -- pytest-benchmark, journal or interleaved
    started_at TEXT,                -- pytest-benchmark's datetime, else the journal header's started_utc (UTC)
    added_at TEXT NOT NULL,         -- UTC
    run_at TEXT NOT NULL,           -- started_at, else the file's modification time, else added_at: the time axis
    run_at_source TEXT NOT NULL,    -- where run_at came from: started, file modified, added
    machine TEXT NOT NULL,          -- the GPU name (else 'CPU <cpu>', else 'unknown'): one trend line each
    gpu TEXT, gpu_count INTEGER, driver TEXT, torch TEXT, torchvision TEXT, cuda TEXT, cudnn TEXT, nccl TEXT,
    image TEXT, hostname TEXT, cpu TEXT, python TEXT,
    host_canary_ms REAL,            -- median over all blocks of the run (higher: a slower host)
    method TEXT NOT NULL,           -- the options that change a measurement and the detbench version, JSON
    method_key TEXT NOT NULL,       -- hash of method
    detbench_version TEXT,
    env_key TEXT NOT NULL,          -- hash of machine, driver, torch, torchvision, cuda, cudnn, image, method_key
    environment TEXT NOT NULL,      -- the whole fingerprint, JSON
    detbench_run_id TEXT            -- the run id its files carry (a JSON and its own journal share it)
);
CREATE TABLE sources (
    sha256 TEXT PRIMARY KEY,        -- the file's bytes: adding the same file again changes nothing
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    path TEXT NOT NULL,
    cells INTEGER NOT NULL,
    added_at TEXT NOT NULL
);
CREATE TABLE cells (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    cell_id TEXT NOT NULL,
    model TEXT NOT NULL, mode TEXT NOT NULL, compile TEXT NOT NULL, precision TEXT NOT NULL,
    batch_size TEXT NOT NULL,       -- as the cell names it: an integer, or 'max'
    measured_batch_size INTEGER, gpus INTEGER NOT NULL, image_size TEXT, memory_format TEXT NOT NULL,
    variant TEXT NOT NULL,
    status TEXT NOT NULL, reason TEXT,
    throughput_ips REAL, latency_median_ms REAL, latency_p90_ms REAL, latency_p99_ms REAL,
    blocks INTEGER, repeats INTEGER,
    block_spread REAL,              -- IQR / median of the block throughputs (within-run noise)
    host_canary_ms REAL,            -- median over this cell's blocks
    gpu_util_pct REAL, peak_memory_bytes INTEGER,
    postprocess_policy TEXT,        -- the cell's post-processing policy (part of its method)
    method_key TEXT NOT NULL,       -- hash of the run's method and postprocess_policy: one series per method
    result_sha256 TEXT NOT NULL UNIQUE,
    result TEXT NOT NULL,           -- the cell result, JSON, without per-iteration times and telemetry series
    PRIMARY KEY (run_id, cell_id)
);
CREATE INDEX cells_by_cell ON cells(cell_id, run_id);
CREATE INDEX runs_by_time ON runs(run_at, seq);
-- covering indexes for one cell's series (an add reads 2 per cell it touches): the rows hold kB of JSON each
CREATE INDEX cells_series ON cells(cell_id, run_id, status, throughput_ips, method_key);
CREATE INDEX runs_series ON runs(run_id, env_key, machine, run_at, seq);
CREATE TABLE bands (                -- derived, refreshed for the cells an add touches: band per environment
    env_key TEXT NOT NULL, cell_id TEXT NOT NULL,
    runs INTEGER NOT NULL,          -- ok runs the band stands on (below 3: weak)
    segment_runs INTEGER NOT NULL,  -- runs since the last step
    level_ips REAL NOT NULL, sd_log REAL, low_ips REAL, high_ips REAL,
    band REAL,                      -- high_ips / level_ips - 1
    PRIMARY KEY (env_key, cell_id)
);
CREATE TABLE steps (                -- derived, refreshed for the cells an add touches
    machine TEXT NOT NULL, cell_id TEXT NOT NULL,
    run_id TEXT NOT NULL,           -- the first run of the new level
    cause TEXT NOT NULL,            -- 'level' (found in one method's series) or 'method changed' (a new series)
    before_ips REAL NOT NULL, after_ips REAL NOT NULL,
    change REAL NOT NULL,           -- level: the Hodges-Lehmann estimate; method changed: after / before - 1
    change_low REAL, change_high REAL,  -- its 95 % interval (level steps)
    p_value REAL,                   -- Mann-Whitney, adjusted for the splits tried (level steps)
    runs_before INTEGER NOT NULL, runs_after INTEGER NOT NULL,
    PRIMARY KEY (machine, cell_id, run_id)
);
CREATE TABLE drifts (               -- derived: a level that moves run by run
    machine TEXT NOT NULL, cell_id TEXT NOT NULL,
    first_run_id TEXT NOT NULL, last_run_id TEXT NOT NULL, runs INTEGER NOT NULL,
    rate REAL NOT NULL,             -- per run (Theil-Sen), with its 95 % interval
    rate_low REAL NOT NULL, rate_high REAL NOT NULL,
    change REAL NOT NULL,           -- over the whole stretch
    p_value REAL NOT NULL,          -- Kendall's tau against the run order
    PRIMARY KEY (machine, cell_id, first_run_id)
);
CREATE VIEW cell_series AS
    SELECT r.run_at, r.seq, r.run_id, r.label, r.machine, r.env_key, r.gpu, r.driver, r.torch, r.cuda, r.cudnn,
           r.image, r.host_canary_ms AS run_host_canary_ms, c.cell_id, c.model, c.mode, c.variant, c.batch_size,
           c.gpus, c.status, c.throughput_ips, c.latency_median_ms, c.latency_p99_ms, c.blocks, c.block_spread,
           c.method_key, c.postprocess_policy
    FROM cells c JOIN runs r USING (run_id);
"""
TABLES = ("detbench_schema", "runs", "sources", "cells", "bands", "steps", "drifts")



class StoreError(Exception):
    """The store cannot be used; the message is one line naming the file."""


# columns the store writes itself (hashes, times, names from the cell's id, detbench's own words): no secret to hide
NOT_REDACTED = frozenset({"run_id", "result_sha256", "sha256", "run_at", "started_at", "added_at", "updated_at",
                          "env_key", "method_key", "first_run_id", "last_run_id", "cell_id", "model", "mode",
                          "compile", "precision", "batch_size", "memory_format", "variant", "status", "cause",
                          "kind", "run_at_source"})
DATABASE_ERRORS = (sqlite3.Error, pd.errors.DatabaseError)  # what reading or writing a damaged file raises


def damaged(path: Path, exc: Exception) -> StoreError:
    """The one line for damage SQLite found while reading or writing (pandas quotes the whole query: cut)."""
    reason = str(exc).rsplit("': ", 1)[-1] if str(exc).startswith("Execution failed on sql") else str(exc)
    return StoreError(f"{path}: not a usable history store ({reason}); restore it from a copy")


@dataclass
class AddOutcome:
    """What adding one file did."""

    path: str
    run_id: str
    label: str
    new_run: bool
    cells_added: int
    cells_known: int  # cells already stored for this run (same measurement)
    conflicts: list[str] = field(default_factory=list)  # cell ids stored for the run with another measurement
    already: bool = False  # the same file (bytes) was added before
    undated: bool = False  # no start time in the file (a journal from before its header): placed when added
    dated: bool = False  # this file gave a run added before it its start time

    def describe(self) -> str:
        name = Path(self.path).name
        if self.already:
            return f"{name}: already in the store (run {self.run_id[:12]} {self.label}); nothing added"
        if self.new_run:
            text = f"{name}: added run {self.run_id[:12]} ({self.label}), {self.cells_added} cells"
        elif self.cells_added:
            text = (f"{name}: same run as {self.run_id[:12]} ({self.label}); {self.cells_added} new cells added, "
                    f"{self.cells_known} already stored")
        else:
            text = f"{name}: same run as {self.run_id[:12]} ({self.label}); its {self.cells_known} cells are stored"
        if self.conflicts:
            text += f"; {len(self.conflicts)} cells kept as first stored (measured differently here)"
        if self.undated:
            text += "; no start time in the file, placed at the time added (--started sets it)"
        if self.dated:
            text += "; the run's start time taken from this file"
        return text


# --- opening --------------------------------------------------------------------------------------------


def _utc_now(ahead: _dt.timedelta = _dt.timedelta(0)) -> str:
    return (_dt.datetime.now(_dt.timezone.utc) + ahead).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# how far ahead of this machine's clock a run's start may be (another machine's clock, time zones written wrong)
FUTURE_TOLERANCE = _dt.timedelta(days=1)


def _detbench_version() -> str:
    from importlib import metadata  # noqa: PLC0415  (only needed when a store is created or migrated)

    try:
        return metadata.version("detbench")
    except metadata.PackageNotFoundError:
        return "unknown"


def check_file(path: Path) -> None:
    """Refuse, before SQLite touches it, a file that is not an SQLite database or is shorter than its header says.

    A checkpoint by another process may write the first page (with the new length) a moment before the pages that
    extend the file: a short file is looked at again for up to a second before it is called truncated."""
    deadline = time.monotonic() + 1.0
    while True:
        problem = _file_problem(path)
        if problem is None:
            return
        if not problem.startswith("truncated") or time.monotonic() > deadline:
            raise StoreError(f"{path}: {problem}")
        time.sleep(0.1)


def _file_problem(path: Path) -> str | None:
    if not path.exists():
        return None  # a new store
    try:
        size = path.stat().st_size
        if size == 0:
            return None  # a new store
        with open(path, "rb") as handle:
            header = handle.read(100)
    except OSError as exc:
        return f"cannot read ({exc.strerror or exc})"
    if not header.startswith(SQLITE_MAGIC):
        return "not a detbench history store (not an SQLite database)"
    if len(header) < 100:
        return f"truncated ({size} bytes, shorter than an SQLite header); restore it from a copy"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    valid = header[92:96] == header[24:28]  # the in-header page count is valid for this change counter
    if page_size < 512 or size % page_size or (valid and pages and size < pages * page_size):
        expected = f", the header says {pages * page_size}" if valid and pages else ""
        return f"truncated or damaged ({size} bytes{expected}); restore it from a copy"
    return None


def _connect(path: Path) -> sqlite3.Connection:
    """A connection to the file at ``path``, named by a URI we build: a path that reads as a URI itself
    (``file:x.db?mode=memory``) is a file of that name, never an in-memory database or another mode.

    Read-write even for readers (they never write): SQLite falls back to read-only on a write-protected file, and
    the last connection to close removes the -wal and -shm files, which a mode=ro connection cannot. On a read-only
    file system (no -shm can be made there) the store is opened immutable: nothing can change it meanwhile."""
    uri = path.resolve().as_uri() + ("?immutable=1" if on_read_only_file_system(path) else "")
    conn = sqlite3.connect(uri, timeout=BUSY_TIMEOUT_S, isolation_level=None, uri=True)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    return conn


def on_read_only_file_system(path: Path) -> bool:
    """Whether ``path`` (an existing store) lies on a file system mounted read-only."""
    try:
        return path.exists() and bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _retry_locked(action: Callable[[], Any]) -> Any:
    """Run ``action`` until it gets its lock (the busy timeout does not cover every first-open race)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Store:
    """An open history store; use :func:`open_store` (a context manager through ``closing``)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    def close(self) -> None:
        self.conn.close()

    # --- reading ---

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """A query's rows; text through :func:`detbench.reports.load.redact_environment` (a store filled before runs
        were redacted on loading may hold a registry password in ``image`` or ``environment``)."""
        frame = pd.read_sql_query(sql, self.conn, params=list(params))
        text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c]) and c not in NOT_REDACTED]
        redact = functools.lru_cache(maxsize=None)(redact_environment)  # a run's text repeats in each of its cells
        return frame.assign(**{c: frame[c].map(redact) for c in text}) if text else frame

    def counts(self) -> dict[str, int]:
        return {t: int(self.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in TABLES}

    def runs(self) -> pd.DataFrame:
        return self.frame("SELECT * FROM runs ORDER BY run_at, seq")

    def series(self, ok_only: bool = True) -> pd.DataFrame:
        """Every cell of every run with its run's time, machine and environment, oldest first."""
        where = "WHERE c.status = 'ok' AND c.throughput_ips > 0" if ok_only else ""
        return self.frame(
            "SELECT r.run_id, r.seq, r.label, r.run_at, r.machine, r.env_key, r.torch, r.image, r.driver, r.cuda, "
            "r.cudnn, r.method, c.method_key, c.cell_id, c.model, c.mode, c.variant, c.gpus, c.status, c.reason, "
            f"c.throughput_ips, c.latency_median_ms, c.result_sha256 FROM cells c JOIN runs r USING (run_id) {where} "
            "ORDER BY r.run_at, r.seq, c.cell_id")

    def run_of_results(self, hashes: Iterable[str]) -> str | None:
        """The stored run that holds more than half of these cell results, if one does (a file that shares a cell
        or two with a stored run, a merged or hand-edited one, is not that run)."""
        found: dict[str, int] = {}
        total = 0
        for digest in hashes:
            total += 1
            row = self.conn.execute("SELECT run_id FROM cells WHERE result_sha256 = ?", (digest,)).fetchone()
            if row:
                found[row[0]] = found.get(row[0], 0) + 1
        best = max(found, key=lambda k: found[k]) if found else None
        return best if best is not None and 2 * found[best] > total else None

    # --- writing ---

    def add(self, runs: Sequence[tuple[Run, str]], started: str | None = None) -> list[AddOutcome]:
        """Add loaded runs (with each file's sha256) in one transaction; refresh the bands, steps and drifts of the
        cells they touch. ``started`` (UTC text) dates a run whose files carry no start time."""
        outcomes: list[AddOutcome] = []

        def work() -> None:
            outcomes.clear()
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                bands: set[tuple[str, str]] = set()
                series: set[tuple[str, str]] = set()
                for run, digest in runs:
                    outcome, env_key, machine, cells = self._add_run(run, digest, started)
                    outcomes.append(outcome)
                    bands.update((env_key, cell_id) for cell_id in cells)
                    series.update((machine, cell_id) for cell_id in cells)
                derive.refresh(self.conn, bands, series)
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

        _retry_locked(work)
        # one self-contained file after every add (a copy without its -wal file would miss the last runs); when
        # another connection is busy, its own add checkpoints later
        with suppress(sqlite3.OperationalError):
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return outcomes

    def _add_run(self, run: Run, digest: str, started: str | None) -> tuple[AddOutcome, str, str, list[str]]:
        """Add one file; returns what it did, the run's environment and machine, and the cells whose series moved
        (new cells, or every cell of a run whose start time it supplied)."""
        row = self.conn.execute("SELECT r.run_id, r.label, r.env_key, r.machine FROM sources s JOIN runs r "
                                "USING (run_id) WHERE s.sha256 = ?", (digest,)).fetchone()
        if row:
            return (AddOutcome(str(run.path), row[0], row[1], False, 0, 0, already=True), row[2], row[3], [])
        cells = [(result, _cell_hash(result)) for result in run.results]
        run_id = self.run_of_results(h for _, h in cells)
        if run_id is None and run.run_id:  # a stopped run's JSON and journal: one run id, cells that may differ
            row = self.conn.execute("SELECT run_id FROM runs WHERE detbench_run_id = ?", (run.run_id,)).fetchone()
            run_id = row[0] if row else None
        now = _utc_now()
        fields = run_fields(run)
        if fields["started_at"] is None and started:
            fields["started_at"] = started
        if fields["started_at"] and fields["started_at"] > _utc_now(FUTURE_TOLERANCE):
            raise StoreError(f"{run.path}: dated {fields['started_at']}, in the future (a wrong clock where it ran?); "
                             "nothing was added, since it would stay the newest run whatever came after")
        new_run = run_id is None
        moved: list[str] = []
        dated = False
        if run_id is None:
            run_id = hashlib.sha256("\n".join(sorted(h for _, h in cells)).encode()).hexdigest()[:32]
            seq = int(self.conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs").fetchone()[0])
            values = {"run_id": run_id, "seq": seq, "label": run_label(run), "kind": run.kind, "added_at": now,
                      "detbench_run_id": run.run_id,
                      "run_at": fields["started_at"] or now,
                      "run_at_source": "started" if fields["started_at"] else "added", **fields}
            names = ", ".join(values)
            self.conn.execute(f"INSERT INTO runs ({names}) VALUES ({', '.join('?' * len(values))})",
                              list(values.values()))
        elif fields["started_at"]:  # a later file of the same run (the JSON of a journal): its start time
            changed = self.conn.execute("UPDATE runs SET started_at = ?, run_at = ?, run_at_source = 'started' "
                                        "WHERE run_id = ? AND started_at IS NULL",
                                        (fields["started_at"], fields["started_at"], run_id)).rowcount
            dated = bool(changed)
            if changed:
                moved = [r[0] for r in self.conn.execute("SELECT cell_id FROM cells WHERE run_id = ?", (run_id,))]
        label, env_key, machine, run_method = self.conn.execute(
            "SELECT label, env_key, machine, method_key FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        stored = dict(self.conn.execute("SELECT cell_id, result_sha256 FROM cells WHERE run_id = ?", (run_id,)))
        added = known = 0
        conflicts = []
        for result, cell_hash in cells:
            if result.cell.id in stored:
                if stored[result.cell.id] == cell_hash:
                    known += 1
                else:
                    conflicts.append(result.cell.id)
                continue
            if self.conn.execute("SELECT 1 FROM cells WHERE result_sha256 = ?", (cell_hash,)).fetchone():
                known += 1  # the same measurement stored under another run: keep it there
                continue
            values = cell_fields(result)
            values.update(run_id=run_id, result_sha256=cell_hash,
                          method_key=method.cell_key(run_method, values["postprocess_policy"]))
            names = ", ".join(values)
            self.conn.execute(f"INSERT INTO cells ({names}) VALUES ({', '.join('?' * len(values))})",
                              list(values.values()))
            moved.append(result.cell.id)
            added += 1
        self.conn.execute("INSERT INTO sources (sha256, run_id, path, cells, added_at) VALUES (?, ?, ?, ?, ?)",
                          (digest, run_id, str(run.path), len(cells), now))
        outcome = AddOutcome(str(run.path), run_id, label, new_run, added, known, conflicts,
                             undated=new_run and not fields["started_at"], dated=dated)
        return outcome, env_key, machine, sorted(set(moved))


def open_store(path: str | Path, *, create: bool = False, readonly: bool = False) -> Store:
    """Open (``create``: or start) a store, checking it is one and of a version this detbench reads.

    ``readonly``: nothing is created or migrated (an older store is refused with the command that migrates it)."""
    path = Path(path)
    if not path.exists():
        if not create:
            raise StoreError(f"{path}: no such history store (detbench-history add {path} RUN.json creates one)")
        if not path.parent.is_dir():
            raise StoreError(f"{path}: cannot create the store (no folder {path.parent})")
    elif not path.is_file():
        raise StoreError(f"{path}: not a file")
    check_file(path)
    try:
        conn = _connect(path)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open ({exc})") from None
    try:
        _prepare(path, conn, readonly)
    except StoreError:
        conn.close()
        raise
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path}: not a usable history store ({exc}); restore it from a copy") from None
    return Store(path, conn)


def _prepare(path: Path, conn: sqlite3.Connection, readonly: bool) -> None:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    if not tables:
        if readonly:
            raise StoreError(f"{path}: an empty file, not a history store yet (detbench-history add creates one)")
        _retry_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        _retry_locked(lambda: _create(conn))
        tables = set(TABLES)
    if "detbench_schema" not in tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise StoreError(f"{path}: not a detbench history store (an SQLite database with tables {shown})")
    version = _version(path, conn)
    # nothing is read from or written into a damaged store (quick_check reads the whole file: 0.1 s for 220 MB)
    problems = [r[0] for r in conn.execute("PRAGMA quick_check(3)")]
    if problems != ["ok"]:
        raise StoreError(f"{path}: damaged ({'; '.join(map(str, problems))}); restore it from a copy")
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path}: written by a newer detbench (history schema {version}; this detbench reads up to "
                         f"{SCHEMA_VERSION}); upgrade detbench to use it")
    if version < SCHEMA_VERSION:
        if readonly:
            raise StoreError(f"{path}: history schema {version} is older than this detbench's {SCHEMA_VERSION}; "
                             f"run `detbench-history migrate {path}` first")
        _retry_locked(lambda: _migrate(path, conn))


def _version(path: Path, conn: sqlite3.Connection) -> int:
    rows = conn.execute("SELECT version FROM detbench_schema").fetchall()
    if len(rows) != 1 or not isinstance(rows[0][0], int):
        raise StoreError(f"{path}: damaged history store (detbench_schema must hold one version, has {rows!r:.60})")
    return int(rows[0][0])


def statements(script: str) -> list[str]:
    """An SQL script as single statements (``executescript`` would commit the open transaction)."""
    out, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    return out


def _create(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0:  # another process may have won
            for statement in statements(SCHEMA):
                conn.execute(statement)
            conn.execute("INSERT INTO detbench_schema VALUES (?, ?, ?)",
                         (SCHEMA_VERSION, _detbench_version(), _utc_now()))
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _migrate(path: Path, conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _version(path, conn)  # again, under the write lock: another process may have migrated it
        while version < SCHEMA_VERSION:
            step = MIGRATIONS.get(version)
            if step is None:
                raise StoreError(f"{path}: history schema {version} cannot be migrated by this detbench "
                                 f"(reads {SCHEMA_VERSION}); nothing was changed")
            step(conn)
            version += 1
        conn.execute("UPDATE detbench_schema SET version = ?, written_by = ?, updated_at = ?",
                     (version, _detbench_version(), _utc_now()))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _migrate_1(conn: sqlite3.Connection) -> None:
    """Schema 1 -> 2: each run's method (read from its stored cells) joins its environment key and each cell gets its
    method's key, so a method change starts a new series; journal runs stored at the time added get their header's
    start time (when the file is still where it was added from); steps gain their interval and cause, drifts their
    table; every derived table is computed again."""
    for statement in ("ALTER TABLE runs ADD COLUMN run_at_source TEXT NOT NULL DEFAULT 'added'",
                      "ALTER TABLE runs ADD COLUMN method TEXT NOT NULL DEFAULT '{}'",
                      "ALTER TABLE runs ADD COLUMN method_key TEXT NOT NULL DEFAULT ''",
                      "ALTER TABLE runs ADD COLUMN detbench_version TEXT",
                      "ALTER TABLE cells ADD COLUMN postprocess_policy TEXT",
                      "ALTER TABLE cells ADD COLUMN method_key TEXT NOT NULL DEFAULT ''",
                      "UPDATE runs SET run_at_source = 'started' WHERE started_at IS NOT NULL",
                      "DROP TABLE steps", "DROP VIEW cell_series"):
        conn.execute(statement)
    for statement in statements(SCHEMA):
        if statement.startswith(("CREATE TABLE steps", "CREATE TABLE drifts", "CREATE VIEW cell_series",
                                 "CREATE INDEX cells_series", "CREATE INDEX runs_series")):
            conn.execute(statement)
    runs = conn.execute("SELECT run_id, kind, started_at, " + ", ".join(ENV_KEY[:-1]) + " FROM runs").fetchall()
    for run_id, kind, started, *env in runs:
        first = conn.execute("SELECT result FROM cells WHERE run_id = ? ORDER BY cell_id LIMIT 1",
                             (run_id,)).fetchone()
        run_method = method.method_of(json.loads(first[0])) if first else {}
        run_key = method.key(run_method)
        fields = dict(zip(ENV_KEY[:-1], env, strict=True), method_key=run_key)
        conn.execute("UPDATE runs SET method = ?, method_key = ?, detbench_version = ?, env_key = ? WHERE run_id = ?",
                     (json.dumps(run_method, sort_keys=True, default=str), run_key, _text(run_method.get("detbench")),
                      env_key_of(fields), run_id))
        if kind == "journal" and started is None:
            for (path,) in conn.execute("SELECT path FROM sources WHERE run_id = ?", (run_id,)).fetchall():
                with suppress(OSError, ValueError):
                    header = read_run_header(path)
                    when = started_at(header.get("started_utc")) if isinstance(header, dict) else None
                    if when:
                        conn.execute("UPDATE runs SET started_at = ?, run_at = ?, run_at_source = 'started' "
                                     "WHERE run_id = ?", (when, when, run_id))
                        break
        for cell_id, result in conn.execute("SELECT cell_id, result FROM cells WHERE run_id = ?",
                                            (run_id,)).fetchall():
            policy = method.postprocess_policy(json.loads(result))
            conn.execute("UPDATE cells SET postprocess_policy = ?, method_key = ? WHERE run_id = ? AND cell_id = ?",
                         (policy, method.cell_key(run_key, policy), run_id, cell_id))
    derive.refresh_all(conn)


# version -> the function taking a store of that version to the next, inside the migration's one transaction
def _migrate_2(conn: sqlite3.Connection) -> None:
    """Schema 2 -> 3: runs keep the run id their files carry, so a later file of the same run is known by it (runs
    stored before keep none: their files are known by their cells, as before)."""
    conn.execute("ALTER TABLE runs ADD COLUMN detbench_run_id TEXT")


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _migrate_1, 2: _migrate_2}


# --- one run and one cell as rows -----------------------------------------------------------------------


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cell_hash(result: Any) -> str:
    return hashlib.sha256(json.dumps(result.to_dict(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def machine_of(env: dict[str, Any]) -> str:
    """The machine kind a run ran on: its GPU name, else its CPU, else ``unknown``."""
    if env.get("gpu"):
        return str(env["gpu"])
    return f"CPU {env['cpu']}" if env.get("cpu") else "unknown"


def env_key_of(fields: dict[str, Any]) -> str:
    text = json.dumps([fields.get(k) for k in ENV_KEY])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def started_at(text: str | None) -> str | None:
    """pytest-benchmark's ``datetime`` as UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (sortable as text); None if absent."""
    if not text:
        return None
    try:
        moment = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def run_label(run: Run) -> str:
    """The run's name: its file's, without ``.journal`` (``run.journal.jsonl`` and ``run.json`` are one run)."""
    label = run.label
    return label[: -len(".journal")] if label.endswith(".journal") and len(label) > len(".journal") else label


def run_fields(run: Run) -> dict[str, Any]:
    """The ``runs`` columns a run's file gives (the store adds id, order and times)."""
    env = run.environment
    fields: dict[str, Any] = {k: _text(env.get(k)) for k in FINGERPRINT}
    fields["gpu_count"] = env.get("gpu_count") if isinstance(env.get("gpu_count"), int) else None
    fields["machine"] = machine_of(env)
    canaries = [b.host_canary_ms for r in run.results if r.measurement for b in r.measurement.blocks
                if isinstance(b.host_canary_ms, (int, float)) and b.host_canary_ms > 0]
    fields["host_canary_ms"] = statistics.median(canaries) if canaries else None
    run_method = method.method_of(run.results[0].to_dict()) if run.results else {}
    fields["method"] = json.dumps(run_method, sort_keys=True, default=str)
    fields["method_key"] = method.key(run_method)
    fields["detbench_version"] = _text(run_method.get("detbench"))
    fields["env_key"] = env_key_of(fields)
    fields["environment"] = json.dumps(env, sort_keys=True, default=str)
    fields["started_at"] = started_at(run.datetime or journal_started(run))
    return fields


def journal_started(run: Run) -> str | None:
    """A journal's ``started_utc`` (its header line), None for a journal from before the header or another file."""
    if run.kind != "journal":
        return None
    try:
        header = read_run_header(run.path)
    except (OSError, ValueError):
        return None
    value = header.get("started_utc") if isinstance(header, dict) else None
    return value if isinstance(value, str) else None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def cell_fields(result: Any) -> dict[str, Any]:
    """The ``cells`` columns of one cell result (without run id and hash)."""
    cell = result.cell
    lat = result.latency
    measured = result.measurement
    batch = result.measured_batch_size
    block_ips = [batch * 1000.0 / b.median_ms for b in measured.blocks if b.median_ms > 0] if (
        measured and batch) else []
    spread = None
    if len(block_ips) >= 2:
        q1, median, q3 = np.percentile(block_ips, [25, 50, 75])
        spread = float((q3 - q1) / median) if median > 0 else None
    canaries = [b.host_canary_ms for b in measured.blocks if _num(b.host_canary_ms)] if measured else []
    tel = result.telemetry_summary
    lean = result.to_dict()
    lean.pop("times_ms", None)
    if isinstance(lean.get("telemetry"), dict):
        lean["telemetry"] = dict(lean["telemetry"], devices=[
            {k: v for k, v in d.items() if k != "series"} if isinstance(d, dict) else d
            for d in lean["telemetry"].get("devices") or []])
    status, reason = result.status, result.reason
    why = implausible_figures(result) if status == "ok" else None
    if why:  # stored, named, and out of every series and band: what detbench-report refuses to judge
        status, reason = INVALID, f"implausible figures, not judged ({why})"
    return {
        "cell_id": cell.id, "model": cell.model, "mode": cell.mode, "compile": cell.compile,
        "precision": cell.precision, "batch_size": str(cell.batch_size), "measured_batch_size": batch,
        "gpus": cell.gpus, "image_size": f"{cell.image_size[0]}x{cell.image_size[1]}" if cell.image_size else None,
        "memory_format": cell.memory_format, "variant": cell.configuration, "status": status,
        "reason": reason, "throughput_ips": _num(result.throughput_ips),
        "latency_median_ms": _num(lat.median_ms) if lat else None, "latency_p90_ms": _num(lat.p90_ms) if lat else None,
        "latency_p99_ms": _num(lat.p99_ms) if lat else None, "blocks": len(block_ips) if measured else None,
        "repeats": measured.repeats if measured else None, "block_spread": spread,
        "host_canary_ms": statistics.median(canaries) if canaries else None,
        "gpu_util_pct": tel.gpu_util_pct_mean if tel else None,
        "peak_memory_bytes": result.peak_memory_bytes,
        "postprocess_policy": method.postprocess_policy(lean),
        "result": json.dumps(lean, sort_keys=True, separators=(",", ":")),
    }


def closing_store(path: str | Path, **kwargs: Any) -> closing[Store]:
    """``with closing_store(path) as store:`` opens and always closes."""
    return closing(open_store(path, **kwargs))
