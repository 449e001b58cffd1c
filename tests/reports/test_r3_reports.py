"""Issue 24 (round three), detbench-report: deep JSON and one run twice refused, implausible figures never judged,
CSV cells a spreadsheet will not run, and no credential from an old fingerprint in any output."""

from __future__ import annotations

import csv
import dataclasses
import io
import json

import pytest

from detbench.bench.core.record import RunRecord
from detbench.bench.core.stats import judge
from detbench.reports.cli import EXIT_BAD_INPUT, EXIT_NOTHING_COMPARABLE, EXIT_OK, main
from detbench.reports.compare import GATE_INCOMPARABLE, GATE_PASS, INVALID, gate, verdict_line
from detbench.reports.history.store import closing_store
from detbench.reports.load import load_run
from tests.reports.generate import ENVIRONMENT, make_results, write_benchmark_json, write_journal
from tests.reports.test_compare_blocks import GPU_BOUND, HOST_BOUND, cell_result, compare_files, verdicts

SMALL = dict(models=["resnet50"], batch_sizes=(1, 8), modes=("infer",), series_points=4, iterations=12)
SECRET_IMAGE = "https://user:s3cr3t@registry.example.com/img:tag"


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


@pytest.mark.parametrize("name", ["deep.json", "deep.jsonl"])
def test_a_deeply_nested_file_is_one_line_exit_2(tmp_path, capsys, name):
    deep = tmp_path / name
    deep.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    assert main([str(deep), "--out", str(tmp_path / "out")]) == EXIT_BAD_INPUT
    assert "nested too deeply" in one_error_line(capsys)
    assert main(["--ratios-markdown", str(deep)]) == EXIT_BAD_INPUT  # the interleaved tables' reader too
    assert "recursion" in one_error_line(capsys)


def test_a_json_and_its_own_journal_are_one_run_and_refused(tmp_path, capsys):
    results = make_results(**SMALL)
    run_json = RunRecord(results, options={}, environment=ENVIRONMENT, run_id="20261203-101010-ab12").write(
        tmp_path / "run.json")
    journal = tmp_path / "run.journal.jsonl"
    header = {"schema": "detbench.run", "run_id": "20261203-101010-ab12", "environment": ENVIRONMENT}
    journal.write_text(json.dumps(header) + "\n" + "".join(json.dumps(r.to_dict()) + "\n" for r in results))
    code = main([str(run_json), str(journal), "--out", str(tmp_path / "out"), "--fail-on-regression"])
    assert code == EXIT_BAD_INPUT
    line = one_error_line(capsys)
    assert "same run (run_id 20261203-101010-ab12" in line and "run.json" in line and "run.journal.jsonl" in line
    other = RunRecord(results, options={}, environment=ENVIRONMENT, run_id="20261203-111111-cd34").write(
        tmp_path / "other.json")
    assert main([str(run_json), str(other), "--out", str(tmp_path / "out")]) == EXIT_OK  # two runs: compared


def test_throughput_zero_and_a_block_of_1e_300_ms_are_invalid_not_improvements(tmp_path):
    base = [cell_result(GPU_BOUND, 40.0, seed=1), cell_result(HOST_BOUND, 100.0, seed=2)]
    cand = [cell_result(GPU_BOUND, 40.0, seed=3), cell_result(HOST_BOUND, 100.0, seed=4)]
    blocks = cand[0].measurement.blocks
    blocks[0] = dataclasses.replace(blocks[0], median_ms=1e-300)
    base[1].throughput_ips = 0.0
    forward, backward = compare_files(tmp_path, base, cand)
    for comp, side in ((forward, "candidate"), (backward, "baseline")):
        assert set(verdicts(comp).values()) == {INVALID}
        why = dict(zip(comp.table["cell_id"], comp.table["why"]))
        assert f"{side}: a block of 1e-300 ms" in why[GPU_BOUND.id] and len(why[GPU_BOUND.id]) < 200
        assert "throughput 0 images/s is not positive" in why[HOST_BOUND.id]
        assert not comp.table["gating"].any() and comp.table["ratio"].isna().all()
    # every shared cell invalid: nothing comparable (exit 4), not a pass; one judgeable cell beside them: compared
    assert gate([forward]) == gate([backward]) == GATE_INCOMPARABLE
    assert "every cell cand and base share has an implausible figure (2 invalid cells, not judged)" in verdict_line(
        [forward], 0.05)
    base.append(cell_result(dataclasses.replace(GPU_BOUND, batch_size=2), 40.0, seed=5))
    cand.append(cell_result(dataclasses.replace(GPU_BOUND, batch_size=2), 40.0, seed=6))
    forward, _ = compare_files(tmp_path, base, cand)
    assert gate([forward]) == GATE_PASS and verdicts(forward)[base[2].cell.id] != INVALID


