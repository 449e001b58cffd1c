from __future__ import annotations

import pytest

from detbench.bench.core.advice import advise_runs
from detbench.reports import plots
from detbench.reports.columns import with_speedup
from detbench.reports.html import ReportData, render
from detbench.reports.load import load_runs, tidy


def _frame(run_file, **kwargs):
    kwargs = {"models": ["retinanet_resnet50_fpn"], "modes": ("train",), "batch_sizes": (8,), **kwargs}
    return with_speedup(tidy(load_runs([(None, run_file("a.json", **kwargs))])))


def test_efficiency_is_computed_from_the_one_gpu_cell_of_the_same_configuration(run_file):
    frame = _frame(run_file, gpu_counts=(1, 2, 4))
    table = plots.scaling_table(frame)
    assert sorted(table["gpus"].unique()) == [2, 4]
    one = frame[frame["gpus"] == 1].set_index("variant")["throughput_ips"]
    for row in table.to_dict("records"):
        assert row["throughput_1gpu"] == pytest.approx(one[row["variant"]])
        assert row["scaling_efficiency"] == pytest.approx(row["throughput_ips"] / (row["gpus"] * one[row["variant"]]))
        assert row["efficiency_source"] == "1-GPU cell of this run"


def test_a_recorded_efficiency_wins_and_needs_no_one_gpu_cell(run_file):
    frame = _frame(run_file, gpu_counts=(2,))
    assert plots.scaling_table(frame).empty  # no 1-GPU twin, nothing recorded
    frame = frame.assign(scaling_efficiency=0.87)
    table = plots.scaling_table(frame)
    assert len(table) == (frame["status"] == "ok").sum()
    assert (table["scaling_efficiency"] == 0.87).all() and (table["efficiency_source"] == "recorded by the run").all()


def test_scaling_figure_draws_throughput_and_efficiency(run_file):
    fig = plots.scaling(_frame(run_file, gpu_counts=(1, 2)))
    assert fig is not None and fig.data_uri.startswith("data:image/png;base64,")
    assert plots.scaling(_frame(run_file)) is None  # one GPU only


@pytest.mark.parametrize(
    "value",
    [
        [10.0, 12.5, 11.0],
        [{"rank": 0, "median_ms": 10.0}, {"rank": 1, "median_ms": 12.5}, {"rank": 2, "median_ms": 11.0}],
        [{"rank": 0, "step_ms_median": 10.0}, {"rank": 1, "step_ms_median": 12.5}, {"rank": 2, "step_ms_median": 11.0}],
    ],
)
def test_rank_spread_reads_numbers_or_records(run_file, value):
    frame = _frame(run_file, gpu_counts=(3,))
    frame = frame.assign(rank_step_ms=[value if s == "ok" else None for s in frame["status"]], comm_wait_share=0.2)
    spread = plots.rank_spread(frame)
    assert len(spread) == (frame["status"] == "ok").sum()
    row = spread.iloc[0]
    assert (row["ranks"], row["fastest_ms"], row["median_ms"], row["slowest_ms"], row["slowest_rank"]) == (
        3, 10.0, 11.0, 12.5, 1
    )
    assert row["spread"] == pytest.approx(0.25) and row["comm_wait_share"] == 0.2


def test_rank_spread_is_empty_without_per_rank_figures(run_file):
    frame = _frame(run_file, gpu_counts=(2,))
    assert plots.rank_spread(frame).empty
    assert plots.rank_spread(frame.assign(rank_step_ms="garbage")).empty


def test_scaling_section_shows_the_rank_table_only_when_cells_carry_ranks(run_file):
    frame = _frame(run_file, gpu_counts=(1, 2))
    path = run_file("b.json", models=["retinanet_resnet50_fpn"], modes=("train",), batch_sizes=(8,))
    runs = load_runs([(None, path)])

    def page(f):
        return render(ReportData("t", runs, f, advise_runs(runs), [], "v", 0.05))

    plain = page(frame)
    assert 'id="scaling"' in plain and 'id="scaling-table"' in plain and 'id="rank-table"' not in plain
    ranked = page(frame.assign(rank_step_ms=[[10.0, 11.0] if g == 2 else None for g in frame["gpus"]]))
    assert 'id="rank-table"' in ranked and "Per-rank step time" in ranked
    assert "all-reduce wait" not in ranked  # no cell measured it
