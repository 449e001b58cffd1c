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
import hashlib
import json
import math
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

from reports.history import analysis
from reports.load import Run, redact_environment

SCHEMA_VERSION = 1  # the history store's own schema (not the cell result schema)
APPLICATION_ID = 0x64627368  # "dbsh": PRAGMA application_id of a detbench history store
BUSY_TIMEOUT_S = 60.0
SQLITE_MAGIC = b"SQLite format 3\x00"

# The environment fingerprint kept as columns of ``runs``; ENV_KEY ones define "the same environment" (host name
# and host canary are left out: leases of one machine kind are what the band is to cover).
FINGERPRINT = ("gpu", "gpu_count", "driver", "torch", "torchvision", "cuda", "cudnn", "nccl", "image", "hostname",
               "cpu", "python")
ENV_KEY = ("machine", "driver", "torch", "torchvision", "cuda", "cudnn", "image")

SCHEMA = """
CREATE TABLE detbench_schema (
    version INTEGER NOT NULL,       -- the history store's schema version (reports.history.store.SCHEMA_VERSION)
    written_by TEXT NOT NULL,       -- detbench version that created or last migrated the store
    updated_at TEXT NOT NULL
);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,        -- hash of the cell results first added for the run
    seq INTEGER NOT NULL UNIQUE,    -- order in which runs were added
    label TEXT NOT NULL,            -- the first file's name without extension
    kind TEXT NOT NULL,             -- pytest-benchmark, journal or interleaved
    started_at TEXT,                -- pytest-benchmark's datetime (UTC); NULL for a journal alone
    added_at TEXT NOT NULL,         -- UTC
    run_at TEXT NOT NULL,           -- started_at, else added_at: the time axis of every trend
    machine TEXT NOT NULL,          -- the GPU name (else 'CPU <cpu>', else 'unknown'): one trend line each
    gpu TEXT, gpu_count INTEGER, driver TEXT, torch TEXT, torchvision TEXT, cuda TEXT, cudnn TEXT, nccl TEXT,
    image TEXT, hostname TEXT, cpu TEXT, python TEXT,
    host_canary_ms REAL,            -- median over all blocks of the run (higher: a slower host)
    env_key TEXT NOT NULL,          -- hash of machine, driver, torch, torchvision, cuda, cudnn, image
    environment TEXT NOT NULL       -- the whole fingerprint, JSON
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
    result_sha256 TEXT NOT NULL UNIQUE,
    result TEXT NOT NULL,           -- the cell result, JSON, without per-iteration times and telemetry series
    PRIMARY KEY (run_id, cell_id)
);
CREATE INDEX cells_by_cell ON cells(cell_id, run_id);
CREATE INDEX runs_by_time ON runs(run_at, seq);
CREATE TABLE bands (                -- derived, refreshed by every add: each cell's band per environment
    env_key TEXT NOT NULL, cell_id TEXT NOT NULL,
    runs INTEGER NOT NULL,          -- ok runs the band stands on (below 3: weak)
    segment_runs INTEGER NOT NULL,  -- runs since the last step
    level_ips REAL NOT NULL, sd_log REAL, low_ips REAL, high_ips REAL,
    band REAL,                      -- high_ips / level_ips - 1
    PRIMARY KEY (env_key, cell_id)
);
CREATE TABLE steps (                -- derived, refreshed by every add: steps of each cell's series per machine
    machine TEXT NOT NULL, cell_id TEXT NOT NULL,
    run_id TEXT NOT NULL,           -- the first run of the new level
    before_ips REAL NOT NULL, after_ips REAL NOT NULL, change REAL NOT NULL, p_value REAL NOT NULL,
    runs_before INTEGER NOT NULL, runs_after INTEGER NOT NULL,
    PRIMARY KEY (machine, cell_id, run_id)
);
CREATE VIEW cell_series AS
    SELECT r.run_at, r.seq, r.run_id, r.label, r.machine, r.env_key, r.gpu, r.driver, r.torch, r.cuda, r.cudnn,
           r.image, r.host_canary_ms AS run_host_canary_ms, c.cell_id, c.model, c.mode, c.variant, c.batch_size,
           c.gpus, c.status, c.throughput_ips, c.latency_median_ms, c.latency_p99_ms, c.blocks, c.block_spread
    FROM cells c JOIN runs r USING (run_id);
"""
TABLES = ("detbench_schema", "runs", "sources", "cells", "bands", "steps")

