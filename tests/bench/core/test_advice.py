"""detbench.bench.core.advice: one pick per detector, mode and GPU count, ranked by paired ratios to eager FP32 where
the cells were interleaved, with the failures, what was not tried and the notes.

Rendering (HTML, summary.md, terminal, command line): tests/reports/test_advisor.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from detbench.bench.core.advice import BASELINE, INTERLEAVED, NOT_INTERLEAVED, advise, advise_runs
from detbench.bench.core.schema import (
    BatchProbe,
    BatchSearch,
    BlockRecord,
    Cell,
    CellResult,
    CompileDetails,
    Measurement,
    PairedRatio,
)
from tests.reports.generate import make_results

MODEL = "retinanet_resnet50_fpn"


def cell(compile_mode="eager", precision="fp32", batch=8, mode="infer", gpus=1, model=MODEL, **extra):
    return Cell(model, mode, compile_mode, precision, batch, gpus, **extra)


def measured(c, ips, *, ratio=None, group="g", isolation="model", attempt=1, **extra):
    """An ok result with two blocks; ``ratio`` = (median, q1, q3) against eager fp32 at the same batch."""
    batch = extra["batch_search"].largest_fit if c.searches_batch else c.batch_size
    blocks = [BlockRecord(round=i, median_ms=batch * 1000 / ips, iterations=5, host_canary_ms=1.0,
                          start_offset_s=float(i)) for i in range(2)]
    m = Measurement(timer="cuda-events", iterations=10, timed_s=1.0, isolation=isolation, blocks=blocks,
                    group=group, worker_attempt=attempt)
    base = Cell(c.model, c.mode, "eager", "fp32", batch, c.gpus, c.image_size)
    paired = PairedRatio(base.id, *ratio) if ratio else None
    return CellResult(c, status="ok", throughput_ips=ips, measurement=m, ratio=paired, **extra)


def test_the_batch_of_the_fastest_cell_is_where_the_configurations_are_ranked_by_their_paired_gain():
    results = [measured(cell(batch=8), 100.0, ratio=(1, 1, 1)),
               measured(cell("compiled", "amp-bf16", 8), 180.0, ratio=(1.8, 1.75, 1.86), compile_s=70.0,
                        break_even_iterations=1200.0, mfu=0.21, peak_memory_bytes=6 * 2**30),
               measured(cell(batch=16), 110.0, ratio=(1, 1, 1)),
               measured(cell("eager", "amp-bf16", 16), 150.0, ratio=(1.36, 1.3, 1.4))]
    [item] = advise(results)
    best = item.best
    assert best.configuration == "compiled/amp-bf16" and best.batch_size == 8 and best.throughput_ips == 180.0
    assert (best.gain.value, best.gain.q1, best.gain.q3, best.gain.basis) == (1.8, 1.75, 1.86, INTERLEAVED)
    assert best.gain.baseline_cell_id == cell(batch=8).id and best.gain.paired
    assert (best.compile_s, best.break_even_iterations, best.mfu) == (70.0, 1200.0, 0.21)
    # the pick's batch first (by gain), then the other batch sizes by throughput
    assert [(c.configuration, c.batch_size) for c in item.ranked] == [
        ("compiled/amp-bf16", 8), ("eager/fp32", 8), ("eager/amp-bf16", 16), ("eager/fp32", 16)]
    assert item.runner_up_comparable and item.ranked[1].gain.basis == BASELINE and not item.tie


def test_a_paired_ratio_outranks_a_throughput_that_says_otherwise():
    # the SSDlite case on an H200: bf16's cell throughput came out lower, but paired round by round it is faster
    results = [measured(cell(model="ssdlite320_mobilenet_v3_large"), 520.0, ratio=(1, 1, 1)),
               measured(cell("eager", "amp-bf16", model="ssdlite320_mobilenet_v3_large"), 505.0,
                        ratio=(1.06, 1.04, 1.08))]
    [item] = advise(results)
    assert item.best.configuration == "eager/amp-bf16" and item.best.gain.basis == INTERLEAVED
    assert item.runner_up.configuration == "eager/fp32" and not item.tie


def test_without_pairing_the_throughput_quotient_ranks_and_is_marked_not_interleaved():
    for kwargs in (dict(isolation="cell"), dict(attempt=2), dict(group="other")):
        base = measured(cell(), 100.0, ratio=(1, 1, 1), isolation=kwargs.get("isolation", "model"))
        fast = measured(cell("compiled"), 150.0, ratio=(1.5, 1.4, 1.6), **kwargs)
        gain = advise([base, fast])[0].best.gain
        assert (gain.value, gain.q1, gain.basis, gain.paired) == (1.5, None, NOT_INTERLEAVED, False), kwargs


def test_a_mixture_ranks_by_gain_against_the_one_baseline_and_says_which_is_paired():
    base = measured(cell(), 100.0, ratio=(1, 1, 1))
    paired = measured(cell("eager", "amp-bf16"), 130.0, ratio=(1.25, 1.2, 1.3))
    retried = measured(cell("compiled"), 140.0, ratio=(1.4, 1.3, 1.5), attempt=2)  # timed by a fresh worker
    item = advise([base, paired, retried])[0]
    assert [(c.configuration, c.gain.basis) for c in item.ranked] == [
        ("compiled/fp32", NOT_INTERLEAVED), ("eager/amp-bf16", INTERLEAVED), ("eager/fp32", BASELINE)]
    assert item.best.gain.value == pytest.approx(1.4) and not item.tie  # only paired ranges can tie


def test_no_gain_without_an_ok_eager_fp32_at_the_same_batch_and_the_reason_says_why():
    lone = advise([measured(cell("compiled", batch=16), 150.0)])[0].best.gain
    assert lone.value is None and lone.basis == "eager fp32 at batch 16: not measured"
    oom_base = CellResult(cell(batch=16), status="oom", reason="CUDA out of memory")
    item = advise([measured(cell("compiled", batch=16), 150.0), measured(cell("eager", "amp-bf16", 16), 160.0),
                   oom_base])[0]
    assert item.best.gain.value is None and item.best.gain.basis == "eager fp32 at batch 16: oom"
    assert [c.throughput_ips for c in item.ranked] == [160.0, 150.0]  # no baseline: throughput ranks


def test_failed_configurations_are_listed_with_their_reason_and_never_picked():
    graphs = CellResult(cell("compiled", "amp-bf16"), status="error",
                        reason="RuntimeError: CUDA graphs:\n data-dependent output shapes in batched_nms",
                        throughput_ips=999.0)
    item = advise([measured(cell(), 100.0, ratio=(1, 1, 1)), graphs,
                   CellResult(cell(batch=64), status="oom", reason="CUDA out of memory. Tried to allocate 9 GiB"),
                   CellResult(cell(batch="max"), status="error", reason=None)])[0]
    assert item.best.configuration == "eager/fp32"
    assert [(f.configuration, f.batch_size, f.status) for f in item.failures] == [
        ("compiled/amp-bf16", 8, "error"), ("eager/fp32", 64, "oom"), ("eager/fp32", "max", "error")]
    assert item.failures[0].reason == "RuntimeError: CUDA graphs: data-dependent output shapes in batched_nms"
    assert item.failures[2].reason == "no reason recorded"


def test_axis_values_the_run_did_not_try_are_named():
    item = advise([measured(cell(), 100.0), measured(cell("eager", "amp-bf16"), 140.0)])[0]
    assert item.not_tried == ["compile: default, max-autotune, reduce-overhead, max-autotune-no-cudagraphs",
                              "precision: amp-fp16", "memory format: channels_last",
                              "runtime: torchscript, onnxruntime, aot-inductor", "batch: max"]
    tried = advise([measured(cell(), 100.0), measured(cell(memory_format="channels_last"), 110.0)])[0]
    assert "memory format: channels_last" not in tried.not_tried


def test_configurations_run_elsewhere_but_not_at_the_picks_batch_are_named():
    results = make_results(models=[MODEL, "fcos_resnet50_fpn"], batch_sizes=(2,), series_points=3)
    # fcos compiled/amp-bf16 at batch 2 errors in the synthetic results; drop retinanet's eager/amp-fp16 cell
    results = [r for r in results if not (r.cell.model == MODEL and r.cell.configuration == "eager/amp-fp16")]
    by_model = {a.model: a for a in advise(results)}
    fcos, retina = by_model["fcos_resnet50_fpn"], by_model[MODEL]
    assert fcos.not_at_batch == [] and [(f.configuration, f.status) for f in fcos.failures] == [
        ("compiled/amp-bf16", "error")]
    assert retina.not_at_batch == ["eager/amp-fp16"] and retina.failures == []


def test_a_configuration_not_at_the_picks_batch_is_named_once():
    results = [measured(cell(), 100.0, ratio=(1, 1, 1)), measured(cell("compiled"), 150.0, ratio=(1.5, 1.4, 1.6)),
               measured(cell("eager", "amp-bf16", 16), 120.0),
               measured(cell("eager", "amp-fp16", model="fcos_resnet50_fpn"), 90.0)]
    retina = next(a for a in advise(results) if a.model == MODEL)
    assert retina.best.batch_size == 8 and retina.not_at_batch == ["eager/amp-bf16"]
    assert "precision: amp-fp16" in retina.not_tried  # never ran here: said once, by the axis


def test_overlapping_paired_ranges_make_the_runner_up_a_tie_and_separate_ones_do_not():
    base = measured(cell(), 100.0, ratio=(1, 1, 1))
    tie = advise([base, measured(cell("compiled"), 151.0, ratio=(1.51, 1.45, 1.56)),
                  measured(cell("eager", "amp-bf16"), 150.0, ratio=(1.50, 1.47, 1.53))])[0]
    assert tie.tie
    clear = advise([base, measured(cell("compiled"), 151.0, ratio=(1.51, 1.49, 1.56)),
                    measured(cell("eager", "amp-bf16"), 120.0, ratio=(1.2, 1.18, 1.22))])[0]
    assert not clear.tie
    # a runner-up at another batch size has another baseline: never a tie
    apart = advise([base, measured(cell(batch=4), 99.0, ratio=(1, 1, 1))])[0]
    assert apart.runner_up.batch_size == 4 and not apart.runner_up_comparable and not apart.tie


def test_one_advice_per_detector_mode_and_gpu_count_and_a_group_with_nothing_ok_says_so():
    results = [measured(cell(), 100.0), measured(cell(mode="train", batch=4), 20.0),
               CellResult(cell(gpus=2), status="timeout", reason="killed after 600 s without progress")]
    advice = advise(results, run="r1")
    assert [(a.run, a.mode, a.gpus) for a in advice] == [("r1", "infer", 1), ("r1", "infer", 2), ("r1", "train", 1)]
    nothing = advice[1]
    assert nothing.best is None and nothing.ranked == [] and nothing.failures[0].status == "timeout"
    assert nothing.not_at_batch == []


def test_cuda_graph_fallbacks_recompilations_and_the_batch_boundary_are_noted():
    graphs = measured(cell("reduce-overhead", "amp-bf16", memory_format="channels_last"), 150.0,
                      compile_s=80.0, compile_details=CompileDetails("reduce-overhead", 1, 2,
                                                                     "skipping cudagraphs due to data dependent ops"))
    search = BatchSearch(8, 512, 0.25, largest_fit=96, smallest_oom=112, stop_reason="boundary within 25%",
                         probes=[BatchProbe(b, "ok" if b <= 96 else "oom") for b in (8, 16, 32, 64, 128, 96, 112)])
    biggest = measured(cell("eager", "amp-bf16", "max", memory_format="channels_last"), 170.0, batch_search=search)
    item = advise([measured(cell(), 100.0, ratio=(1, 1, 1)), graphs, biggest])[0]
    assert item.best.cell_id == biggest.cell.id and item.best.batch_size == 96
    assert item.best.gain.value is None and item.best.gain.basis == "eager fp32 at batch 96: not measured"
    assert item.notes == [
        "compiled-reduce-overhead/amp-bf16/channels_last bs8: CUDA graphs skipped for 2 graph(s) (skipping cudagraphs "
        "due to data dependent ops)",
        "compiled-reduce-overhead/amp-bf16/channels_last bs8: 1 recompilation(s) after the first call",
        "eager/amp-bf16/channels_last bsmax: 96 fits, 112 runs out of memory (7 probes; boundary within 25%)"]
    assert "batch: max" not in item.not_tried
    assert item.not_at_batch == ["eager/fp32", "compiled-reduce-overhead/amp-bf16/channels_last"]


def test_over_a_synthetic_matrix_every_pick_ran_ok_at_the_fastest_batch_and_quotes_its_gain():
    results = make_results(models=["fasterrcnn_resnet50_fpn", "ssdlite320_mobilenet_v3_large"], batch_sizes=(1, 8, 64),
                           modes=("infer", "train"), series_points=3)
    by_id = {r.cell.id: r for r in results}
    advice = advise(results)
    assert {(a.model, a.mode) for a in advice} == {(r.cell.model, r.cell.mode) for r in results}
    for item in advice:
        group = [r for r in results if (r.cell.model, r.cell.mode) == (item.model, item.mode) and r.status == "ok"]
        best = item.best
        assert by_id[best.cell_id].status == "ok"
        assert best.batch_size == max(group, key=lambda r: r.throughput_ips).cell.batch_size
        if best.gain.value is None:
            assert best.gain.basis.startswith(f"eager fp32 at batch {best.batch_size}: ")
            continue
        base = by_id[best.gain.baseline_cell_id]
        assert base.cell.batch_size == best.batch_size and base.cell.configuration == "eager/fp32"
        assert best.gain.value == pytest.approx(best.throughput_ips / base.throughput_ips)  # no blocks: not paired
        assert best.gain.basis in (NOT_INTERLEAVED, BASELINE)
        if best.compiled:
            assert best.break_even_iterations > 0 and best.compile_s > 0
        else:
            assert best.break_even_iterations is None and best.compile_s is None


def test_an_oom_baseline_is_explained():
    results = make_results(models=[MODEL], batch_sizes=(64,), series_points=3)
    [item] = advise(results)
    assert item.best.gain.basis == "eager fp32 at batch 64: oom"
    assert ("eager/fp32", "oom") in [(f.configuration, f.status) for f in item.failures]


def test_one_pick_per_gpu_count():
    results = make_results(models=[MODEL], gpu_counts=(1, 2, 4), series_points=3)
    advice = advise(results)
    assert [a.gpus for a in advice] == [1, 2, 4]
    assert all(a.best.cell_id.endswith(f"-gpu{a.gpus}") for a in advice)


def test_advice_for_runs_carries_each_runs_label():
    class Run:
        def __init__(self, label, results):
            self.label, self.results = label, results

    advice = advise_runs([Run("a", [measured(cell(), 100.0)]), Run("b", [measured(cell(), 90.0)])])
    assert [(a.run, a.best.throughput_ips) for a in advice] == [("a", 100.0), ("b", 90.0)]


def test_the_module_needs_neither_torch_nor_pandas():
    code = ("import sys, detbench.bench.core.advice; bad = {'torch', 'pandas', 'rich', 'reports'} & set(sys.modules); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
