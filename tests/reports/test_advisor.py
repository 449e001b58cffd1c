"""The advice (detbench.bench.core.advice) as rendered: the report's HTML section and summary.md, recommendations.csv,
the terminal table of the run's closing summary, and ``python -m detbench.reports.advisor``. One set of rows, the same
words."""

from __future__ import annotations

import json

import pandas as pd

from detbench.bench.core.advice import INTERLEAVED, advise
from detbench.bench.core.schema import CellResult
from detbench.bench.plugin import display
from detbench.reports import columns as C  # noqa: N812 - the same alias as reports/html.py
from detbench.reports.advisor import goal_lines, main
from detbench.reports.cli import main as report_main
from tests.bench.core.test_advice import MODEL, cell, measured
from tests.reports.generate import write_journal


def _advice(run="run-a"):
    bad = CellResult(cell("compiled"), status="error", reason="<script>alert(1)</script> | pipe")
    return advise([measured(cell(), 100.0, ratio=(1, 1, 1)),
                   measured(cell("compiled", "amp-bf16"), 180.0, ratio=(1.8, 1.75, 1.86), compile_s=70.0,
                            break_even_iterations=1200.0, mfu=0.21, peak_memory_bytes=6 * 2**30),
                   measured(cell("eager", "amp-bf16"), 178.0, ratio=(1.78, 1.7, 1.8)),
                   bad], run=run)


def test_the_row_texts_quote_the_pick_its_paired_gain_and_a_tie():
    [row] = C.advice_rows(_advice())
    text = {c.key: c.text(row) for c in C.ADVICE}
    assert text["variant"] == "compiled/amp-bf16" and text["batch_size"] == "8" and text["throughput_ips"] == "180"
    assert text["gain_over_eager_fp32"] == "1.80× (1.75–1.86)" and row["gain_basis"] == INTERLEAVED
    assert text["peak_memory_bytes"] == "6.00 GiB" and text["mfu"] == "21.0%"
    assert text["break_even_iterations"] == "1,200 it" and text["compile_s"] == "70.0"
    assert text["runner_up"] == "eager/amp-bf16 bs8: 1.78× (1.70–1.80); a tie within the noise"
    assert "compiled/fp32 bs8 error: <script>" in text["failed"]


def test_gain_words_for_every_basis():
    base, unpaired, none = (C.gain_text(advise(r)[0].best.gain) for r in (
        [measured(cell(), 100.0)],
        [measured(cell(), 100.0), measured(cell("compiled"), 150.0, isolation="cell")],
        [measured(cell("compiled", batch=16), 150.0)]))
    assert (base, unpaired, none) == ("1.00× (baseline)", "1.50× (not interleaved)",
                                      "eager fp32 at batch 16: not measured")


def test_the_terminal_table_says_what_the_report_says():
    advice = _advice() + advise([CellResult(cell(gpus=2), status="timeout", reason="killed")], run="run-a")
    rows = C.advice_rows(advice)
    shared = {"detector": "model", "use": "variant", "vs eager fp32": "gain_over_eager_fp32",
              "runner-up": "runner_up", "break-even": "break_even_iterations", "not tried": "not_tried",
              "failed (reason)": "failed", "notes": "notes"}
    titles = [name for name, _ in display.ADVICE_COLUMNS]
    columns = {c.key: c for c in C.ADVICE}
    for item, row in zip(advice, rows):
        cells = dict(zip(titles, display.advice_cells(item)))
        for title, key in shared.items():
            report = columns[key].text(row)
            assert cells[title] == report or (cells[title] == "-" and report == ""), (title, cells[title], report)
    text = display.render(display.advice_table(advice), color=False, width=400)
    assert "compiled/amp-bf16" in text and "1.80× (1.75–1.86)" in text and "nothing ran ok" in text


