"""History store, schema 2: runs placed on their own dates, a change of method kept apart as a new series and said
so, the band printed is the band judged, an add recomputes only the series it touches, a schema-1 store (built by
the detbench before this schema) migrated, open steps listed, and a closed pipe ends quietly."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from detbench.reports.history import analysis, derive
from detbench.reports.history.cli import main
from detbench.reports.history.store import SCHEMA_VERSION, closing_store
from detbench.reports.history.trends import largest_moves, open_alerts, steps_table
from tests.reports.test_history_steps import CELLS, write_history
from tests.reports.test_history_store import EXAMPLES

ROOT = Path(__file__).resolve().parents[2]
V1_STORE = ROOT / "tests" / "data" / "history-v1.db.gz"  # detbench at b3d110e: h100-quick, v2-part1/2, detr
SSDLITE = "ssdlite320_mobilenet_v3_large-infer-eager-fp32-bs8-gpu1"
NOVEMBER = ("h100-quick.json", "h100-quick-v2-part1.journal.jsonl", "h100-quick-v2-part2.json")


def _times(db: Path) -> dict[str, tuple[str, str]]:
    with closing_store(db, readonly=True) as store:
        rows = store.conn.execute("SELECT label, run_at, run_at_source FROM runs").fetchall()
    return {label: (run_at, source) for label, run_at, source in rows}


def test_journals_are_placed_on_their_own_dates(tmp_path, capsys):
    db = tmp_path / "history.db"
    assert main(["add", str(db), *(str(EXAMPLES / name) for name in NOVEMBER)]) == 0
    # a journal with a header: its started_utc
    assert _times(db)["h100-quick-v2-part1"] == ("2026-11-27T17:15:45.000000Z", "started")
    # journals from before the header carry no time at all: said so, and --started places them
    assert main(["add", str(db), str(EXAMPLES / "h100-detr.journal.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "no start time in the file, placed at the time added (--started sets it)" in " ".join(out.split())
    assert max(len(line) for line in out.splitlines()) <= 100
    run1 = str(EXAMPLES / "h100-quick-run1.journal.jsonl")
    assert main(["add", str(db), run1, "--started", "2026-11-24T12:40Z"]) == 0
    times = _times(db)
    assert times["h100-quick-run1"] == ("2026-11-24T12:40:00.000000Z", "started")
    assert times["h100-detr"][1] == "added"
    with closing_store(db, readonly=True) as store:
        order = list(store.runs()["label"])
    assert order[:4] == ["h100-quick-run1", "h100-quick", "h100-quick-v2-part1", "h100-quick-v2-part2"]
    with pytest.raises(SystemExit) as exit_:
        main(["add", str(db), str(EXAMPLES / "h100-yolo.json"), "--started", "yesterday"])
    assert exit_.value.code == 2 and "--started must be an ISO time" in capsys.readouterr().err


def test_a_method_change_starts_a_new_series_and_is_said_so(tmp_path):
    """h100-quick (isolation process, measured until stable) then v2 (isolation model, rounds): SSDlite went from 67
    to 41 img/s. Not a regression, not one band: a step whose cause is the method."""
    db = tmp_path / "history.db"
    assert main(["add", str(db), *(str(EXAMPLES / name) for name in NOVEMBER)]) == 0
    with closing_store(db, readonly=True) as store:
        methods = store.conn.execute("SELECT label, method, env_key FROM runs ORDER BY run_at").fetchall()
        steps = steps_table(store)
        moves = largest_moves(store, 0.05)
        bands = store.frame("SELECT * FROM bands WHERE cell_id = ?", (SSDLITE,))
    first, second = json.loads(methods[0][1]), json.loads(methods[1][1])
    assert (first["isolation"], second["isolation"]) == ("process", "model")
    assert methods[0][2] != methods[1][2]  # another method: another band
    assert len(bands) == 2 and set(bands["runs"]) == {1}  # one band per method, never shared
    step = steps[steps["cell_id"] == SSDLITE].iloc[0]
    assert step["cause"] == "method changed" and "isolation process -> model" in step["software"]
    move = moves[moves["cell_id"] == SSDLITE].iloc[0]
    assert move["verdict"] == "method changed" and move["change"] == pytest.approx(-0.39, abs=0.01)


def test_the_band_printed_is_the_band_judged():
    band = analysis.noise_band([100.0, 96.0, 104.0, 99.0, 101.0, 98.5, 102.0])
    assert band is not None and band.low is not None and band.high is not None
    low, high = band.low / band.level - 1, band.high / band.level - 1
    assert abs(low) < high  # symmetric in log throughput: the edges are not
    text = band.text()
    assert text == f"{low:+.1%}/{high:+.1%}"
    just_outside = band.low * 0.999
    verdict = analysis.judge(just_outside, band, 0.0)
    assert verdict.verdict == analysis.REGRESSION and text in verdict.reason
    assert analysis.judge(band.low * 1.001, band, 0.0).verdict == analysis.UNCHANGED


def test_an_add_recomputes_only_the_series_it_touches(tmp_path, monkeypatch):
    files = write_history(tmp_path, 5, 8, 0)
    db = tmp_path / "history.db"
    assert main(["add", str(db), *map(str, files[:-1])]) == 0
    data = json.loads(files[-1].read_text())
    data["benchmarks"] = data["benchmarks"][:1]  # a run of one cell
    files[-1].write_text(json.dumps(data))
    seen: list[tuple[str, str]] = []
    real = derive.refresh_series
    monkeypatch.setattr(derive, "refresh_series", lambda conn, m, c: (seen.append((m, c)), real(conn, m, c)))
    assert main(["add", str(db), str(files[-1])]) == 0
    assert seen == [("NVIDIA H100 80GB HBM3", data["benchmarks"][0]["extra_info"]["detbench"]["cell_id"])]
    assert len(CELLS) > 1


def test_a_schema_1_store_is_migrated(tmp_path):
    db = tmp_path / "history.db"
    db.write_bytes(gzip.decompress(V1_STORE.read_bytes()))
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT version FROM detbench_schema").fetchone() == (1,)
    conn.execute("UPDATE sources SET path = ? || '/' || replace(path, rtrim(path, replace(path, '/', '')), '')",
                 (str(EXAMPLES),))  # the files where they were added from, in this checkout
    conn.commit()
    before = conn.execute("SELECT COUNT(*) FROM cells").fetchone()
    conn.close()
    assert main(["migrate", str(db)]) == 0
    times = _times(db)
    assert times["h100-quick-v2-part1"] == ("2026-11-27T17:15:45.000000Z", "started")  # from its header
    assert times["h100-detr"][1] == "added"
    with closing_store(db, readonly=True) as store:
        assert store.conn.execute("SELECT version FROM detbench_schema").fetchone() == (SCHEMA_VERSION,)
        assert store.conn.execute("SELECT COUNT(*) FROM cells").fetchone() == before
        steps = steps_table(store)
    ssdlite = steps[steps["cell_id"] == SSDLITE]
    assert list(ssdlite["cause"]) == ["method changed"]
    assert main(["add", str(db), str(EXAMPLES / "h100-yolo.json")]) == 0  # and it takes new runs


def test_alerts_list_the_open_step_with_its_interval(tmp_path, capsys):
    stepped = next(iter(CELLS))
    files = write_history(tmp_path, 11, stepped=(stepped,))
    db = tmp_path / "history.db"
    assert main(["add", str(db), *map(str, files)]) == 0
    with closing_store(db, readonly=True) as store:
        alerts = open_alerts(store)
    assert list(alerts["cell_id"]) == [stepped.id] and list(alerts["kind"]) == ["step"]
    assert alerts.iloc[0]["first_run"].endswith("nightly-seed11-20") and alerts.iloc[0]["change"] < -0.05
    capsys.readouterr()
    assert main(["alerts", str(db)]) == 0
    out = capsys.readouterr().out
    assert f"{stepped.id} on NVIDIA H100 80GB HBM3\n  step -" in out and "1 open alert" in out
    assert max(len(line) for line in out.splitlines()) <= 100


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_pipe_ends_quietly(tmp_path, monkeypatch, capsys):
    db = tmp_path / "history.db"
    shutil.copy(EXAMPLES / "h100-yolo.json", tmp_path / "run.json")
    assert main(["add", str(db), str(tmp_path / "run.json")]) == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.stdout", _ClosedPipe())
    assert main(["info", str(db)]) == 0  # `detbench-history info DB | head -1`: no traceback


@pytest.mark.timing
def test_an_add_to_a_generated_store_stays_under_a_second(tmp_path):
    """A small twin of ``python -m detbench.reports.history.generate`` (the 3,000-run figure in docs/history.md): 40
    runs of 15 cells, then one more run added and timed as ``detbench-history add`` does it."""
    import numpy as np

    from detbench.reports.history import generate

    rng = np.random.default_rng(1)
    template = generate.template_run(generate.TEMPLATE, 15)
    db = tmp_path / "history.db"
    generate.fill(db, template, 40, rng)
    (seconds,) = generate.time_adds(db, template, 40, 40, 1, rng)
    assert seconds < 1.0
