"""The history store: the committed example runs in one store, idempotent adds, two writers at once, and every
kind of bad store or bad file refused in one line (exit 2) with nothing lost or added."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from detbench.reports.history import store as store_module
from detbench.reports.history.cli import main
from detbench.reports.history.store import StoreError, closing_store, open_store
from tests.examples import EXAMPLES, RUNS, example
from tests.reports.test_history_steps import write_history

ROOT = Path(__file__).resolve().parents[2]
NAMED = ("h100-quick.json", "h100-quick.journal.jsonl", "h100-quick-run1.journal.jsonl", "h100-matrix-extras.json",
         "h100-yolo.json", "h100-detr.journal.jsonl", "multi-gpu/h100x4-multi-gpu.json")


def example_runs() -> list[Path]:
    """Every committed run file, by name (tests/examples.py)."""
    return [example(name) for name in RUNS]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("detbench-history: error: "), err
    return err


def test_the_committed_examples_load_into_one_store_and_adding_twice_changes_nothing(tmp_path, capsys):
    files = example_runs()
    names = {str(p.relative_to(EXAMPLES)) for p in files}
    assert {n for n in NAMED if (EXAMPLES / n).exists()} <= names and len(files) >= 20
    db = tmp_path / "history.db"
    assert main(["add", str(db), *map(str, files)]) == 0
    with closing_store(db, readonly=True) as store:
        first = store.counts()
        runs = store.runs()
        machines = set(runs["machine"])
    assert first["sources"] == len(files) and first["cells"] >= 200
    assert {"NVIDIA H100 80GB HBM3", "NVIDIA H200"} <= machines
    # a run's JSON and its journal hold the same measurements: one run, not two
    assert list(runs["label"]).count("h100-quick") == 1
    quick = runs[runs["label"] == "h100-quick"].iloc[0]
    assert quick["started_at"] == "2026-11-24T13:16:29.076225Z" and quick["torch"] == "2.11.0+cu130"
    assert quick["cudnn"] == "91900" and quick["driver"] == "580.159.04"
    capsys.readouterr()
    assert main(["add", str(db), *map(str, files)]) == 0
    out = capsys.readouterr().out
    assert out.count("already in the store") == len(files)
    with closing_store(db, readonly=True) as store:
        assert store.counts() == first
    # the same measurements under another file name are still the same run
    copy = tmp_path / "renamed.json"
    copy.write_bytes((EXAMPLES / "h100-yolo.json").read_bytes() + b"\n")
    assert main(["add", str(db), str(copy)]) == 0
    with closing_store(db, readonly=True) as store:
        counts = store.counts()
    assert counts["runs"] == first["runs"] and counts["cells"] == first["cells"]
    assert counts["sources"] == first["sources"] + 1


def test_plain_sql_sees_the_schema_the_docs_describe(tmp_path):
    db = tmp_path / "history.db"
    quick = [str(EXAMPLES / "h100-quick.json"), str(EXAMPLES / "h100-quick-run1.journal.jsonl")]
    assert main(["add", str(db), *quick]) == 0
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT version FROM detbench_schema").fetchone() == (store_module.SCHEMA_VERSION,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA application_id").fetchone() == (store_module.APPLICATION_ID,)
        rows = conn.execute("SELECT machine, COUNT(*) FROM runs GROUP BY machine").fetchall()
        assert rows == [("NVIDIA H100 80GB HBM3", 2)]
        trend = conn.execute("SELECT run_at, throughput_ips FROM cell_series WHERE cell_id = ? "
                             "ORDER BY run_at", ("retinanet_resnet50_fpn-infer-eager-fp32-bs8-gpu1",)).fetchall()
        assert len(trend) == 2 and all(ips > 0 for _, ips in trend)
        (value,) = conn.execute("SELECT json_extract(result, '$.latency.median_ms') FROM cells LIMIT 1").fetchone()
        assert value > 0
    finally:
        conn.close()
    # every query of docs/history.md runs on it
    text = (ROOT / "docs" / "history.md").read_text(encoding="utf-8")
    queries = [q.split("```", 1)[0] for q in text.split("```sql\n")[1:]]
    assert len(queries) >= 5
    conn = sqlite3.connect(db)
    try:
        try:
            conn.execute("SELECT SQRT(4)")
        except sqlite3.OperationalError:  # an SQLite built without its math functions (the doc says so)
            queries = [q for q in queries if "SQRT(" not in q]
        for query in queries:
            conn.execute(query.replace(":cell", "'retinanet_resnet50_fpn-infer-eager-fp32-bs8-gpu1'")).fetchall()
    finally:
        conn.close()


def _add_process(db: Path, files: list[Path]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "detbench.reports.history", "add", str(db), *map(str, files)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_writers_at_once_both_land(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_history(tmp_path / "a", 1, 12, 0)
    second = write_history(tmp_path / "b", 2, 12, 0, environment={"gpu": "NVIDIA H200"})
    db = tmp_path / "history.db"  # created by whichever process gets there first
    for _ in range(2):  # the second round adds the same files again, at once, from both processes
        procs = [_add_process(db, first), _add_process(db, second), _add_process(db, first[:6])]
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], [o[1] for o in outs]
    with closing_store(db, readonly=True) as store:
        counts = store.counts()
        per_machine = dict(store.conn.execute("SELECT machine, COUNT(*) FROM runs GROUP BY machine").fetchall())
        ok = store.conn.execute("PRAGMA integrity_check").fetchone()
    assert per_machine == {"NVIDIA H100 80GB HBM3": 12, "NVIDIA H200": 12}
    assert counts["runs"] == 24 and counts["cells"] == 24 * 3 and counts["sources"] == 24
    assert counts["bands"] == 6  # 3 cells x 2 environments, refreshed by whichever writer came last
    assert ok == ("ok",)


def _store(tmp_path: Path) -> Path:
    db = tmp_path / "history.db"
    assert main(["add", str(db), str(EXAMPLES / "h100-quick.json")]) == 0
    return db


def test_a_truncated_store_is_refused_in_one_line_and_left_as_it_is(tmp_path, capsys):
    db = _store(tmp_path)
    data = db.read_bytes()
    assert len(data) > 8192
    db.write_bytes(data[: len(data) // 2 + 100])
    before = db.read_bytes()
    capsys.readouterr()
    run = str(EXAMPLES / "h100-yolo.json")
    for argv in (["add", str(db), run], ["compare", str(db), run], ["info", str(db)], ["steps", str(db)]):
        assert main(argv) == 2
        err = one_line_error(capsys)
        assert "truncated" in err and str(db) in err
    assert db.read_bytes() == before
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0


def test_a_store_damaged_inside_gets_nothing_added(tmp_path, capsys):
    db = tmp_path / "history.db"
    assert main(["add", str(db), *map(str, example_runs()[:12])]) == 0
    data = bytearray(db.read_bytes())
    third = len(data) // 3
    data[third: 2 * third] = b"\xa5" * third  # pages overwritten, length and header intact
    db.write_bytes(bytes(data))
    capsys.readouterr()
    # add, and the readers too (info, compare, steps used to answer from a damaged store)
    for argv in (["add", str(db), str(EXAMPLES / "h100-yolo.json")], ["info", str(db)], ["steps", str(db)],
                 ["compare", str(db), str(EXAMPLES / "h100-yolo.json")]):
        assert main(argv) == 2, argv
        err = one_line_error(capsys)
        assert "restore it from a copy" in err and ("damaged" in err or "not a usable history store" in err)
    assert db.read_bytes() == bytes(data)


def test_a_truncated_result_file_adds_nothing(tmp_path, capsys):
    db = _store(tmp_path)
    with closing_store(db, readonly=True) as store:
        counts = store.counts()
    cut = tmp_path / "cut.json"
    text = (EXAMPLES / "h100-yolo.json").read_text(encoding="utf-8")
    cut.write_text(text[: len(text) // 2], encoding="utf-8")
    capsys.readouterr()
    assert main(["add", str(db), str(EXAMPLES / "h100-matrix-extras.json"), str(cut)]) == 2
    err = one_line_error(capsys)
    assert "cut.json" in err and "not valid JSON" in err
    with closing_store(db, readonly=True) as store:
        assert store.counts() == counts  # the good file given with it was not added either
    fresh = tmp_path / "fresh.db"
    assert main(["add", str(fresh), str(cut)]) == 2
    assert not fresh.exists()


@pytest.mark.parametrize("kind", ["json", "text", "other-sqlite", "empty-schema-table"])
def test_a_foreign_file_is_refused_and_left_as_it_is(tmp_path, capsys, kind):
    db = tmp_path / "store.db"
    if kind == "json":
        db.write_bytes((EXAMPLES / "h100-yolo.json").read_bytes())
    elif kind == "text":
        db.write_text("not a database\n" * 100)
    else:
        conn = sqlite3.connect(db)
        if kind == "other-sqlite":
            conn.execute("CREATE TABLE users (name TEXT)")
        else:
            conn.execute("CREATE TABLE detbench_schema (version INTEGER, written_by TEXT, updated_at TEXT)")
        conn.commit()
        conn.close()
    before = db.read_bytes()
    capsys.readouterr()
    assert main(["add", str(db), str(EXAMPLES / "h100-yolo.json")]) == 2
    err = one_line_error(capsys)
    expected = {"json": "not an SQLite database", "text": "not an SQLite database",
                "other-sqlite": "not a detbench history store (an SQLite database with tables users)",
                "empty-schema-table": "damaged history store"}[kind]
    assert expected in err
    assert db.read_bytes() == before


def test_a_store_from_a_newer_detbench_is_refused(tmp_path, capsys):
    db = _store(tmp_path)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE detbench_schema SET version = 99")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    capsys.readouterr()
    for argv in (["add", str(db), str(EXAMPLES / "h100-yolo.json")], ["info", str(db)]):
        assert main(argv) == 2
        err = one_line_error(capsys)
        newest = store_module.SCHEMA_VERSION
        assert f"written by a newer detbench (history schema 99; this detbench reads up to {newest})" in err
    assert db.read_bytes() == before


def test_an_older_store_is_migrated_in_one_transaction(tmp_path, monkeypatch, capsys):
    db = _store(tmp_path)
    with closing_store(db) as store:
        counts = store.counts()

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE runs ADD COLUMN note TEXT")
        raise sqlite3.OperationalError("disk I/O error")

    now = store_module.SCHEMA_VERSION  # the store as written today, migrated to a next schema
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", now + 1)
    monkeypatch.setattr(store_module, "MIGRATIONS", {now: broken})
    with pytest.raises(StoreError, match="not a usable history store"):
        open_store(db)
    with pytest.raises(StoreError, match=f"history schema {now} is older than this detbench's {now + 1}; run "
                                         "`detbench-history migrate"):
        open_store(db, readonly=True)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT version FROM detbench_schema").fetchone() == (now,)
    assert "note" not in [r[1] for r in conn.execute("PRAGMA table_info(runs)")]  # rolled back
    conn.close()
    monkeypatch.setattr(store_module, "MIGRATIONS", {now: lambda c: c.execute("ALTER TABLE runs ADD COLUMN note TEXT")})
    assert main(["migrate", str(db)]) == 0
    with closing_store(db, readonly=True) as store:
        assert store.conn.execute("SELECT version FROM detbench_schema").fetchone() == (now + 1,)
        assert "note" in set(store.runs().columns)
        assert store.counts() == counts
    monkeypatch.setattr(store_module, "MIGRATIONS", {})
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", now + 2)
    capsys.readouterr()
    assert main(["add", str(db), str(EXAMPLES / "h100-yolo.json")]) == 2
    err = one_line_error(capsys)
    assert f"history schema {now + 1} cannot be migrated by this detbench (reads {now + 2}); nothing was changed" in err


def test_missing_store_and_usage_errors(tmp_path, capsys):
    assert main(["info", str(tmp_path / "none.db")]) == 2
    assert "no such history store" in one_line_error(capsys)
    assert main(["add", str(tmp_path / "no" / "folder.db"), str(EXAMPLES / "h100-yolo.json")]) == 2
    assert "cannot create the store" in one_line_error(capsys)
    db = _store(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(db), str(EXAMPLES / "h100-yolo.json"), "--threshold", "2"])
    assert exit_.value.code == 2
    assert "--threshold must be a fraction" in capsys.readouterr().err
    assert main(["compare", str(db), str(tmp_path / "missing.json")]) == 2
    assert "missing.json: no such file" in one_line_error(capsys)


def test_the_run_keeps_what_its_files_say(tmp_path):
    """A journal alone has no start time; the JSON of the same run, added later, supplies it."""
    db = tmp_path / "history.db"
    assert main(["add", str(db), str(EXAMPLES / "h100-quick.journal.jsonl")]) == 0
    with closing_store(db, readonly=True) as store:
        (started, run_at, added) = store.conn.execute("SELECT started_at, run_at, added_at FROM runs").fetchone()
    assert started is None and run_at == added
    assert main(["add", str(db), str(EXAMPLES / "h100-quick.json")]) == 0
    with closing_store(db, readonly=True) as store:
        rows = store.conn.execute("SELECT started_at, run_at, label FROM runs").fetchall()
        result = json.loads(store.conn.execute("SELECT result FROM cells LIMIT 1").fetchone()[0])
    assert rows == [("2026-11-24T13:16:29.076225Z", "2026-11-24T13:16:29.076225Z", "h100-quick")]
    assert "times_ms" not in result and result["schema"] == "detbench.cell"


def test_a_path_that_reads_as_an_sqlite_uri_is_a_file_of_that_name(tmp_path, monkeypatch, capsys):
    """``add 'file:x.db?mode=memory'`` used to report success and store nothing (an in-memory database)."""
    monkeypatch.chdir(tmp_path)
    run = str(EXAMPLES / "h100-quick.json")
    assert main(["add", "file:x.db?mode=memory", run]) == 0
    assert (tmp_path / "file:x.db?mode=memory").stat().st_size > 0
    capsys.readouterr()
    assert main(["info", "file:x.db?mode=memory"]) == 0
    assert "1 runs" in capsys.readouterr().out.replace("\n", " ")


def test_a_store_on_a_read_only_file_system_is_read(tmp_path, monkeypatch, capsys):
    """A healthy store on a read-only mount opens immutable (no -shm file can be made there); the mount itself is
    simulated, the store is real."""
    db = _store(tmp_path)
    monkeypatch.setattr(store_module, "on_read_only_file_system", lambda path: True)
    capsys.readouterr()
    assert main(["info", str(db)]) == 0
    assert main(["compare", str(db), str(EXAMPLES / "h100-quick.json")]) == 0
    assert not Path(f"{db}-shm").exists()


def test_a_run_dated_in_the_future_is_refused_and_nothing_is_added(tmp_path, capsys):
    """A run dated 9999 used to stay the newest run for ever; now the add is refused in one line, atomically."""
    db = _store(tmp_path)
    data = json.loads((EXAMPLES / "h100-yolo.json").read_text())
    data["datetime"] = "9999-01-01T00:00:00+00:00"
    future = tmp_path / "future.json"
    future.write_text(json.dumps(data))
    before = db.read_bytes()
    capsys.readouterr()
    assert main(["add", str(db), str(EXAMPLES / "h100-matrix-extras.json"), str(future)]) == 2
    err = one_line_error(capsys)
    assert "future.json" in err and "9999-01-01" in err and "in the future" in err
    with closing_store(db, readonly=True) as store:
        assert store.counts()["runs"] == 1  # the good file of the same add was not added either
    assert db.read_bytes() == before


def test_a_cell_the_report_refuses_as_implausible_is_stored_out_of_every_series(tmp_path):
    """A block of 1e-300 ms (an ok cell's figure detbench-report refuses to judge) used to enter the history's
    series and bands; it is stored as ``invalid`` with the report's reason, and no series holds it."""
    import dataclasses

    from tests.reports.generate import write_benchmark_json
    from tests.reports.test_compare_blocks import GPU_BOUND, HOST_BOUND, cell_result

    odd = cell_result(GPU_BOUND, 40.0, seed=3)
    odd.measurement.blocks[0] = dataclasses.replace(odd.measurement.blocks[0], median_ms=1e-300)
    run = write_benchmark_json(tmp_path / "odd.json", [odd, cell_result(HOST_BOUND, 100.0, seed=4)])
    db = tmp_path / "history.db"
    assert main(["add", str(db), str(run)]) == 0
    with closing_store(db, readonly=True) as store:
        rows = dict(store.conn.execute("SELECT cell_id, status || ': ' || COALESCE(reason, '') FROM cells"))
        series = store.series(ok_only=True)
    assert rows[GPU_BOUND.id].startswith("invalid: implausible figures, not judged (a block of 1e-300 ms")
    assert rows[HOST_BOUND.id] == "ok: " and set(series["cell_id"]) == {HOST_BOUND.id}


def test_a_stopped_runs_json_and_journal_are_one_run(tmp_path, capsys):
    """A run stopped by a signal writes a JSON and a journal whose cells differ (the journal's last lines are the
    cells as they stood); they used to be stored as two runs. The run id both carry makes them one, the cell that
    differs named as a conflict."""
    from detbench.bench.core.journal import Journal
    from detbench.bench.core.record import RunRecord
    from tests.reports.generate import ENVIRONMENT
    from tests.reports.test_compare_blocks import GPU_BOUND, HOST_BOUND, cell_result

    first, second = cell_result(GPU_BOUND, 40.0, seed=1), cell_result(HOST_BOUND, 100.0, seed=2)
    with Journal(tmp_path / "run.journal.jsonl", run_id="20261205T120000Z-abc123", options={},
                 environment=ENVIRONMENT) as journal:
        journal.append(first)
        journal.append(cell_result(HOST_BOUND, 90.0, seed=3))  # the second cell as the journal last held it
    RunRecord([first, second], options={}, environment=ENVIRONMENT, run_id="20261205T120000Z-abc123").write(
        tmp_path / "run.json")
    db = tmp_path / "history.db"
    assert main(["add", str(db), str(tmp_path / "run.json")]) == 0
    assert main(["add", str(db), str(tmp_path / "run.journal.jsonl")]) == 0
    with closing_store(db, readonly=True) as store:
        assert store.counts()["runs"] == 1 and store.counts()["cells"] == 2 and store.counts()["sources"] == 2
