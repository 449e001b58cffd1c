"""``detbench-report --history DB``: the history section (trends, largest moves, steps, the runs against the bands),
everything from the store escaped, and the page unchanged without it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from detbench.reports.cli import main as report_main
from detbench.reports.history.cli import main as history_main
from tests.reports.test_history_steps import CELLS, write_history

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
STEPPED = next(iter(CELLS))


@pytest.fixture
def history(tmp_path) -> tuple[Path, list[Path]]:
    """A store with 30 nightly runs on an H100 (a 10 % step at run 20, where torch changed) and 12 on an H200."""
    (tmp_path / "h100").mkdir()
    (tmp_path / "h200").mkdir()
    h100 = write_history(tmp_path / "h100", 11, stepped=(STEPPED,))
    for path in h100[20:]:
        data = json.loads(path.read_text())
        data["machine_info"]["detbench_environment"]["torch"] = "2.12.0+cu130"
        for bench in data["benchmarks"]:
            bench["extra_info"]["detbench"]["environment"]["torch"] = "2.12.0+cu130"
        path.write_text(json.dumps(data))
    h200 = write_history(tmp_path / "h200", 12, 12, 0, environment={"gpu": "NVIDIA H200"}, start_day=15)
    db = tmp_path / "history.db"
    assert history_main(["add", str(db), *map(str, h100 + h200)]) == 0
    return db, h100


def _section(html: str) -> str:
    start = html.index('<section id="history">')
    return html[start: html.index("</section>", start)]


def test_the_history_section(tmp_path, history):
    db, h100 = history
    out = tmp_path / "out"
    assert report_main([str(h100[-1]), "--history", str(db), "--out", str(out)]) == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    assert '<a href="#history">History</a>' in html
    section = _section(html)
    assert "history.db: 42 runs" in section and "NVIDIA H100 80GB HBM3: 30 runs; NVIDIA H200: 12 runs" in section
    # the report's run against the bands: the last H100 run, judged on the 9 torch-2.12 runs before it
    assert "nightly-seed11-29 against the history bands" in section
    assert "bands stand on 9-9 same-environment runs" in section
    # the step, named at its first run, with the torch change
    steps = section[section.index('id="history-steps"'):]
    assert STEPPED.id in steps and "nightly-seed11-20" in steps and "torch 2.11.0+cu130 -&gt; 2.12.0+cu130" in steps
    assert 'id="history-moves"' in section and "NVIDIA H200" in section
    figures = re.findall(r'<figure class="trend" data-cell="([^"]+)">', section)
    assert sorted(figures) == sorted(c.id for c in CELLS)
    assert figures[0] == STEPPED.id  # a report cell with a step comes first
    trend = section[section.index(f'data-cell="{STEPPED.id}"'):].split("</figure>")[0]
    assert '<rect class="band"' in trend and '<path class="step"' in trend  # the band drawn, the step marked
    assert "torch 2.12.0+cu130" in trend  # the mark where torch changed, labelled
    assert "<title>nightly-seed11-20 (" in trend  # every point names its run
    # the key columns first: cell, change, band, verdict, what changed
    heads = re.findall(r'<th data-col="(\w+)"', section[section.index('id="history-moves"'):])[:5]
    assert heads == ["cell_id", "change", "band_text", "verdict", "software"]


def test_without_history_the_page_has_no_history(tmp_path, history):
    _, h100 = history
    out = tmp_path / "out"
    assert report_main([str(h100[-1]), "--out", str(out)]) == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="history"' not in html and "#history" not in html
    assert "</section>\n\n<section id=\"failures\">" in html  # the template's layout, as before


def test_store_text_is_escaped(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    files = write_history(folder, 3, 4, 0)
    hostile = '<script>alert("x")</script>'
    for path in files:
        data = json.loads(path.read_text())
        data["machine_info"]["detbench_environment"]["gpu"] = hostile
        for bench in data["benchmarks"]:
            bench["extra_info"]["detbench"]["environment"]["gpu"] = hostile
            bench["extra_info"]["detbench"]["cell"]["model"] = "<img src=x onerror=alert(1)>"
            bench["extra_info"]["detbench"]["cell_id"] = "ignored"
        path.write_text(json.dumps(data))
    db = tmp_path / "history.db"
    assert history_main(["add", str(db), *map(str, files)]) == 0
    out = tmp_path / "out"
    assert report_main([str(files[-1]), "--history", str(db), "--out", str(out)]) == 0
    section = _section((out / "report.html").read_text(encoding="utf-8"))
    assert "<script>" not in section and "<img src=x" not in section
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in section
    assert "&lt;img src=x onerror=alert(1)&gt;" in section


def test_a_bad_store_is_one_line_and_no_report(tmp_path, capsys):
    bad = tmp_path / "bad.db"
    bad.write_text("{}")
    out = tmp_path / "out"
    assert report_main([str(EXAMPLES / "h100-quick.json"), "--history", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "detbench-report: error: " in err and "not an SQLite database" in err
    assert not (out / "report.html").exists()
    assert report_main([str(EXAMPLES / "h100-quick.json"), "--history", str(tmp_path / "none.db"),
                        "--out", str(out)]) == 2
    assert "no such history store" in capsys.readouterr().err


def test_compare_says_in_the_store_only_for_a_stored_run_and_weak_only_when_a_cell_is(tmp_path, history, capsys):
    """``compare`` on a stored run says so; a file sharing one cell with a stored run is a new run (it used to be
    called "in the store"); the summary mentions weak verdicts only when a cell has one."""
    db, h100 = history
    capsys.readouterr()
    assert history_main(["compare", str(db), str(h100[-1])]) == 0
    out = capsys.readouterr().out
    assert "is in the store" in out and "weak:" not in out
    data = json.loads(h100[-1].read_text())
    for bench in data["benchmarks"][1:]:  # every cell but the first measured again
        bench["extra_info"]["detbench"]["throughput_ips"] *= 1.001
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps(data))
    assert history_main(["compare", str(db), str(mixed)]) == 0
    assert "is in the store" not in capsys.readouterr().out
