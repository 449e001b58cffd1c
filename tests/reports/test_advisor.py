"""The advisor's ranking and wording over synthetic cell results: the fastest configuration, its gain over eager
FP32 (paired when one worker timed both, else marked), failures with their reason, and what was not tried."""

from __future__ import annotations

from bench.progress import render
from bench.schema import BlockRecord, Cell, CellResult, Measurement, PairedRatio
from reports.advisor import (
    INTERLEAVED,
    NOT_INTERLEAVED,
    advise,
    fmt_gain,
    html_section,
    markdown_lines,
    row,
    terminal_table,
)

MODEL = "retinanet_resnet50_fpn"


def cell(compile_mode="eager", precision="fp32", batch=8, mode="infer", gpus=1):
    return Cell(MODEL, mode, compile_mode, precision, batch, gpus)


def measured(c, ips, *, ratio=None, group="g", isolation="model", attempt=1, **extra):
    """An ok result with two blocks; ``ratio`` = (median, q1, q3) against eager fp32 at the same batch."""
    batch = extra["batch_search"].largest_fit if c.searches_batch else c.batch_size
    blocks = [BlockRecord(round=i, median_ms=batch * 1000 / ips, iterations=5, host_canary_ms=1.0,
                          start_offset_s=float(i)) for i in range(2)]
    m = Measurement(timer="cuda-events", iterations=10, timed_s=1.0, isolation=isolation, blocks=blocks,
                    group=group, worker_attempt=attempt)
    base = Cell(c.model, c.mode, "eager", "fp32", batch, c.gpus)
    paired = PairedRatio(base.id, *ratio) if ratio else None
    return CellResult(c, status="ok", throughput_ips=ips, measurement=m, ratio=paired, **extra)


def test_the_fastest_configuration_wins_across_batch_sizes_with_its_paired_gain():
    results = [measured(cell(batch=8), 100.0, ratio=(1, 1, 1)),
               measured(cell("compiled", "amp-bf16", 8), 180.0, ratio=(1.8, 1.75, 1.86), compile_s=70.0,
                        break_even_iterations=1200.0, mfu=0.21, peak_memory_bytes=6 * 2**30),
               measured(cell(batch=16), 110.0, ratio=(1, 1, 1)),
               measured(cell("eager", "amp-bf16", 16), 150.0, ratio=(1.36, 1.3, 1.4))]
    [item] = advise(results)
    best = item.best
    assert best.configuration == "compiled/amp-bf16" and best.batch_size == 8 and best.throughput_ips == 180.0
    assert (best.gain.value, best.gain.q1, best.gain.q3, best.gain.basis) == (1.8, 1.75, 1.86, INTERLEAVED)
    assert (best.compile_s, best.break_even_iterations, best.mfu) == (70.0, 1200.0, 0.21)
    assert [c.throughput_ips for c in item.ranked] == [180.0, 150.0, 110.0, 100.0]
    text = row(item)
    assert text["gain"] == "×1.80 (1.75–1.86)" and text["peak GiB"] == "6.00" and text["MFU"] == "21.0%"
    assert text["break-even"] == "1200 it" and text["runner-up"].startswith("eager/amp-bf16 bs16")


def test_a_gain_against_a_baseline_timed_by_another_worker_is_marked_not_interleaved():
    for kwargs in (dict(isolation="cell"), dict(attempt=2), dict(group="other")):
        base = measured(cell(), 100.0, ratio=(1, 1, 1))
        fast = measured(cell("compiled"), 150.0, ratio=(1.5, 1.4, 1.6), **kwargs)
        if kwargs.get("isolation") == "cell":
            base = measured(cell(), 100.0, ratio=(1, 1, 1), isolation="cell")
        gain = advise([base, fast])[0].best.gain
        assert (gain.value, gain.q1, gain.basis) == (1.5, None, NOT_INTERLEAVED), kwargs
        assert fmt_gain(gain) == "×1.50 (not interleaved)"