# version -> the statements (or function) taking a store of that version to the next, in one transaction
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {}


class StoreError(Exception):
    """The store cannot be used; the message is one line naming the file."""


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
        return text


# --- opening --------------------------------------------------------------------------------------------


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
    # read-write even for readers (they never write): SQLite falls back to read-only on a write-protected file, and
    # the last connection to close removes the -wal and -shm files, which a mode=ro connection cannot
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    return conn


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
        """A query's rows; text through :func:`reports.load.redact_environment` (a store filled before runs were
        redacted on loading may hold a registry password in ``image`` or ``environment``)."""
        frame = pd.read_sql_query(sql, self.conn, params=list(params))
        text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
        return frame.assign(**{c: frame[c].map(redact_environment) for c in text}) if text else frame

    def counts(self) -> dict[str, int]:
        return {t: int(self.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in TABLES}

    def runs(self) -> pd.DataFrame:
        return self.frame("SELECT * FROM runs ORDER BY run_at, seq")

    def series(self, ok_only: bool = True) -> pd.DataFrame:
        """Every cell of every run with its run's time, machine and environment, oldest first."""
        where = "WHERE c.status = 'ok' AND c.throughput_ips > 0" if ok_only else ""
        return self.frame(
            "SELECT r.run_id, r.seq, r.label, r.run_at, r.machine, r.env_key, r.torch, r.image, r.driver, r.cuda, "
            "r.cudnn, c.cell_id, c.model, c.mode, c.variant, c.gpus, c.status, c.reason, c.throughput_ips, "
            f"c.latency_median_ms, c.result_sha256 FROM cells c JOIN runs r USING (run_id) {where} "
            "ORDER BY r.run_at, r.seq, c.cell_id")

    def run_of_results(self, hashes: Iterable[str]) -> str | None:
        """The stored run most of these cell results belong to, if any."""
        found: dict[str, int] = {}
        for digest in hashes:
            row = self.conn.execute("SELECT run_id FROM cells WHERE result_sha256 = ?", (digest,)).fetchone()
            if row:
                found[row[0]] = found.get(row[0], 0) + 1
        return max(found, key=lambda k: found[k]) if found else None

    # --- writing ---

    def add(self, runs: Sequence[tuple[Run, str]]) -> list[AddOutcome]:
        """Add loaded runs (with each file's sha256) in one transaction; refresh the bands and steps they touch."""
        outcomes: list[AddOutcome] = []

        def work() -> None:
            outcomes.clear()
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                touched_env: set[str] = set()
                touched_machine: set[str] = set()
                for run, digest in runs:
                    outcome, env_key, machine = self._add_run(run, digest)
                    outcomes.append(outcome)
                    if not outcome.already:  # new cells, or a start time that reorders the series
                        touched_env.add(env_key)
                        touched_machine.add(machine)
                for env_key in sorted(touched_env):
                    self._refresh_bands(env_key)
                for machine in sorted(touched_machine):
                    self._refresh_steps(machine)
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

    def _add_run(self, run: Run, digest: str) -> tuple[AddOutcome, str, str]:
        row = self.conn.execute("SELECT r.run_id, r.label, r.env_key, r.machine FROM sources s JOIN runs r "
                                "USING (run_id) WHERE s.sha256 = ?", (digest,)).fetchone()
        if row:
            return (AddOutcome(str(run.path), row[0], row[1], False, 0, 0, already=True), row[2], row[3])
        cells = [(result, _cell_hash(result)) for result in run.results]
        run_id = self.run_of_results(h for _, h in cells)
        now = _utc_now()
        fields = run_fields(run)
        new_run = run_id is None
        if run_id is None:
            run_id = hashlib.sha256("\n".join(sorted(h for _, h in cells)).encode()).hexdigest()[:32]
            seq = int(self.conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs").fetchone()[0])
            values = {"run_id": run_id, "seq": seq, "label": run_label(run), "kind": run.kind, "added_at": now,
                      "run_at": fields["started_at"] or now, **fields}
            names = ", ".join(values)
            self.conn.execute(f"INSERT INTO runs ({names}) VALUES ({', '.join('?' * len(values))})",
                              list(values.values()))
        else:  # a later file of the same run (its journal, or the JSON of a journal): fill what was unknown
            started = fields["started_at"]
            self.conn.execute("UPDATE runs SET started_at = COALESCE(started_at, ?), "
                              "run_at = CASE WHEN started_at IS NULL AND ? IS NOT NULL THEN ? ELSE run_at END "
                              "WHERE run_id = ?", (started, started, started, run_id))
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
            values.update(run_id=run_id, result_sha256=cell_hash)
            names = ", ".join(values)
            self.conn.execute(f"INSERT INTO cells ({names}) VALUES ({', '.join('?' * len(values))})",
                              list(values.values()))
            added += 1
        self.conn.execute("INSERT INTO sources (sha256, run_id, path, cells, added_at) VALUES (?, ?, ?, ?, ?)",
                          (digest, run_id, str(run.path), len(cells), now))
        label, env_key, machine = self.conn.execute("SELECT label, env_key, machine FROM runs WHERE run_id = ?",
                                                    (run_id,)).fetchone()
        return AddOutcome(str(run.path), run_id, label, new_run, added, known, conflicts), env_key, machine

    def _refresh_bands(self, env_key: str) -> None:
        self.conn.execute("DELETE FROM bands WHERE env_key = ?", (env_key,))
        frame = self.frame("SELECT c.cell_id, c.throughput_ips FROM cells c JOIN runs r USING (run_id) "
                           "WHERE r.env_key = ? AND c.status = 'ok' AND c.throughput_ips > 0 "
                           "ORDER BY r.run_at, r.seq", (env_key,))
        for cell_id, group in frame.groupby("cell_id", sort=True):
            band = analysis.noise_band(list(group["throughput_ips"]))
            if band is None:
                continue
            self.conn.execute("INSERT INTO bands VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              (env_key, cell_id, band.runs, band.segment_runs, band.level, band.sd, band.low,
                               band.high, band.half_width))

    def _refresh_steps(self, machine: str) -> None:
        self.conn.execute("DELETE FROM steps WHERE machine = ?", (machine,))
        frame = self.frame("SELECT c.cell_id, r.run_id, c.throughput_ips FROM cells c JOIN runs r USING (run_id) "
                           "WHERE r.machine = ? AND c.status = 'ok' AND c.throughput_ips > 0 "
                           "ORDER BY r.run_at, r.seq", (machine,))
        for cell_id, group in frame.groupby("cell_id", sort=True):
            ids = list(group["run_id"])
            for step in analysis.find_steps(list(group["throughput_ips"])):
                self.conn.execute("INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                  (machine, cell_id, ids[step.index], step.before, step.after, step.change,
                                   step.p_value, step.runs_before, step.runs_after))


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
    if not readonly:  # nothing is written into a damaged store (it reads the whole file: 0.1 s for 220 MB)
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
    fields["env_key"] = env_key_of(fields)
    fields["environment"] = json.dumps(env, sort_keys=True, default=str)
    fields["started_at"] = started_at(run.datetime)
    return fields


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
    return {
        "cell_id": cell.id, "model": cell.model, "mode": cell.mode, "compile": cell.compile,
        "precision": cell.precision, "batch_size": str(cell.batch_size), "measured_batch_size": batch,
        "gpus": cell.gpus, "image_size": f"{cell.image_size[0]}x{cell.image_size[1]}" if cell.image_size else None,
        "memory_format": cell.memory_format, "variant": cell.configuration, "status": result.status,
        "reason": result.reason, "throughput_ips": _num(result.throughput_ips),
        "latency_median_ms": _num(lat.median_ms) if lat else None, "latency_p90_ms": _num(lat.p90_ms) if lat else None,
        "latency_p99_ms": _num(lat.p99_ms) if lat else None, "blocks": len(block_ips) if measured else None,
        "repeats": measured.repeats if measured else None, "block_spread": spread,
        "host_canary_ms": statistics.median(canaries) if canaries else None,
        "gpu_util_pct": tel.gpu_util_pct_mean if tel else None,
        "peak_memory_bytes": result.peak_memory_bytes,
        "result": json.dumps(lean, sort_keys=True, separators=(",", ":")),
    }


def closing_store(path: str | Path, **kwargs: Any) -> closing[Store]:
    """``with closing_store(path) as store:`` opens and always closes."""
    return closing(open_store(path, **kwargs))
