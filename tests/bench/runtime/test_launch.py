"""The launcher with real faults in real workers: a group keeps everything it measured, a fresh worker takes
the rest after a crash or a hang, an OOM does not end the group."""

from __future__ import annotations

import time

import pytest

from detbench.bench.core.options import RoundsPolicy, RunOptions, WarmupPolicy
from detbench.bench.core.schema import Cell
from detbench.bench.runtime.launch import run_group

OPTIONS = dict(model_modules=("tests.bench.tiny_models",), isolation="model", cell_timeout_s=60.0, count_flops=False,
               warmup=WarmupPolicy(window=2, tolerance=0.5, min_iterations=2, max_iterations=10, max_s=0.5),
               rounds=RoundsPolicy(rounds=3, block_s=0.02, min_block_iterations=2))
BS1 = Cell("tiny_convnet", "infer", batch_size=1, image_size=(32, 32))
BS2 = Cell("tiny_convnet", "infer", batch_size=2, image_size=(32, 32))
TRAIN = Cell("tiny_convnet", "train", batch_size=2, image_size=(32, 32))
GROUP = [BS1, BS2, TRAIN]


def by_id(results):
    return {r.cell.id: r for r in results}


def test_one_worker_measures_the_group_interleaved_with_ratios_and_overhead():
    results = run_group(GROUP, RunOptions(**OPTIONS))
    assert [r.cell.id for r in results] == [c.id for c in GROUP]
    assert all(r.status == "ok" for r in results), [r.reason for r in results]
    for r in results:
        m = r.measurement
        assert m.isolation == "model" and m.worker_attempt == 1 and m.group_cells == 3 and m.rounds == 3
        assert m.overhead_s == pytest.approx(m.cell_wall_s - m.timed_s, abs=1e-3) and m.shared_overhead_s > 0
    # rounds visit the variants in rotating order: round 1 starts with the second cell, round 2 with the third
    firsts = []
    for round_index in range(3):
        starts = {r.cell.id: b.start_offset_s for r in results for b in r.measurement.blocks if b.round == round_index}
        firsts.append(min(starts, key=starts.get))
    assert firsts == [BS1.id, BS2.id, TRAIN.id]
    ratios = by_id(results)
    assert ratios[BS1.id].ratio.median == 1.0 and ratios[BS1.id].ratio.baseline_cell_id == BS1.id
    assert ratios[TRAIN.id].ratio.baseline_cell_id == TRAIN.id  # baseline: eager fp32, same mode and batch


def test_a_crash_in_the_middle_of_a_set_up_is_recorded_and_a_fresh_worker_takes_the_rest(monkeypatch):
    monkeypatch.setenv("DETBENCH_TEST_FAULT", f"{BS2.id}:segfault")
    results = by_id(run_group(GROUP, RunOptions(**OPTIONS)))
    crashed = results[BS2.id]
    assert crashed.status == "error" and "SIGSEGV" in crashed.reason and "set-up" in crashed.reason
    assert crashed.failure.phase == "worker" and crashed.failure.returncode == -11
    for cell in (BS1, TRAIN):
        assert results[cell.id].status == "ok" and results[cell.id].measurement.worker_attempt == 2


def test_a_crash_during_the_rounds_loses_nothing_already_measured_and_a_fresh_worker_times_only_the_rest(monkeypatch):
    monkeypatch.setenv("DETBENCH_TEST_FAULT", f"{BS2.id}:exit@round1")  # round 1 visits BS2 first
    forwarded: list = []
    results = by_id(run_group(GROUP, RunOptions(**OPTIONS), on_result=forwarded.append))
    assert results[BS2.id].status == "error" and "exited with code 3" in results[BS2.id].reason
    for cell in (BS1, TRAIN):  # their round-0 blocks survived the worker, read back from its progress file
        cut = [r for r in forwarded if r.cell.id == cell.id and r.measurement and r.measurement.worker_attempt == 1]
        first = next(r for r in forwarded if r.cell.id == cell.id and r.measurement is not None)
        assert first.status == "partial" and [b.round for b in first.measurement.blocks] == [0], cut
        kept = results[cell.id]  # continued by worker 2: rounds 1 and 2 only, round 0 as worker 1 timed it
        assert kept.status == "ok" and kept.measurement.worker_attempt == 2 and kept.measurement.resumed_rounds == 1
        assert [b.round for b in kept.measurement.blocks] == [0, 1, 2]
        assert kept.measurement.blocks[0] == first.measurement.blocks[0]


