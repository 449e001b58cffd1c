"""The suite's ``--repeats``: every group measured N times in rotated order, repeats merged, journalled, resumed."""

from __future__ import annotations

import json

import pytest

from detbench.bench.core.journal import Journal, read_journal
from detbench.bench.core.matrix import Capabilities
from detbench.bench.core.options import RunOptions
from detbench.bench.core.record import latest_lines, load_results
from detbench.bench.core.repeats import merge_repeats, repeat_order
from detbench.bench.core.schema import Cell, CellResult
from detbench.bench.runtime import run as suite
from detbench.reports.load import load_run
from tests.bench.plugin.test_smoke_e2e import run_pytest
from tests.fakes.launcher import FakeLauncher, measured

CPU = Capabilities(cuda_available=False)
CELLS = [Cell("a"), Cell("a", compile="compiled"), Cell("b"), Cell("c")]


def make_run(monkeypatch, launcher: FakeLauncher, repeats: int, tmp_path=None, resumed=None, cells=CELLS):
    monkeypatch.setattr(suite, "run_group", launcher)
    journal = Journal(tmp_path / "run.journal.jsonl") if tmp_path else None
    return suite.BenchRun(RunOptions(repeats=repeats), CPU, list(cells), journal, resumed=resumed), journal


def test_repeat_order_rotates_so_each_group_sits_at_a_different_moment_per_repeat():
    orders = [repeat_order(["a", "b", "c"], r, 3) for r in range(3)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert [o.index("a") for o in orders] == [0, 2, 1]
    assert repeat_order([], 1, 3) == []


def test_every_group_is_measured_once_per_repeat_by_a_fresh_launch_and_merged_into_one_result(monkeypatch, tmp_path):
    launcher = FakeLauncher({"a": 10.0, "b": 20.0, "c": 30.0})
    run, journal = make_run(monkeypatch, launcher, 3, tmp_path)
    result = run.run(CELLS[0])
    journal.close()
    assert len(launcher.calls) == 9  # 3 groups x 3 repeats, the first cell asked measured the whole run
    assert [calls[0] for calls in launcher.calls[::3]] == ["a-infer-eager-fp32-bs1-gpu1", "b-infer-eager-fp32-bs1-gpu1",
                                                          "c-infer-eager-fp32-bs1-gpu1"]
    assert sorted({b.repeat for b in result.measurement.blocks}) == [0, 1, 2]
    assert result.repeat is None and result.measurement.repeats == 3 and len(result.measurement.blocks) == 9
    assert result.measurement.repeat_setup_wall_s == [1.0, 6.0, 8.0]  # a is call 0, then 5 (after b, c), then 7
    assert result.setup.total_s == 1.0 and result.first_call_s == 2.0  # set-up and compile: the first repeat
    assert len(result.times_ms) == 36 and result.latency.n == 36
    block_ips = sorted(1000.0 / b.median_ms for b in result.measurement.blocks)
    assert result.throughput_ips == pytest.approx(block_ips[4])  # median over all 9 blocks
    lines = read_journal(journal.path)
    assert [r.repeat for r in lines if r.cell.id == CELLS[0].id] == [0, 1, 2, None]  # each repeat as it finished
    assert {r.cell.id for r in run.results.values()} == {c.id for c in CELLS}
    assert run.run(CELLS[3]).measurement.repeats == 3 and len(launcher.calls) == 9  # stored, not measured again


def test_a_failed_repeat_leaves_the_cell_ok_and_is_recorded_beside_its_figures(monkeypatch):
    cell = CELLS[2]
    launcher = FakeLauncher(fail={(cell.id, 3): "oom"})  # b opens repeat 1 (call 3)
    run, _ = make_run(monkeypatch, launcher, 3)
    result = run.run(cell)
    assert result.status == "ok" and result.measurement.repeats == 2
    assert sorted({b.repeat for b in result.measurement.blocks}) == [0, 2]
    assert [(f.repeat, f.status) for f in result.repeat_failures] == [(1, "oom")]
    assert CellResult.from_dict(result.to_dict()) == result


def test_a_cell_whose_every_repeat_failed_keeps_the_first_failure_and_lists_the_others():
    cell = Cell("a")
    fails = [CellResult(cell, status="error", reason=f"r{r}", repeat=r) for r in range(3)]
    merged = merge_repeats(fails)
    assert merged.status == "error" and merged.reason == "r0" and merged.repeat is None
    assert [f.repeat for f in merged.repeat_failures] == [1, 2]


def test_paired_ratios_pair_blocks_of_the_same_repeat_and_round(monkeypatch):
    launcher = FakeLauncher({"a": 10.0})
    run, _ = make_run(monkeypatch, launcher, 2, cells=CELLS[:2])
    run.run(CELLS[1])
    base, compiled = run.results[CELLS[0].id], run.results[CELLS[1].id]
    assert compiled.ratio.baseline_cell_id == base.cell.id and len(compiled.ratio.per_round) == 6
    assert compiled.ratio.per_round == pytest.approx([1.0] * 6)  # same group call: same median in each pair


def test_multi_gpu_groups_repeat_after_their_one_gpu_twins_and_scale_against_the_same_repeat(monkeypatch):
    cells = [Cell("a"), Cell("a", gpus=2)]
    launcher = FakeLauncher({"a": 10.0})
    run, _ = make_run(monkeypatch, launcher, 2, cells=cells)
    run.run(cells[1])
    assert launcher.calls == [[cells[0].id], [cells[1].id], [cells[0].id], [cells[1].id]]
    assert launcher.baselines_seen[1] == [cells[0].id] and launcher.baselines_seen[3] == [cells[0].id]
    assert run.results[cells[1].id].measurement.repeats == 2


def test_resuming_skips_finished_repeats_and_the_new_journal_holds_them(monkeypatch, tmp_path):
    first = FakeLauncher(fail={(CELLS[3].id, 4): "timeout"})
    run, journal = make_run(monkeypatch, first, 2, tmp_path)
    # an interrupted run: repeat 0 of every group, repeat 1 of b done and c's failed; a's repeat 1 never ran
    run._measure_repeat(CELLS[:2], 0, 0, 8)
    run._measure_repeat(CELLS[2:3], 0, 2, 8)
    run._measure_repeat(CELLS[3:], 0, 3, 8)
    run._measure_repeat(CELLS[2:3], 1, 4, 8)
    run._measure_repeat(CELLS[3:], 1, 5, 8)
    journal.close()
    resumed = read_journal(journal.path)
    second = FakeLauncher()
    (tmp_path / "again").mkdir()
    run2, journal2 = make_run(monkeypatch, second, 2, tmp_path / "again", resumed=resumed)
    run2.run(CELLS[0])
    journal2.close()
    assert second.calls == [[CELLS[3].id], [c.id for c in CELLS[:2]]]  # c's failed repeat 1, then a's (order b c a)
    lines = read_journal(journal2.path)
    assert sorted((r.cell.id, r.repeat) for r in lines if r.repeat is not None) == sorted(
        (c.id, r) for c in CELLS for r in (0, 1))
    assert all(run2.results[c.id].measurement.repeats == 2 for c in CELLS)


def test_without_repeats_resuming_takes_finished_cells_and_measures_the_rest(monkeypatch):
    done = measured(CELLS[2], 20.0)
    launcher = FakeLauncher()
    run, _ = make_run(monkeypatch, launcher, 1, resumed=[done, CellResult(CELLS[3], status="error")])
    assert run.run(CELLS[2]) is done and launcher.calls == []
    run.run(CELLS[3])
    assert launcher.calls == [[CELLS[3].id]]


def test_a_journal_cut_short_between_repeats_loads_with_its_finished_repeats_merged(monkeypatch, tmp_path):
    run, journal = make_run(monkeypatch, FakeLauncher(), 3, tmp_path)
    run._measure_repeat(CELLS[:2], 0, 0, 12)
    run._measure_repeat(CELLS[:2], 1, 2, 12)
    run._measure_repeat(CELLS[2:3], 0, 4, 12)  # the run dies here
    journal.close()
    loaded = {r.cell.id: r for r in load_run(journal.path).results}
    assert loaded[CELLS[0].id].measurement.repeats == 2 and loaded[CELLS[0].id].repeat is None
    assert loaded[CELLS[2].id].measurement.repeats == 1 and len(loaded) == 3


def test_pytest_face_repeats_real_cells_and_writes_merged_results_and_per_repeat_journal_lines(tmp_path):
    proc = run_pytest("--profile", "smoke", "--models", "tiny_convnet", "--modes", "infer", "--image-size", "32x32",
                      "--model-modules", "tests.bench.tiny_models", "--repeats", "2",
                      f"--benchmark-json={tmp_path / 'r.json'}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "repeat 2/2" in proc.stdout
    bench = json.loads((tmp_path / "r.json").read_text())["benchmarks"][0]
    (cell,) = load_results(tmp_path / "r.json")
    assert cell.measurement.repeats == 2 and {b.repeat for b in cell.measurement.blocks} == {0, 1}
    assert len(bench["stats"]["data"]) == len(cell.times_ms) == cell.measurement.iterations
    lines = read_journal(tmp_path / "r.journal.jsonl")
    assert [r.repeat for r in latest_lines(lines)] == [0, 1, None]
    # each repeat's set-up and blocks were journalled as they ended, before its final line
    cut = {(r.repeat, r.measurement.rounds if r.measurement else 0) for r in lines if r.status == "partial"}
    assert cut >= {(0, 0), (1, 0), (0, 1)}
