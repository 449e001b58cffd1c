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


def _frame(run_file, **kwargs):
    return with_speedup(tidy(load_runs([(None, run_file("a.json", **kwargs))])))


def _with_ratios(frame, favour: str):
    """Paired ratios as the engine writes them: speedup over eager FP32 with a spread; ``favour`` wins the pairing
    although the cells' throughputs say otherwise."""
    ratio = frame["speedup_vs_eager_fp32"].where(frame["variant"] != favour, 5.0)
    return frame.assign(ratio=ratio, ratio_q1=ratio * 0.98, ratio_q3=ratio * 1.02)


def test_paired_ratios_rank_the_variants_and_carry_their_spread(run_file):
    # batch 64 would OOM eager FP32, leaving no baseline to pair with
    frame = _frame(run_file, models=["retinanet_resnet50_fpn"], modes=("infer",), batch_sizes=(1, 8))
    frame = _with_ratios(frame, "eager/amp-bf16")
    rec = recommend(frame)
    assert len(rec) == 1
    row = rec.iloc[0]
    assert row["variant"] == "eager/amp-bf16" and row["paired"]
    assert row["gain_over_eager_fp32"] == pytest.approx(5.0) and row["ratio_q1"] == pytest.approx(4.9)
    assert "(not paired" not in row["note"]
    # the throughput winner at that batch is the runner-up, its ratio quoted with the spread
    assert row["runner_up"].startswith("compiled/amp-fp16: ") and "× (" in row["runner_up"]


def test_without_ratios_throughput_ranks_and_the_row_says_it_was_not_paired(run_file):
    rec = recommend(_frame(run_file, models=["retinanet_resnet50_fpn"], modes=("infer",)))
    assert list(rec["paired"]) == [False]
    assert "(not paired: cells timed apart)" in rec.iloc[0]["note"]


def test_one_pick_per_gpu_count(run_file):
    frame = _frame(run_file, models=["retinanet_resnet50_fpn"], modes=("infer",), gpu_counts=(1, 2, 4))
    rec = recommend(frame)
    assert sorted(rec["gpus"]) == [1, 2, 4]
    for row in rec.to_dict("records"):
        assert frame.set_index("cell_id").loc[row["cell_id"], "gpus"] == row["gpus"]


def test_what_was_not_tried_and_what_failed_are_named(run_file):
    frame = _frame(run_file, models=["retinanet_resnet50_fpn", "fcos_resnet50_fpn"], batch_sizes=(2,), modes=("infer",))
    # fcos compiled/amp-bf16 at batch 2 errors in the synthetic results; drop retinanet's eager/amp-fp16 cell
    frame = frame[~((frame["model"] == "retinanet_resnet50_fpn") & (frame["variant"] == "eager/amp-fp16"))]
    rec = recommend(frame).set_index("model")
    assert rec.loc["fcos_resnet50_fpn", "not_tried"] == "compiled/amp-bf16 (error)"
    assert rec.loc["retinanet_resnet50_fpn", "not_tried"] == "eager/amp-fp16 (not tried)"


def test_a_group_where_nothing_ran_ok_gets_a_row_saying_so(run_file):
    frame = _frame(run_file, models=["retinanet_resnet50_fpn"], batch_sizes=(64,), modes=("train",))
    rec = recommend(frame)
    assert len(rec) == 1 and rec.iloc[0]["note"] == "no variant ran ok"
    assert "eager/fp32 bs64 (oom)" in rec.iloc[0]["not_tried"]


def test_ratios_without_an_ok_baseline_fall_back_to_throughput_and_say_so(run_file):
    # at batch 64 eager FP32 OOMs, so the engine has no baseline to pair the other variants with
    frame = _with_ratios(_frame(run_file, models=["retinanet_resnet50_fpn"], modes=("infer",), batch_sizes=(64,)), "x")
    row = recommend(frame).iloc[0]
    assert not row["paired"] and row["ratio"] is None
    assert "eager fp32 at this batch size: oom" in row["note"] and "(not paired: cells timed apart)" in row["note"]
    assert row["not_tried"] == "compiled/fp32 (oom), eager/fp32 (oom)"