def test_an_oom_in_one_batch_size_does_not_end_the_group(monkeypatch):
    monkeypatch.setenv("DETBENCH_TEST_FAULT", f"{BS2.id}:oom")
    results = by_id(run_group(GROUP, RunOptions(**OPTIONS)))
    assert results[BS2.id].status == "oom" and "Tried to allocate 2.50 GiB" in results[BS2.id].reason
    assert all(results[c.id].status == "ok" and results[c.id].measurement.worker_attempt == 1 for c in (BS1, TRAIN))


@pytest.mark.timing  # a wall-clock bound (< 150 s) with a 20 s cell timeout: failed beside xdist workers, loaded
@pytest.mark.waits  # ~7 / ~14 CPU-s over 26 / 49 s of wall: it waits on the timeout
def test_a_hang_is_killed_as_a_timeout_and_the_rest_is_measured(monkeypatch):
    monkeypatch.setenv("DETBENCH_TEST_FAULT", f"{BS2.id}:hang")
    began = time.monotonic()
    results = by_id(run_group(GROUP, RunOptions(**{**OPTIONS, "cell_timeout_s": 20.0})))
    assert results[BS2.id].status == "timeout" and "20 s without progress" in results[BS2.id].reason
    assert all(results[c.id].status == "ok" for c in (BS1, TRAIN)), [(r.status, r.reason) for r in results.values()]
    assert time.monotonic() - began < 150


def test_cell_isolation_runs_one_worker_per_cell_and_inline_the_same_engine_here():
    cell_results = run_group([BS1, BS2], RunOptions(**{**OPTIONS, "isolation": "cell"}))
    assert [r.measurement.group_cells for r in cell_results] == [1, 1]
    assert cell_results[1].ratio is not None and cell_results[1].ratio.baseline_cell_id == BS2.id
    inline = run_group([BS1, BS2], RunOptions(**{**OPTIONS, "isolation": "inline"}))
    assert all(r.status == "ok" and r.measurement.isolation == "inline" for r in inline)


def test_one_launcher_interface_picks_where_a_group_runs():
    from detbench.bench.runtime.launch import InlineLauncher, ProcessLauncher, launcher_for
    from detbench.bench.runtime.torchrun import TorchrunLauncher

    assert isinstance(launcher_for([Cell("tiny_convnet", gpus=2)], RunOptions(**OPTIONS)), TorchrunLauncher)
    assert isinstance(launcher_for([BS1], RunOptions(**{**OPTIONS, "isolation": "inline"})), InlineLauncher)
    chosen = launcher_for([BS1], RunOptions(**{**OPTIONS, "isolation": "cell"}))
    assert isinstance(chosen, ProcessLauncher) and chosen.isolation == "cell"


def test_a_batch_search_cell_is_searched_after_the_group_and_keeps_its_id(monkeypatch):
    import detbench.bench.runtime.launch
    from tests.fakes.batch_probe import FakeProbe

    probe = FakeProbe(fits_up_to=40)
    monkeypatch.setattr(detbench.bench.runtime.launch, "isolated_probe", lambda options, run: probe)
    search = Cell("tiny_convnet", "infer", batch_size="max", image_size=(32, 32))
    results = run_group([BS1, search], RunOptions(**{**OPTIONS, "isolation": "inline"}))
    assert [r.cell.id for r in results] == [BS1.id, "tiny_convnet-infer-eager-fp32-bsmax-gpu1-32x32"]
    found = results[1]
    assert found.status == "ok" and found.batch_search.largest_fit == 40 and found.batch_search.smallest_oom == 48
    assert probe.calls == [8, 16, 32, 64, 48, 40] and found.ratio is None  # never paired with the group
    assert results[0].ratio.baseline_cell_id == BS1.id
