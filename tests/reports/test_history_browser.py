"""The committed example runs in one store, and the report's history section in headless Chromium: the script
runs without errors, the history tables are wired, every trend image decodes."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from detbench.reports.cli import main as report_main
from detbench.reports.history.cli import main as history_main
from tests.reports.test_browser import _chromium, self_test
from tests.reports.test_history_store import EXAMPLES, example_runs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# CI sets DETBENCH_REQUIRE_BROWSER=1 after installing chromium, so a missing browser fails there, not skips.
if CHROMIUM is None and os.environ.get("DETBENCH_REQUIRE_BROWSER") == "1":
    raise RuntimeError("DETBENCH_REQUIRE_BROWSER=1 but chromium is not installed (apt-get install -y chromium)")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)"
)


# injected into a copy of the report: at the window's width, does each history table fit its box?
MEASURE = """<script>window.addEventListener("load", function () {
  var out = [];
  document.querySelectorAll("#history .tablewrap").forEach(function (w) {
    var t = w.querySelector("table");
    out.push(t.id + ":" + t.scrollWidth + "/" + w.clientWidth);
  });
  document.body.setAttribute("data-fit", out.join(" "));
});</script></body>"""


HISTORY_ONLY = "<style>body > :not(#history) { display: none; }</style></head>"


def test_the_examples_history_renders_in_a_real_browser(tmp_path: Path):
    db = tmp_path / "history.db"
    assert history_main(["add", str(db), *map(str, example_runs())]) == 0
    out = tmp_path / "out"
    runs = [str(EXAMPLES / "h100-quick.json"), str(EXAMPLES / "h100-quick-run1.journal.jsonl")]
    assert report_main([*runs, "--history", str(db), "--out", str(out)]) in (0, 3)
    report = out / "report.html"
    html = report.read_text(encoding="utf-8")
    trends = len(re.findall(r'<figure class="trend" data-cell=', html))
    assert trends == 12

    body, dom = self_test(tmp_path, report)
    images = re.search(r'data-images="ok:(\d+)"', body)
    assert images and int(images.group(1)) >= 5, body  # every <img> decoded
    for table in ("history-judged-0", "history-judged-1", "history-moves", "history-steps"):
        assert re.search(rf'<table class="sortable" id="{table}" data-sortable="1"', dom.stdout), table
    assert not re.search(r"Uncaught|CONSOLE\(\d+\)\].*Error", dom.stderr), dom.stderr[-2000:]

    # at 1400 px the key tables fit their width: no sideways scrolling to reach change, band, verdict, what changed
    measured = tmp_path / "measured.html"
    measured.write_text(html.replace("</body>", MEASURE, 1), encoding="utf-8")
    fit = _chromium(tmp_path, "--virtual-time-budget=5000", "--window-size=1400,2000", "--dump-dom",
                    measured.resolve().as_uri())
    widths = re.search(r'data-fit="([^"]*)"', fit.stdout)
    assert widths, fit.stdout[:500]
    sizes = {name: tuple(map(int, size.split("/"))) for name, size in
             (item.split(":") for item in widths.group(1).split())}
    for table in ("history-moves", "history-steps"):
        scroll, client = sizes[table]
        assert scroll <= client, (table, sizes)

    # the history section alone at 1400 px (headless Chromium draws a blank page when asked for an anchor)
    alone = tmp_path / "history-alone.html"
    alone.write_text(html.replace("</head>", HISTORY_ONLY, 1), encoding="utf-8")
    shot = tmp_path / "history.png"
    result = _chromium(tmp_path, "--virtual-time-budget=5000", "--hide-scrollbars", "--window-size=1400,3000",
                       f"--screenshot={shot}", alone.resolve().as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("DETBENCH_SCREENSHOTS"):  # a folder to keep the screenshot in, to look at
        shutil.copy(shot, Path(os.environ["DETBENCH_SCREENSHOTS"]) / "history-1400.png")
