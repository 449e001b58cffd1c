from __future__ import annotations

import json
import re

from reports.cli import main
from reports.html import script_json
from tests.reports.generate import make_results, write_benchmark_json

EVIL_MODEL = "<script>alert(1)</script>"
EVIL_HOST = '"><img src=x onerror=alert(2)>'
EVIL_DEVICE = "</script><script>alert(3)</script>"


def test_script_json_cannot_close_the_script_tag():
    text = script_json({"a": "</script><b>&", "b": "\u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><b>&", "b": "\u2028"}


def _evil_results():
    results = make_results(
        models=[EVIL_MODEL],
        batch_sizes=(1, 64),
        modes=("infer", "train"),
        series_points=5,
        environment={"hostname": EVIL_HOST},
    )
    for r in results:
        if r.status != "ok":
            r.reason = f"{r.reason} <b>bold</b> | pipe"
        for dev in (r.telemetry or {}).get("devices", []):
            dev["name"] = EVIL_DEVICE
    return results


def test_everything_from_a_result_file_is_escaped(tmp_path):
    path = write_benchmark_json(tmp_path / "evil.json", _evil_results())
    assert main([str(path), "--out", str(tmp_path / "out"), "--title", "<i>t</i>"]) == 0
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert EVIL_MODEL not in page and "alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # quotes are escaped too (as &#34;), so a value cannot leave an attribute either
    assert EVIL_HOST not in page and "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    assert EVIL_DEVICE not in page and "alert(3)" in page  # only as \u003c-escaped JSON
    assert "<b>bold</b>" not in page and "<i>t</i>" not in page
    # the only script elements are ours: the telemetry JSON and the page script
    assert len(re.findall(r"<script\b", page)) == 2
    summary = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    assert "<script>" not in summary and "<b>bold</b>" not in summary and "\\| pipe" in summary


def test_report_is_self_contained(tmp_path, run_file):
    out = tmp_path / "out"
    assert main([str(run_file("a.json")), "--out", str(out)]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) >= 5 and all(src.startswith("data:image/png;base64,") for src in images)
