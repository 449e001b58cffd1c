from __future__ import annotations

import pytest

from reports.load import load_runs, tidy
from reports.recommend import recommend, with_speedup


def test_recommends_the_fastest_ok_cell_per_detector_and_mode(run_file):
    frame = tidy(load_runs([(None, run_file("a.json"))]))
    rec = recommend(frame)
    assert set(zip(rec["model"], rec["mode"])) == set(zip(frame["model"], frame["mode"]))
    for row in rec.to_dict("records"):
        group = frame[(frame["model"] == row["model"]) & (frame["mode"] == row["mode"]) & (frame["status"] == "ok")]
        assert row["throughput_ips"] == pytest.approx(group["throughput_ips"].max())
        picked = frame.set_index("cell_id").loc[row["cell_id"]]
        assert picked["status"] == "ok"


def test_gain_is_against_eager_fp32_at_the_same_batch_and_compiled_picks_carry_break_even(run_file):
    frame = tidy(load_runs([(None, run_file("a.json"))]))
    rec = recommend(frame)
    for row in rec.to_dict("records"):
        if row["gain_over_eager_fp32"] is None or row["gain_over_eager_fp32"] != row["gain_over_eager_fp32"]:
            assert row["note"]
            continue
        base = frame.set_index("cell_id").loc[row["baseline_cell_id"]]
        assert base["batch_size"] == row["batch_size"] and base["variant"] == "eager/fp32"
        assert row["gain_over_eager_fp32"] == pytest.approx(row["throughput_ips"] / base["throughput_ips"])
        if row["variant"].startswith("compiled"):
            assert row["break_even_iterations"] > 0


def test_oom_baseline_is_explained(run_file):
    frame = tidy(load_runs([(None, run_file("a.json", models=["retinanet_resnet50_fpn"], batch_sizes=(64,)))]))
    rec = recommend(frame).set_index("mode")
    assert "eager fp32 at this batch size: oom" in rec.loc["infer", "note"]


def test_speedup_column(run_file):
    frame = with_speedup(tidy(load_runs([(None, run_file("a.json"))])))
    eager = frame[(frame["variant"] == "eager/fp32") & (frame["status"] == "ok")]
    assert (eager["speedup_vs_eager_fp32"] == 1.0).all()
    amp = frame[(frame["variant"] == "eager/amp-fp16") & frame["speedup_vs_eager_fp32"].notna()]
    assert not amp.empty and amp["speedup_vs_eager_fp32"].between(1.6, 2.1).all()
    assert frame.loc[frame["status"] != "ok", "speedup_vs_eager_fp32"].isna().all()