def test_the_cli_names_invalid_cells_in_the_verdict_and_comparison_json(tmp_path, capsys):
    base = write_benchmark_json(tmp_path / "base.json", [cell_result(GPU_BOUND, 40.0, seed=1)])
    bad = cell_result(GPU_BOUND, 40.0, seed=2)
    bad.throughput_ips = 0.0
    cand = write_benchmark_json(tmp_path / "cand.json", [bad])
    # the candidate's only cell is implausible: nothing comparable, exit 4 (it used to pass with exit 0)
    code = main([str(base), str(cand), "--out", str(tmp_path / "out"), "--fail-on-regression"])
    assert code == EXIT_NOTHING_COMPARABLE
    out = capsys.readouterr().out
    assert "VERDICT: nothing comparable: every cell cand and base share has an implausible figure" in out
    assert f"invalid (implausible figures, not judged) (cand vs base): 1 cell: {GPU_BOUND.id}" in out
    summary = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert summary["comparisons"][0]["invalid"] == [GPU_BOUND.id]
    assert "### Invalid: cand vs base (1)" in (tmp_path / "out" / "summary.md").read_text()


def test_the_judge_sets_implausible_ratios_and_throughputs_aside_and_says_so():
    paired = judge.pair_evidence([[1.0, 1.01, 0.99], [1.0, 1e-300, 1.02]])
    assert paired.units == 2 and "1 implausible ratio set aside" in paired.note and len(paired.note) < 300
    unpaired = judge.two_sample_evidence([40.0, 41.0, 39.0, 0.0], [40.0, 41.0, 8e303, 39.5], "repeat")
    assert unpaired.units == 3 and "2 implausible throughput(s) set aside" in unpaired.note


def test_csv_text_cells_cannot_start_a_formula_and_numbers_stay_numbers(tmp_path):
    results = make_results(**SMALL)
    ok = next(r for r in results if r.status == "ok")
    evil = dataclasses.replace(ok, cell=dataclasses.replace(ok.cell, model="=HYPERLINK(\"http://x\")"),
                               reason="-2+3", device="@SUM(A1)")
    path = write_journal(tmp_path / "run.jsonl", [evil, *results])
    assert main([str(path), "--out", str(tmp_path / "out")]) == EXIT_OK
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "cells.csv").read_text(encoding="utf-8"))))
    row = next(r for r in rows if "HYPERLINK" in r["model"])
    assert row["model"] == "'=HYPERLINK(\"http://x\")" and row["cell_id"].startswith("'=")
    assert row["reason"] == "'-2+3" and row["device"] == "'@SUM(A1)"
    assert float(row["throughput_ips"]) == pytest.approx(evil.throughput_ips)  # numbers untouched
    for name in ("cells.csv", "recommendations.csv"):
        for record in csv.reader(io.StringIO((tmp_path / "out" / name).read_text(encoding="utf-8"))):
            for value in record:
                assert not value.startswith(("=", "+", "@", "\t", "\r")), (name, value)


def test_a_credential_in_an_old_fingerprint_reaches_no_output(tmp_path):
    environment = {**ENVIRONMENT, "image": SECRET_IMAGE, "env": {"DETBENCH_REGISTRY": SECRET_IMAGE}}
    results = make_results(**SMALL, environment=environment)
    base = write_benchmark_json(tmp_path / "base.json", results)
    cand = write_journal(tmp_path / "cand.jsonl", make_results(**SMALL, environment=environment, speed=0.9))
    assert main([str(base), str(cand), "--out", str(tmp_path / "out")]) == EXIT_OK
    outputs = {path.name: path.read_text(encoding="utf-8") for path in (tmp_path / "out").iterdir()}
    assert {"report.html", "summary.md", "cells.csv", "recommendations.csv", "comparison.csv"} <= set(outputs)
    for name, text in outputs.items():
        assert "s3cr3t" not in text, name
    assert "registry.example.com/img:tag" in outputs["report.html"]  # the image is still shown, without the password



def test_a_history_store_filled_before_redaction_shows_no_credential(tmp_path):
    path = write_benchmark_json(tmp_path / "old.json", make_results(**SMALL))
    run = load_run(path)
    run.environment = {**run.environment, "image": SECRET_IMAGE}  # as an add before runs were redacted stored it
    with closing_store(tmp_path / "history.db", create=True) as store:
        store.add([(run, "0" * 64)])
        frames = [store.runs(), store.series()]
    for frame in frames:
        assert "s3cr3t" not in frame.to_csv() and "registry.example.com/img:tag" in frame.to_csv()
