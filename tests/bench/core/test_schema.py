"""Result schema version 2: typed records round-trip, version-1 files load, malformed input names its field."""

from __future__ import annotations

import json

import pytest

from detbench.bench.core.comparison import ModelComparison
from detbench.bench.core.schema import (
    SCHEMA_VERSION,
    BlockRecord,
    Cell,
    CellResult,
    Failure,
    Measurement,
    PairedRatio,
    RepeatFailure,
    SchemaError,
    SetupTimes,
)
from detbench.reports.cli import main as report_main
from detbench.reports.load import LoadError, load_run
from tests.examples import EXAMPLES, RUNS, example


def full_result() -> CellResult:
    cell = Cell("retinanet_resnet50_fpn", "infer", "compiled", "amp-bf16", 8, 1, (480, 640))
    blocks = [BlockRecord(round=i, median_ms=50.0 + i, iterations=10, host_canary_ms=1.2, start_offset_s=i * 3.0,
                          wall_s=0.5) for i in range(3)]
    return CellResult(cell, times_ms=[50.0, 51.0, 52.0], throughput_ips=160.0, timer="cuda-events",
                      setup=SetupTimes(build_s=1.0, postprocess_calibration_s=2.0, flop_count_s=0.0, total_s=55.0),
                      measurement=Measurement(timer="cuda-events", iterations=30, timed_s=1.5, isolation="model",
                                              rounds=3, blocks=blocks, cell_wall_s=58.0, overhead_s=56.5),
                      ratio=PairedRatio(cell.id.replace("compiled-bf16", "eager-fp32"), 1.4, 1.3, 1.5, [1.3, 1.4, 1.5]),
                      failure=None, model_runtime_notes={"score_thresh": 0.1},
                      telemetry={"available": True, "mean_power_w": 400.0,
                                 "devices": [{"name": "H100", "metrics": {"gpu_util_pct": {"mean": 80}},
                                              "series": {"t_s": [0, 1]}}]})


def test_a_current_version_result_round_trips_through_json():
    result = full_result()
    data = json.loads(json.dumps(result.to_dict()))
    again = CellResult.from_dict(data)
    assert again == result and again.schema_version == SCHEMA_VERSION == 5
    assert again.measurement.blocks[2].start_offset_s == 6.0 and again.ratio.per_round == [1.3, 1.4, 1.5]
    summary = again.telemetry_summary
    assert summary.available and summary.gpu_util_pct_mean == 80 and summary.devices[0].has_series


@pytest.mark.parametrize("name", RUNS)
def test_every_committed_result_file_still_loads(name):
    path = example(name)
    data = json.loads(path.read_text()) if path.suffix == ".json" else None
    run = load_run(path)
    assert run.results
    if path.suffix == ".jsonl" or "benchmarks" in (data or {}):  # version 1: config pieces lifted into records
        measured = [r for r in run.results if r.status == "ok"]
        assert all(r.measurement is not None and r.measurement.timed_s > 0 for r in measured if r.cell.scenario is None)
        # serving cells (schema 5) carry LoadGen's trials instead of timed blocks
        assert all(r.serve is not None and r.serve.trials for r in measured if r.cell.scenario is not None)


def test_version_1_interleaved_results_become_cells_with_their_ratios():
    data = json.loads((EXAMPLES / "h100-ratios-1.json").read_text())["models"][0]
    comparison = ModelComparison.from_dict({"schema": "detbench.interleaved", "schema_version": 1, **data})
    cells = comparison.cell_results()
    assert cells[0].cell.id.split("-bs")[0].endswith("infer-eager-fp32")
    quoted = {r.variant: r.median for r in comparison.ratios}
    assert [c.ratio.median for c in cells[1:] if c.ratio] == [quoted[v.variant] for v in comparison.variants[1:]
                                                              if v.variant in quoted]


def _ok() -> dict:
    return full_result().to_dict()


@pytest.mark.parametrize("change, field", [
    (lambda d: d.update(cell=None), "cell"),
    (lambda d: d["cell"].update(model=3), "model"),
    (lambda d: d.update(throughput_ips=1e308), "throughput_ips"),
    (lambda d: d.update(throughput_ips=float("nan")), "throughput_ips"),
    (lambda d: d.update(peak_memory_bytes=int("9" * 400)), "peak_memory_bytes"),
    (lambda d: d.update(telemetry={"available": True, "devices": -1}), "telemetry.devices"),
    (lambda d: d.update(times_ms=[1.0, "fast"]), "times_ms[1]"),
    (lambda d: d.update(reason=7), "reason"),
    (lambda d: d["measurement"]["blocks"][0].update(median_ms=-5.0), "measurement.blocks[0].median_ms"),
    (lambda d: d["measurement"].update(surprise=1), "surprise"),
    (lambda d: d.update(config={"x": {"y": int("1" * 400)}}), "config.x.y"),
    (lambda d: d.update(config={"a": [1.0, {"b": float("inf")}]}), "config.a[1].b"),
    (lambda d: d.update(environment={"gpus": [{"memory_bytes": -3e18}]}), "environment.gpus[0].memory_bytes"),
    (lambda d: d.update(ratio="fast"), "ratio"),
])
def test_malformed_results_raise_a_schema_error_naming_the_field(change, field):
    data = _ok()
    change(data)
    with pytest.raises(SchemaError) as info:
        CellResult.from_dict(data, source="benchmarks[0]")
    assert field in str(info.value) and "\n" not in str(info.value)


