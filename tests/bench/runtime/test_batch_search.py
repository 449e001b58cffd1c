"""The largest-batch search: doubling then bisection over a planted OOM boundary (fake probes), and once
through the real launcher with a planted OOM in a child process."""

from __future__ import annotations

import pytest

from detbench.bench.core.options import RoundsPolicy, RunOptions, WarmupPolicy
from detbench.bench.core.schema import Cell
from detbench.bench.runtime.batch_search import isolated_probe, search
from detbench.bench.runtime.launch import run_group
from tests.fakes.batch_probe import GIB, FakeProbe

RETINA = Cell("retinanet_resnet50_fpn", "infer", "eager", "amp-bf16", batch_size=8)


def test_doubling_then_exact_bisection_finds_the_boundary():
    probe = FakeProbe(fits_up_to=100)
    out = search(RETINA, probe, start=8, tolerance=0)
    assert probe.calls == [8, 16, 32, 64, 128, 96, 112, 104, 100, 102, 101]
    assert (out.search.largest_fit, out.search.smallest_oom) == (100, 101) and out.search.resolved
    assert "exact boundary" in out.search.stop_reason
    assert out.boundary.cell.batch_size == 100 and out.boundary.throughput_ips == pytest.approx(100 * 100 / 104)
    assert out.failed is None


def test_bisection_stops_within_the_tolerance_to_save_probes():
    probe = FakeProbe(fits_up_to=100)
    out = search(RETINA, probe, start=8, tolerance=0.125)
    assert probe.calls == [8, 16, 32, 64, 128, 96, 112, 104]
    assert (out.search.largest_fit, out.search.smallest_oom) == (96, 104) and out.search.resolved


def test_every_probe_is_recorded_with_status_and_peak_memory():
    out = search(RETINA, FakeProbe(fits_up_to=20), start=8, tolerance=0)
    by_batch = {p.batch_size: p for p in out.search.probes}
    assert by_batch[16].status == "ok" and by_batch[16].peak_memory_bytes == GIB + 16 * GIB // 2
    assert by_batch[32].status == "oom" and by_batch[32].peak_memory_bytes is None
    assert by_batch[32].memory_requested_bytes == GIB // 2 and "out of memory" in by_batch[32].reason


def test_a_start_batch_that_does_not_fit_bisects_downwards():
    probe = FakeProbe(fits_up_to=3)
    out = search(RETINA, probe, start=8, tolerance=0)
    assert probe.calls == [8, 4, 2, 3]
    assert (out.search.largest_fit, out.search.smallest_oom) == (3, 4)


def test_nothing_fits_is_said_and_has_no_boundary_result():
    out = search(RETINA, FakeProbe(fits_up_to=0), start=8)
    assert [p.batch_size for p in out.search.probes] == [8, 4, 2, 1]
    assert out.search.largest_fit is None and out.boundary is None
    assert out.search.stop_reason == "nothing fits: batch 1 runs out of memory"


def test_no_oom_up_to_the_limit_stops_at_the_limit():
    probe = FakeProbe(fits_up_to=10**6)
    out = search(RETINA, probe, start=8, limit=40)
    assert probe.calls == [8, 16, 32, 40]
    assert out.search.largest_fit == 40 and out.search.smallest_oom is None and not out.search.resolved
    assert "no OOM up to the limit" in out.search.stop_reason


@pytest.mark.parametrize("where, calls", [(32, [8, 16, 32]), (96, [8, 16, 32, 64, 128, 96])])
def test_a_failure_other_than_oom_ends_the_search_with_its_reason(where, calls):
    probe = FakeProbe(fits_up_to=100, fail_at={where: "error"})
    out = search(RETINA, probe, start=8, tolerance=0)
    assert probe.calls == calls
    assert out.failed is not None and out.failed.cell.batch_size == where
    assert out.search.stop_reason == f"error at batch {where}: planted error at {where}"
    assert out.search.largest_fit == max(b for b in calls if b < where and b <= 100)


@pytest.mark.parametrize("kwargs, word", [(dict(start=0), "start"), (dict(start=8, limit=4), "limit"),
                                          (dict(tolerance=1.0), "tolerance")])
def test_bad_search_arguments_are_one_line_errors(kwargs, word):
    with pytest.raises(ValueError, match=word):
        search(RETINA, FakeProbe(fits_up_to=8), **kwargs)


def test_the_real_probe_runs_each_batch_in_a_fresh_worker_and_records_a_planted_oom(monkeypatch):
    tiny = Cell("tiny_convnet", "infer", batch_size=1, image_size=(32, 32))
    monkeypatch.setenv("DETBENCH_TEST_FAULT", "tiny_convnet-infer-eager-fp32-bs8-:oom")
    options = RunOptions(model_modules=("tests.bench.tiny_models",), count_flops=False, cell_timeout_s=60.0,
                         warmup=WarmupPolicy(window=2, tolerance=0.5, min_iterations=2, max_iterations=10, max_s=0.5))
    out = search(tiny, isolated_probe(options, run_group, RoundsPolicy(rounds=1, block_s=0.02, min_block_iterations=2)),
                 start=4, tolerance=0.5)
    assert [(p.batch_size, p.status) for p in out.search.probes] == [(4, "ok"), (8, "oom"), (6, "ok")]
    assert "raised by detbench.bench.runtime.faults" in out.search.probes[1].reason
    assert (out.search.largest_fit, out.search.smallest_oom) == (6, 8)
    boundary = out.boundary
    assert boundary.status == "ok" and boundary.cell.batch_size == 6 and boundary.throughput_ips > 0
    assert boundary.measurement.isolation == "cell" and boundary.measurement.iterations >= 2