def test_renderers_escape_what_comes_from_result_files(tmp_path):
    path = write_journal(tmp_path / "run.jsonl", [
        measured(cell(), 100.0, ratio=(1, 1, 1)),
        CellResult(cell("compiled"), status="error", reason="<script>alert(1)</script> | pipe")])
    assert report_main([str(path), "--out", str(tmp_path / "out")]) == 0
    page = (tmp_path / "out" / "report.html").read_text()
    section = page.split('<section id="recommend">')[1].split("</section>")[0]
    assert "<script>alert" not in section and "&lt;script&gt;alert(1)&lt;/script&gt;" in section
    summary = (tmp_path / "out" / "summary.md").read_text()
    advice_md = summary.split("### What should I use?")[1]
    assert "\\| pipe" in advice_md and "<script>" not in advice_md
    text = display.render(display.advice_table(advise([CellResult(cell(), status="error", reason="[bold]x[/bold]")])),
                          color=False, width=300)
    assert "[bold]x[/bold]" in text  # rich markup in a reason is shown, not interpreted


def test_detbench_report_shows_one_advice_table_in_html_markdown_and_csv(tmp_path):
    bad = CellResult(cell("reduce-overhead", "amp-bf16"), status="error", reason="CUDA graphs: <nonzero> in NMS")
    path = write_journal(tmp_path / "run.jsonl", [measured(cell(), 100.0, ratio=(1, 1, 1)),
                                                  measured(cell("compiled", "amp-bf16"), 180.0, ratio=(1.8, 1.7, 1.9)),
                                                  bad])
    assert report_main([str(path), "--out", str(tmp_path / "out")]) == 0
    page = (tmp_path / "out" / "report.html").read_text()
    assert 'href="#recommend"' in page and 'id="advisor"' in page and 'id="advice-table"' in page
    assert page.count("What should I use?") == 2 and "Advisor" not in page  # the nav link and the heading
    assert "1.80× (1.70–1.90)" in page and "paired ratio" in page
    assert "CUDA graphs: &lt;nonzero&gt; in NMS" in page and "<nonzero>" not in page
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert summary.count("### What should I use?") == 1 and "Advisor" not in summary
    assert "| compiled/amp-bf16 |" in summary and "| run |" in summary  # the runs table; one run: no run column
    csv = pd.read_csv(tmp_path / "out" / "recommendations.csv")
    assert list(csv["variant"]) == ["compiled/amp-bf16"] and csv.loc[0, "gain_basis"] == INTERLEAVED
    assert csv.loc[0, "gain_over_eager_fp32"] == 1.8 and bool(csv.loc[0, "paired"])


def test_the_command_line_prints_the_table_writes_json_and_names_the_config_to_trace(tmp_path, capsys):
    path = write_journal(tmp_path / "tune.journal.jsonl", [
        measured(cell(), 100.0, ratio=(1, 1, 1)),
        measured(cell("compiled", "amp-bf16"), 180.0, ratio=(1.8, 1.7, 1.9))])
    assert main([str(path), "--json", str(tmp_path / "advice.json")]) == 0
    out = capsys.readouterr().out
    assert "compiled/amp-bf16" in out and "1.80× (1.70–1.90)" in out
    [advice] = json.loads((tmp_path / "advice.json").read_text())
    assert advice["ranked"][0]["gain"]["basis"] == INTERLEAVED
    assert advice["display"]["gain_over_eager_fp32"] == "1.80× (1.70–1.90)"
    assert main([str(path), "--short"]) == 0
    assert "runner-up" not in capsys.readouterr().out
    assert main([str(path), "--trace-args", MODEL]) == 0
    assert capsys.readouterr().out.split() == ["--model", MODEL, "--mode", "infer", "--compile", "default",
                                               "--precision", "amp-bf16", "--batch-size", "8",
                                               "--memory-format", "contiguous"]
    assert main([str(path), "--trace-args", "ssd300_vgg16"]) == 2
    assert main([str(tmp_path / "missing.json")]) == 2


def test_the_goal_line_says_how_close_the_best_inference_came():
    advice = advise([measured(cell(), 100.0), measured(cell("compiled", "amp-bf16"), 186.0)])
    assert goal_lines(advice, {MODEL: 310.0}) == [
        f"{MODEL}: best 186.0 img/s (compiled/amp-bf16, batch 8) = 60% of the goal 310 img/s"]
    assert "not assessed" in goal_lines(advice, {"fcos_resnet50_fpn": 310.0})[0]