def test_the_report_turns_a_malformed_file_into_one_line_and_exit_2(tmp_path, capsys):
    data = _ok()
    data["throughput_ips"] = 1e308
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(data) + "\n")
    with pytest.raises(LoadError, match=r"bad\.jsonl.*throughput_ips"):
        load_run(path)
    code = report_main([str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "bad.jsonl" in err[0] and "throughput_ips" in err[0]


def test_the_tidy_table_has_ratio_block_spread_and_overhead_columns(tmp_path):
    from detbench.reports.load import tidy

    path = tmp_path / "ok.jsonl"
    oom = CellResult(Cell("m"), status="oom", reason="x", failure=Failure(error_type="E"))
    path.write_text(json.dumps(_ok()) + "\n" + json.dumps(oom.to_dict()) + "\n")
    frame = tidy([load_run(path)])
    row = frame.iloc[0]
    assert row["ratio"] == 1.4 and row["ratio_q1"] == 1.3 and row["ratio_q3"] == 1.5
    assert row["blocks"] == 3 and row["block_spread"] == pytest.approx(1.0 / 51.0)
    assert row["overhead_s"] == 56.5 and row["gpu_util_pct_mean"] == 80 and bool(row["has_series"])
    assert frame.iloc[1]["status"] == "oom"


def test_old_compiled_cells_load_as_the_default_mode_with_unchanged_ids():
    old = Cell("retinanet_resnet50_fpn", "infer", "compiled", "amp-bf16", 8)
    new = Cell("retinanet_resnet50_fpn", "infer", "default", "amp-bf16", 8)
    assert old == new and old.compile == "default" and old.compiled
    assert new.id == "retinanet_resnet50_fpn-infer-compiled-bf16-bs8-gpu1"
    assert Cell.from_dict({"model": "m", "compile": "compiled", "batch_size": 8}).id == "m-infer-compiled-fp32-bs8-gpu1"
    assert Cell("m", compile="reduce-overhead").id == "m-infer-compiled-reduce-overhead-fp32-bs1-gpu1"
    channels_last = Cell("m", memory_format="channels_last", batch_size="max")
    assert channels_last.id == "m-infer-eager-fp32-channels_last-bsmax-gpu1"
    assert Cell("m").id == "m-infer-eager-fp32-bs1-gpu1"  # contiguous adds nothing to the id
    for bad, word in ((dict(compile="jit"), "valid: eager, default"), (dict(memory_format="nhwc"), "channels_last"),
                      (dict(batch_size="all"), "positive integer or 'max'")):
        with pytest.raises(ValueError, match=word):
            Cell("m", **bad)


def test_compile_details_and_a_batch_search_round_trip_and_are_validated():
    from detbench.bench.core.schema import BatchProbe, BatchSearch, CompileDetails, SchemaError

    cell = Cell("retinanet_resnet50_fpn", "infer", "eager", "amp-bf16", "max", memory_format="channels_last")
    search = BatchSearch(start=8, limit=512, tolerance=0.25, largest_fit=96, smallest_oom=112, stop_reason="x",
                         probes=[BatchProbe(96, "ok", 40 * 2**30, None, 180.0), BatchProbe(112, "oom", None, 2**31)])
    result = CellResult(cell, throughput_ips=180.0, batch_search=search,
                        compile_details=CompileDetails("reduce-overhead", 2, 3, "skipping cudagraphs due to nonzero"))
    again = CellResult.from_dict(result.to_dict())
    assert again == result and again.measured_batch_size == 96 and again.batch_search.resolved
    assert CellResult(Cell("m", batch_size=4)).measured_batch_size == 4
    data = result.to_dict()
    data["batch_search"]["probes"][0]["peak_gib"] = 40
    with pytest.raises(SchemaError, match=r"batch_search.probes\[0\]: unknown field\(s\) peak_gib"):
        CellResult.from_dict(data)


def test_blocks_written_before_repeats_read_as_repeat_0_and_repeat_failures_round_trip():
    data = full_result().to_dict()
    for block in data["measurement"]["blocks"]:
        del block["repeat"]
    del data["repeat"], data["repeat_failures"], data["measurement"]["repeats"]
    old = CellResult.from_dict(data)
    assert {b.repeat for b in old.measurement.blocks} == {0} and old.measurement.repeats == 1 and old.repeat is None
    result = full_result()
    result.repeat_failures = [RepeatFailure(1, "oom", "CUDA out of memory", Failure(error_type="OutOfMemoryError"))]
    again = CellResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result and again.repeat_failures[0].failure.error_type == "OutOfMemoryError"


@pytest.mark.parametrize("change, words", [
    (lambda d: d.update(repeat_failures=[{"repeat": 1, "status": "lost"}]), "unknown repeat status 'lost'"),
    (lambda d: d.update(repeat_failures={"repeat": 1}), "repeat_failures must be a list"),
    (lambda d: d["measurement"]["blocks"][0].update(repeat=-1), r"blocks\[0\]\.repeat"),
    (lambda d: d.update(repeat=1.5), "repeat must be an integer"),
])
def test_malformed_repeat_fields_name_the_field(change, words):
    data = full_result().to_dict()
    change(data)
    with pytest.raises(SchemaError, match=words):
        CellResult.from_dict(data)
