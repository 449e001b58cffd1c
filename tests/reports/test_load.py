from __future__ import annotations

import json

import pytest

from detbench.bench.core.schema import CellResult
from detbench.reports.load import COLUMNS, LoadError, load_run, load_runs, tidy
from tests.reports.generate import make_results, write_journal


def test_benchmark_json_loads_every_cell_with_its_status(run_file):
    run = load_run(run_file("a.json"))
    assert run.kind == "pytest-benchmark" and run.label == "a"
    statuses = {r.status for r in run.results}
    assert {"ok", "oom", "skipped"} <= statuses
    assert run.environment["gpu"] == "NVIDIA H100 80GB HBM3"
    assert all(isinstance(r, CellResult) for r in run.results)


def test_tidy_has_one_row_per_cell_per_run_and_keeps_failures(run_file):
    runs = load_runs([(None, run_file("a.json")), ("cand", run_file("b.json", speed=0.9))])
    frame = tidy(runs)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == sum(len(r.results) for r in runs)
    assert set(frame["run"]) == {"a", "cand"}
    oom = frame[frame["status"] == "oom"]
    assert not oom.empty and oom["reason"].str.contains("out of memory").all()
    assert oom["throughput_ips"].isna().all()
    ok = frame[frame["status"] == "ok"]
    assert (ok["throughput_ips"] > 0).all() and ok["has_series"].all()
    assert (ok["energy_per_image_j"] > 0).all()


def test_duplicate_labels_are_made_unique(run_file):
    path = run_file("a.json")
    runs = load_runs([(None, path), (None, path)])
    assert [r.label for r in runs] == ["a", "a-2"]


def test_journal_of_an_interrupted_run_loads_and_tolerates_a_truncated_last_line(tmp_path):
    results = make_results(models=["fasterrcnn_resnet50_fpn"], batch_sizes=(1, 2), series_points=3)
    path = write_journal(tmp_path / "run.jsonl", results)
    path.write_text(path.read_text() + json.dumps(results[0].to_dict())[:50], encoding="utf-8")
    run = load_run(path)
    assert run.kind == "journal" and len(run.results) == len(results)
    assert any("truncated" in n for n in run.notes)


def test_journal_keeps_the_last_result_of_a_re_measured_cell(tmp_path):
    first, second = make_results(models=["fasterrcnn_resnet50_fpn"], batch_sizes=(1,), series_points=3)[:2]
    again = CellResult.from_dict({**first.to_dict(), "status": "error", "reason": "re-run failed", "latency": None})
    run = load_run(write_journal(tmp_path / "j.jsonl", [first, second, again]))
    assert len(run.results) == 2
    assert run.by_cell_id()[first.cell.id].status == "error"


def test_telemetry_missing_or_unavailable_is_fine(tmp_path):
    results = make_results(models=["fasterrcnn_resnet50_fpn"], batch_sizes=(1,), series_points=3)
    results[0].telemetry = None
    results[1].telemetry = {"available": False, "reason": "NVML not available"}
    results[2].telemetry = {"available": True, "devices": [{"name": "x", "metrics": {"gpu_util_pct": None}}]}
    frame = tidy([load_run(write_journal(tmp_path / "t.jsonl", results))])
    assert not frame.loc[0, "telemetry_available"] and not frame.loc[1, "telemetry_available"]
    assert frame["energy_per_image_j"].iloc[:3].isna().all()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.json", "{not json", "not valid JSON"),
        ("list.json", "[1, 2]", "expected a pytest-benchmark JSON object"),
        ("package.json", '{"name": "left-pad", "version": "1.0"}', "not a pytest-benchmark result"),
        ("plain.json", '{"benchmarks": [{"name": "test_x", "stats": {}, "extra_info": {}}]}', "no detbench results"),
        ("empty.json", "", "file is empty"),
        (
            "future.json",
            '{"benchmarks": [{"extra_info": {"detbench": {"schema": "detbench.cell", "schema_version": 99}}}]}',
            "schema_version 99 is not supported",
        ),
        (
            "badcell.json",
            '{"benchmarks": [{"name": "t", "extra_info": {"detbench": {"schema": "detbench.cell", '
            '"schema_version": 1, "cell": {"model": "m"}, "status": "exploded"}}}]}',
            "unknown status",
        ),
        ("bad.jsonl", '{"schema": "detbench.cell"}\nnope\n{}\n', "line 1"),
        (
            "env.jsonl",
            '{"schema": "detbench.cell", "schema_version": 1, "cell": {"model": "m"}, "environment": [1]}\n',
            "environment must be an object",
        ),
        ("mid.jsonl", "garbage\n" + "{}\n", "line 1, column 1 is not valid JSON"),
    ],
)
def test_malformed_or_foreign_files_raise_one_line_errors_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(LoadError) as info:
        load_run(path)
    text = str(info.value)
    assert name in text and message in text and "\n" not in text


def test_missing_file_is_a_load_error(tmp_path):
    with pytest.raises(LoadError, match="no such file"):
        load_run(tmp_path / "nope.json")


def test_cells_without_stats_come_from_the_top_level_block_and_unfinished_cells_are_noted(tmp_path):
    from tests.reports.generate import benchmark_json

    results = make_results(
        models=["retinanet_resnet50_fpn"], batch_sizes=(1, 64), modes=("infer", "train"), series_points=3
    )
    data = benchmark_json(results, planned_only=("retinanet_resnet50_fpn-infer-eager-fp32-bs128-gpu1",))
    assert data["detbench"]["not_measured"] and all(
        b["extra_info"]["detbench"]["status"] == "ok" for b in data["benchmarks"]
    )
    path = tmp_path / "real.json"
    path.write_text(json.dumps(data))
    run = load_run(path)
    assert len(run.results) == len(results)
    assert {r.status for r in run.results} >= {"ok", "oom"}
    assert any("1 planned cell(s) have no result" in n and "bs128" in n for n in run.notes)
    # all cells failed: still a valid run
    data["benchmarks"] = []
    path.write_text(json.dumps(data))
    assert {r.status for r in load_run(path).results} <= {"oom", "error", "skipped", "timeout"}