def test_no_gain_without_an_ok_eager_fp32_at_the_same_batch_and_the_reason_says_why():
    lone = advise([measured(cell("compiled", batch=16), 150.0)])[0].best.gain
    assert lone.value is None and lone.basis == "eager fp32 at batch 16: not measured"
    oom_base = CellResult(cell(batch=16), status="oom", reason="CUDA out of memory")
    gain = advise([measured(cell("compiled", batch=16), 150.0), oom_base])[0].best.gain
    assert gain.value is None and gain.basis == "eager fp32 at batch 16: oom"


def test_failed_configurations_are_listed_with_their_reason_and_never_picked():
    graphs = CellResult(cell("compiled", "amp-bf16"), status="error",
                        reason="RuntimeError: CUDA graphs: data-dependent output shapes in batched_nms",
                        throughput_ips=999.0)
    item = advise([measured(cell(), 100.0, ratio=(1, 1, 1)), graphs,
                   CellResult(cell(batch=64), status="oom", reason="CUDA out of memory. Tried to allocate 9 GiB")])[0]
    assert item.best.configuration == "eager/fp32"
    assert [(f.configuration, f.batch_size, f.status) for f in item.failures] == [
        ("compiled/amp-bf16", 8, "error"), ("eager/fp32", 64, "oom")]
    assert "data-dependent output shapes" in row(item)["failed"]


def test_axis_values_the_run_did_not_try_are_named():
    item = advise([measured(cell(), 100.0), measured(cell("eager", "amp-bf16"), 140.0)])[0]
    assert item.not_tried == ["compile: default, max-autotune, reduce-overhead, max-autotune-no-cudagraphs",
                              "precision: amp-fp16", "memory format: channels_last", "batch: max"]
    tried = advise([measured(cell(), 100.0), measured(Cell(MODEL, "infer", "eager", "fp32", 8,
                                                          memory_format="channels_last"), 110.0)])[0]
    assert "memory format: channels_last" not in tried.not_tried


def test_overlapping_paired_ranges_make_the_runner_up_a_tie_and_separate_ones_do_not():
    base = measured(cell(), 100.0, ratio=(1, 1, 1))
    tie = advise([base, measured(cell("compiled"), 151.0, ratio=(1.51, 1.45, 1.56)),
                  measured(cell("eager", "amp-bf16"), 150.0, ratio=(1.50, 1.47, 1.53))])[0]
    assert tie.tie and "tie within the noise" in row(tie)["runner-up"]
    clear = advise([base, measured(cell("compiled"), 151.0, ratio=(1.51, 1.49, 1.56)),
                    measured(cell("eager", "amp-bf16"), 120.0, ratio=(1.2, 1.18, 1.22))])[0]
    assert not clear.tie


def test_one_advice_per_detector_mode_and_gpu_count_and_a_group_with_nothing_ok_says_so():
    results = [measured(cell(), 100.0), measured(cell(mode="train", batch=4), 20.0),
               CellResult(cell(gpus=2), status="timeout", reason="killed after 600 s without progress")]
    advice = advise(results, run="r1")
    assert [(a.mode, a.gpus) for a in advice] == [("infer", 1), ("infer", 2), ("train", 1)]
    nothing = advice[1]
    assert nothing.best is None and row(nothing)["best"] == "nothing ran ok" and nothing.failures[0].status == "timeout"


def test_renderers_escape_what_comes_from_result_files():
    bad = CellResult(cell("compiled"), status="error", reason="<script>alert(1)</script> | pipe")
    advice = advise([measured(cell(), 100.0, ratio=(1, 1, 1)), bad], run="run-a")
    html = html_section(advice, with_run=True)
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    md = "\n".join(markdown_lines(advice, with_run=True))
    assert "\\| pipe" in md and md.count("\n") == 2 and "run-a" in md
    text = render(terminal_table(advice), color=False, width=240)
    assert "eager/fp32" in text and "100.0" in text


