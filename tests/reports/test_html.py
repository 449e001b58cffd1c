from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser

from detbench.bench.core.advice import advise_runs
from detbench.reports import columns
from detbench.reports.cli import main
from detbench.reports.columns import with_speedup
from detbench.reports.html import ReportData, render, script_json
from detbench.reports.load import load_runs, tidy
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


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside each <script>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def test_templates_autoescape_text_attributes_and_the_telemetry_json(tmp_path):
    reason = 'boom <script>alert("r")</script> " onmouseover="alert(4)'
    results = _evil_results()
    for r in results:
        if r.status != "ok":
            r.reason = reason
        r.environment = dict(r.environment or {}, image='img"><script>alert(5)</script>')
    runs = load_runs([(None, write_benchmark_json(tmp_path / "evil.json", results))])
    frame = with_speedup(tidy(runs))
    page = render(ReportData("t", runs, frame, advise_runs(runs), [], "VERDICT: nothing to compare", 0.05))

    parser = _Tags()
    parser.feed(page)
    # no element or attribute came from the data: only our two scripts, no event handlers anywhere
    assert [t for t, _ in parser.tags].count("script") == 2
    assert not [a for _, attrs in parser.tags for a in attrs if a.startswith("on")]
    assert not [a for t, attrs in parser.tags if t == "img" for a in attrs if a not in ("alt", "src")]
    # the values still read back intact as text and attribute values
    assert reason in html.unescape(page) and 'img"><script>alert(5)</script>' in html.unescape(page)
    assert any(attrs.get("value", "").startswith(EVIL_MODEL) for t, attrs in parser.tags if t == "option")
    # "</script>" in a device name cannot close the telemetry <script>: its whole text is the JSON
    payload = json.loads(parser.scripts[0])
    assert {d["name"] for cell in payload.values() for d in cell["devices"]} == {EVIL_DEVICE}


def test_html_table_and_markdown_table_come_from_one_column_spec(tmp_path, run_file):
    runs = load_runs([(None, run_file("a.json"))])
    frame = with_speedup(tidy(runs))
    page = render(ReportData("t", runs, frame, advise_runs(runs), [], "v", 0.05))
    heads = re.search(r'<table class="sortable" id="failures-table"><thead><tr>(.*?)</tr>', page).group(1)
    assert re.findall(r'data-col="([^"]+)"', heads) == [c.key for c in columns.FAILURES]
    md = columns.markdown_table(columns.FAILURES, frame[frame["status"] != "ok"].to_dict("records"))
    assert md[0] == "| " + " | ".join(c.title for c in columns.FAILURES) + " |"


def test_speedup_column_is_the_quotient_to_eager_fp32_at_the_same_batch(run_file):
    frame = with_speedup(tidy(load_runs([(None, run_file("a.json"))])))
    eager = frame[(frame["variant"] == "eager/fp32") & (frame["status"] == "ok")]
    assert (eager["speedup_vs_eager_fp32"] == 1.0).all()
    amp = frame[(frame["variant"] == "eager/amp-fp16") & frame["speedup_vs_eager_fp32"].notna()]
    assert not amp.empty and amp["speedup_vs_eager_fp32"].between(1.6, 2.1).all()
    assert frame.loc[frame["status"] != "ok", "speedup_vs_eager_fp32"].isna().all()
