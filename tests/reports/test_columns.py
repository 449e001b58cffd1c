from __future__ import annotations

import math

import pytest
from rich.console import Console

from detbench.reports import columns as C  # noqa: N812 - the same alias as reports/html.py


@pytest.mark.parametrize(
    ("fmt", "value", "text"),
    [
        (C.fmt_num, 1234.5, "1,234"),
        (C.fmt_num, 89.66, "89.7"),
        (C.fmt_num, 0.01234, "0.0123"),
        (C.fmt_num, math.nan, ""),
        (C.fmt_gib, 3 * 2**30, "3.00 GiB"),
        (C.fmt_pct, 0.123, "12.3%"),
        (C.fmt_signed_pct, -0.05, "-5.0%"),
        (C.fmt_ratio, 1.5, "1.50x"),
        (C.fmt_yes_no, False, "no"),
        (C.fmt_int, 8.0, "8"),
        (C.fmt_text, None, ""),
    ],
)
def test_formatters(fmt, value, text):
    assert fmt(value) == text


def test_ratio_spread_is_written_as_the_results_doc_writes_it():
    assert C.fmt_ratio_spread(1.5912, 1.58, 1.6) == "1.59× (1.58–1.60)"
    assert C.fmt_ratio_spread(0.87, None, None) == "0.87×"
    assert C.fmt_ratio_spread(None, 1, 2) == ""


def test_markdown_table_escapes_cells_and_aligns_numbers():
    rows = [{"run": "a|b", "cell_id": "<script>x</script>", "status": "oom", "reason": "line\nbreak"}]
    lines = C.markdown_table(C.FAILURES, rows)
    assert lines[0] == "| run | cell | status | reason |" and lines[1] == "|---|---|---|---|"
    assert lines[2] == "| a\\|b | &lt;script&gt;x&lt;/script&gt; | oom | line break |"
    num = C.markdown_table([C.Column("n", "n", C.fmt_num, "num")], [{"n": 2.0}])
    assert num[1] == "|---:|" and num[2] == "| 2.00 |"


def test_a_paired_gain_shows_its_spread_and_an_unpaired_one_its_quotient_or_why_there_is_none():
    from detbench.bench.core.advice import Gain

    gain = next(c for c in C.ADVICE if c.key == "gain_over_eager_fp32")
    paired = {"gain_over_eager_fp32": 1.2, "gain_text": C.gain_text(Gain(1.2, 1.1, 1.3, "interleaved"))}
    assert gain.text(paired) == "1.20× (1.10–1.30)" and gain.sort_key(paired) == "1.2"
    assert C.gain_text(Gain(1.5, basis="not interleaved")) == "1.50× (not interleaved)"
    assert C.gain_text(Gain(None, basis="eager fp32 at batch 8: oom")) == "eager fp32 at batch 8: oom"


def test_rich_table_has_the_same_columns_and_does_not_parse_markup():
    table = C.rich_table(C.FAILURES, [{"run": "[bold]r[/bold]", "cell_id": "c", "status": "ok", "reason": ""}])
    assert [col.header for col in table.columns] == [c.title for c in C.FAILURES]
    console = Console(width=120, record=True)
    console.print(table)
    assert "[bold]r[/bold]" in console.export_text()