def test_the_command_line_prints_the_table_writes_json_and_names_the_config_to_trace(tmp_path, capsys):
    import json

    from reports.advisor import main
    from tests.reports.generate import write_journal

    path = write_journal(tmp_path / "tune.journal.jsonl", [
        measured(cell(), 100.0, ratio=(1, 1, 1)),
        measured(cell("compiled", "amp-bf16"), 180.0, ratio=(1.8, 1.7, 1.9))])
    assert main([str(path), "--json", str(tmp_path / "advice.json")]) == 0
    assert "compiled/amp-bf16" in capsys.readouterr().out
    [advice] = json.loads((tmp_path / "advice.json").read_text())
    assert advice["ranked"][0]["gain"]["basis"] == INTERLEAVED and advice["display"]["gain"] == "×1.80 (1.70–1.90)"
    assert main([str(path), "--trace-args", MODEL]) == 0
    assert capsys.readouterr().out.split() == ["--model", MODEL, "--mode", "infer", "--compile", "default",
                                               "--precision", "amp-bf16", "--batch-size", "8",
                                               "--memory-format", "contiguous"]
    assert main([str(path), "--trace-args", "ssd300_vgg16"]) == 2
    assert main([str(tmp_path / "missing.json")]) == 2


def test_the_goal_line_says_how_close_the_best_inference_came():
    from reports.advisor import goal_lines

    advice = advise([measured(cell(), 100.0), measured(cell("compiled", "amp-bf16"), 186.0)])
    assert goal_lines(advice, {MODEL: 310.0}) == [
        f"{MODEL}: best 186.0 img/s (compiled/amp-bf16, batch 8) = 60% of the goal 310 img/s"]
    assert "not assessed" in goal_lines(advice, {"fcos_resnet50_fpn": 310.0})[0]


def test_cuda_graph_fallbacks_recompilations_and_the_batch_boundary_are_noted():
    from bench.schema import BatchProbe, BatchSearch, CompileDetails

    graphs = measured(Cell(MODEL, "infer", "reduce-overhead", "amp-bf16", 8, memory_format="channels_last"), 150.0,
                      compile_s=80.0, compile_details=CompileDetails("reduce-overhead", 1, 2,
                                                                     "skipping cudagraphs due to data dependent ops"))
    search = BatchSearch(8, 512, 0.25, largest_fit=96, smallest_oom=112, stop_reason="boundary within 25%",
                         probes=[BatchProbe(b, "ok" if b <= 96 else "oom") for b in (8, 16, 32, 64, 128, 96, 112)])
    biggest = measured(Cell(MODEL, "infer", "eager", "amp-bf16", "max", memory_format="channels_last"), 170.0,
                       batch_search=search)
    item = advise([measured(cell(), 100.0, ratio=(1, 1, 1)), graphs, biggest])[0]
    assert item.best.cell_id == biggest.cell.id and item.best.batch_size == 96
    assert item.best.gain.value is None and item.best.gain.basis == "eager fp32 at batch 96: not measured"
    assert item.notes == [
        "compiled-reduce-overhead/amp-bf16/channels_last bs8: CUDA graphs skipped for 2 graph(s) (skipping cudagraphs "
        "due to data dependent ops)",
        "compiled-reduce-overhead/amp-bf16/channels_last bs8: 1 recompilation(s) after the first call",
        "eager/amp-bf16/channels_last bsmax: 96 fits, 112 runs out of memory (7 probes; boundary within 25%)"]
    assert "batch: max" not in item.not_tried and "CUDA graphs skipped" in row(item)["notes"]


def test_detbench_report_shows_the_advisor_in_html_and_markdown(tmp_path):
    from reports.cli import main
    from tests.reports.generate import write_journal

    bad = CellResult(cell("reduce-overhead", "amp-bf16"), status="error", reason="CUDA graphs: <nonzero> in NMS")
    path = write_journal(tmp_path / "run.jsonl", [measured(cell(), 100.0, ratio=(1, 1, 1)),
                                                  measured(cell("compiled", "amp-bf16"), 180.0, ratio=(1.8, 1.7, 1.9)),
                                                  bad])
    assert main([str(path), "--out", str(tmp_path / "out")]) == 0
    page = (tmp_path / "out" / "report.html").read_text()
    assert 'href="#advisor"' in page and 'id="advisor-table"' in page and "×1.80 (1.70–1.90)" in page
    assert "CUDA graphs: &lt;nonzero&gt; in NMS" in page and "<nonzero>" not in page
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "### Advisor: the fastest configuration measured" in summary and "| compiled/amp-bf16 |" in summary
