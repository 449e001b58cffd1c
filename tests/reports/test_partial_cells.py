"""A cell cut short (status ``partial``, issue 37) is read as such everywhere: the report keeps it with its rounds
and says so, a cut ``--repeats`` journal merges to partial, the gate does not judge it and counts it against the
candidate, the history store keeps it as partial and never puts it in a band."""

from __future__ import annotations

import copy
import dataclasses

from detbench.bench.core.repeats import merge_repeats, tag_repeat
from detbench.bench.core.schema import Cell
from detbench.reports.compare import INCONCLUSIVE, compare_runs
from detbench.reports.history.store import closing_store, file_sha256
from detbench.reports.load import load_run, load_runs, tidy
from tests.fakes.launcher import measured
from tests.reports.conftest import SMALL
from tests.reports.generate import make_results, write_benchmark_json, write_journal

CELL = Cell("retinanet_resnet50_fpn", batch_size=2)


def cut(result, rounds: int, planned: int = 3):
    """``result`` as a journal's progress line after ``rounds`` of ``planned`` rounds."""
    out = copy.deepcopy(result)
    m = out.measurement
    m.blocks, m.rounds, m.planned_rounds = m.blocks[:rounds], rounds, planned
    out.times_ms = out.times_ms[:sum(b.iterations for b in m.blocks)]
    out.status, out.reason = "partial", f"{rounds} of {planned} rounds timed"
    return out


def test_a_journal_s_progress_lines_load_as_the_latest_one_and_a_cut_cell_is_partial_with_its_rounds(tmp_path):
    whole, other = measured(CELL, 10.0), measured(Cell("retinanet_resnet50_fpn", batch_size=4), 20.0)
    lines = [cut(whole, 1), cut(other, 1), cut(whole, 2), other, cut(other, 2)]  # 'other' was re-measured, cut
    run = load_run(write_journal(tmp_path / "r.journal.jsonl", lines))
    by_id = run.by_cell_id()
    assert [by_id[c.id].status for c in (CELL, other.cell)] == ["partial", "partial"]
    assert by_id[CELL.id].measurement.rounds == 2 and len(by_id[CELL.id].times_ms) == 8
    assert any("2 cell(s) cut short" in note for note in run.notes)
    assert list(tidy([run])["status"]) == ["partial", "partial"]


def test_a_cut_repeats_journal_merges_to_partial_never_to_complete():
    first, second = tag_repeat(measured(CELL, 10.0), 0), tag_repeat(measured(CELL, 11.0), 1)
    assert merge_repeats([first, second]).status == "ok"  # nothing says more were planned
    assert merge_repeats([first, second], planned=3).status == "partial"
    merged = merge_repeats([first, tag_repeat(cut(measured(CELL, 11.0), 1), 1)], planned=2)
    assert merged.status == "partial" and merged.measurement.rounds == 4 and "repeat(s) 1 cut short" in merged.reason


def test_a_partial_candidate_is_not_judged_and_counts_against_the_gate(tmp_path):
    base = make_results(seed=7, **SMALL)
    cand = make_results(seed=7, **SMALL)
    target = next(r for r in cand if r.status == "ok")
    target.status, target.reason = "partial", "1 of 3 rounds timed"
    runs = load_runs([("base", write_benchmark_json(tmp_path / "b.json", base)),
                      ("cand", write_benchmark_json(tmp_path / "c.json", cand))])
    comp = compare_runs(tidy(runs), "base", "cand", 0.05)
    row = comp.table.set_index("cell_id").loc[target.cell.id]
    assert row["verdict"] == INCONCLUSIVE and "partial in the candidate" in row["why"] and row["gating"]


def test_the_history_store_keeps_a_partial_cell_as_partial_and_out_of_every_band(tmp_path):
    runs = []
    for seed in range(3):  # three runs of one cell: a band; a fourth, cut, run must not join it
        results = [dataclasses.replace(measured(CELL, 10.0 + 0.01 * seed), environment={"gpu": "X", "torch": "2"})]
        runs.append(write_journal(tmp_path / f"r{seed}.journal.jsonl", results))
    partial = cut(measured(CELL, 5.0), 1)
    partial.environment = {"gpu": "X", "torch": "2"}
    runs.append(write_journal(tmp_path / "cut.journal.jsonl", [partial]))
    with closing_store(tmp_path / "h.sqlite", create=True) as store:
        store.add([(load_run(path), file_sha256(path)) for path in runs])
        cells = store.frame("SELECT status, throughput_ips FROM cells ORDER BY status")
        assert list(cells["status"]) == ["ok", "ok", "ok", "partial"]
        bands = store.frame("SELECT runs FROM bands")
        assert list(bands["runs"]) == [3]  # the three complete runs; the cut one is not among them
