"""The serving study's plain parts (detbench.bench.core.serving) and its cells in the run record (schema version 5): the
rate search, LoadGen's logs read into figures, the p99's interval, serving cells round-tripped through a run file that
detbench report and detbench history load."""

from __future__ import annotations

import json

import pytest

from detbench.bench.core.record import RunRecord, load_results
from detbench.bench.core.schema import SCHEMA_VERSION, Cell, CellResult
from detbench.bench.core.serving import (
    RateSearch,
    ServeOptionError,
    ServerFacts,
    ServeSettings,
    TrialReply,
    TrialRequest,
    detail_log_values,
    load_curve,
    p99_interval,
    serve_configuration,
    trace_latencies_ns,
    trial_from_logs,
)

pytestmark = pytest.mark.timeout(60)

# Lines as LoadGen 6.0.17 wrote them (a Server trial on this VM), cut to what the parser reads
DETAIL = """\
:::MLLOG {"key": "result_validity", "value": "INVALID", "time_ms": 2100.1, "namespace": "mlperf::logging"}
:::MLLOG {"key": "early_stopping_met", "value": false, "time_ms": 2100.1, "namespace": "mlperf::logging"}
:::MLLOG {"key": "result_invalid_reason", "value": "", "time_ms": 2100.1}
:::MLLOG {"key": "result_scheduled_samples_per_sec", "value": 95.2086, "time_ms": 2100.1}
:::MLLOG {"key": "result_completed_samples_per_sec", "value": 94.9953, "time_ms": 2100.1}
:::MLLOG {"key": "loadgen_git_log_message", "value": "cut short
"""
TRACE = """\
{"traceEvents":[
{"name":"IssueQuery","ph":"X","pid":19592,"tid":19592,"ts":133.988,"dur":20.080,"args":{}},
{"name":"Latency","ph": "C","pid":19592,"ts":133.768,"args":{ "issue_delay":80,"issue_to_done":2044577}},
{"name":"Sample","cat":"default","ph":"b","pid":19592,"id":0,"ts":133.768,"args":{"sample_seq":0,"query_seq":0,\
"sample_idx":3,"issue_start_ns":80,"complete_ns":2044657}},
{"name":"Sample","cat":"default","ph":"e", "pid":19592,"id":0,"ts":2178.425},
{"name":"Sample","cat":"default","ph":"b","pid":19592,"id":1,"ts":9119.371,"args":{"sample_seq":1,"query_seq":1,\
"sample_idx":10,"issue_start_ns":79040,"complete_ns":2126452}},
"""


def test_loadgen_logs_read_into_a_trial():
    detail = detail_log_values(DETAIL)
    assert detail["result_completed_samples_per_sec"] == 94.9953 and detail["early_stopping_met"] is False
    assert trace_latencies_ns(TRACE) == [2044657, 2126452]  # from the scheduled arrival, issue delay included
    latencies = [2.0 + i / 100 for i in range(200)]
    trial = trial_from_logs(detail, latencies, target_qps=100.0, bound_ms=3.9, mean_batch=1.0, histogram=None,
                            wall_s=2.1)
    assert trial.status == "ok" and trial.queries == 200 and trial.achieved_qps == 94.9953
    assert trial.p99_ms == pytest.approx(3.9701) and trial.met_bound is False and trial.loadgen_valid is False
    assert trial.reason is None and trial.early_stopping_met is False
    assert trial_from_logs(detail, [], target_qps=1.0, bound_ms=1.0, mean_batch=None, histogram=None,
                           wall_s=0.1).status == "error"


def test_the_p99_interval_comes_from_order_statistics():
    """Of 500 latencies the p99 (the 5th slowest) has a 95 % interval between about the 10th slowest and the
    slowest; 300 are too few for an upper bound at 95 % (P(fewer than 300 below the p99) = 1 - 0.99^300 = 0.95)."""
    ordered = [float(i) for i in range(1, 501)]
    low, high = p99_interval(ordered)
    assert 488 <= low <= 493 and high == 500
    assert p99_interval(ordered[:300]) == []


def _search(capacity: float, start: float, **kw) -> RateSearch:
    search = RateSearch(start, **kw)
    while (rate := search.next_rate()) is not None:
        search.record(rate, rate <= capacity)
    return search


@pytest.mark.parametrize("start", [10.0, 100.0, 1000.0])
def test_the_rate_search_brackets_the_highest_passing_rate_within_its_precision(start):
    search = _search(123.0, start, max_trials=20)
    assert 123.0 / 1.1 <= search.sustainable_qps <= 123.0 and search.stop_reason.startswith("bracketed")


def test_the_rate_search_stops_at_its_trial_count_or_when_nothing_meets_the_bound():
    capped = _search(123.0, 10.0, max_trials=3)
    assert len(capped.tried) == 3 and capped.sustainable_qps == 40.0 and "3 trials run" in capped.stop_reason
    never = _search(0.0, 100.0, max_trials=20)
    assert never.sustainable_qps is None and "no rate down to" in never.stop_reason
    assert [rate for rate, _ in never.tried] == [100.0, 100.0, 50.0, 50.0, 25.0, 25.0, 12.5, 12.5, 6.25, 6.25,
                                                 3.125, 3.125, 1.5625, 1.5625]
    assert _search(123.0, 100.0, max_trials=3).stop_reason == "3 trials run; 100 met the bound, 200 did not"
    assert _search(123.0, 100.0, max_trials=2).stop_reason == "2 trials run; 100 met the bound, 200 failed once"


def test_a_rate_fails_only_when_it_fails_twice_so_one_trial_slowed_by_a_neighbour_does_not_cap_the_search():
    """The first trial at 200/s is slowed by the host (it fails though the server sustains 246/s): it is tried again,
    passes, and the search goes on above it; a rate over the capacity fails twice in a row before it bounds it."""
    search, slowed = RateSearch(100.0, max_trials=20), [200.0]
    while (rate := search.next_rate()) is not None:
        if rate in slowed:
            slowed.remove(rate)
            search.record(rate, False)
        else:
            search.record(rate, rate <= 246.0)
    assert search.tried[:4] == [(100.0, True), (200.0, False), (200.0, True), (400.0, False)]
    assert 246.0 / 1.1 <= search.sustainable_qps <= 246.0 and search.stop_reason.startswith("bracketed")
    for rate, met in search.tried[3:]:
        assert met or search.tried.count((rate, False)) == 2, search.tried


def test_bad_settings_are_one_line_errors_naming_the_valid_choices():
    with pytest.raises(ServeOptionError, match="unknown scenario multi-stream; valid: single-stream, server, offline"):
        ServeSettings(("multi-stream",))
    with pytest.raises(ServeOptionError, match=r"bad --queries 50; valid: 100\.\.1e\+07"):
        ServeSettings(queries=50)
    with pytest.raises(ServeOptionError, match="--batch-wait-ms needs dynamic batching"):
        ServeSettings(batch_wait_ms=5.0)


def test_serving_cells_have_their_own_ids_and_matrix_cells_keep_theirs():
    matrix_cell = Cell("ssdlite320_mobilenet_v3_large", image_size=(224, 224))
    assert "scenario" not in matrix_cell.to_dict() and matrix_cell.id.endswith("-bs1-gpu1-224x224")
    server = ServeSettings(max_batch=4, batch_wait_ms=5.0, latency_bound_ms=250.0).cell(
        "ssdlite320_mobilenet_v3_large", "onnxruntime", (224, 224), "server")
    assert server.id == ("ssdlite320_mobilenet_v3_large-infer-onnxruntime-fp32-bs4-gpu1-224x224"
                         "-server-p99le250ms-wait5ms")
    assert server.configuration == "onnxruntime/fp32/server-p99le250ms-wait5ms"
    assert Cell.from_dict(server.to_dict()) == server
    with pytest.raises(ValueError, match="latency_bound_ms is the server scenario's p99 bound"):
        Cell("m", scenario="single-stream", latency_bound_ms=100.0)
    with pytest.raises(ValueError, match="unknown scenario 'multi'; valid: single-stream, server, offline"):
        Cell("m", scenario="multi")


def _fake_run(capacity: float):
    """Trials of a server that meets the bound up to ``capacity`` queries/s, with latencies to match."""

    def run(request: TrialRequest) -> TrialReply:
        rate = request.target_qps
        slow = rate is not None and rate > capacity
        latencies = [5.0 + (i % 10) * (30.0 if slow else 1.0) for i in range(request.queries)]
        trial = trial_from_logs({"result_completed_samples_per_sec": rate or 100.0}, latencies, target_qps=rate,
                                bound_ms=request.bound_ms, mean_batch=1.0, histogram="HISTFAAAA", wall_s=1.0)
        return TrialReply(trial, latencies)

    return run


def _cells() -> list[CellResult]:
    settings = ServeSettings(("single-stream", "server", "offline"), latency_bound_ms=100.0, queries=100)
    facts = ServerFacts(step_ms=20.0, load_generator="mlperf-loadgen 6.0.17", threads=2, device="cpu",
                        postprocess={"policy": "score-quantile", "target_candidates_per_image": 1000})
    cells = serve_configuration(settings, "ssdlite320_mobilenet_v3_large", "eager", (224, 224), facts, _fake_run(60.0))
    never = serve_configuration(ServeSettings(("server",), latency_bound_ms=1.0, queries=100, search_trials=3),
                                "ssdlite320_mobilenet_v3_large", "torchscript", (224, 224), facts, _fake_run(60.0))
    return cells + never


def test_a_configuration_gives_a_cell_per_scenario_with_its_trials_and_the_sustainable_rate():
    single, server, offline, never = _cells()
    assert [c.status for c in (single, server, offline)] == ["ok"] * 3
    assert server.serve.sustainable_qps <= 60.0 and server.serve.sustainable_qps > 60.0 / 1.1
    assert server.serve.trials[server.serve.reported_trial].met_bound and server.throughput_ips == \
        server.serve.sustainable_qps and len(server.times_ms) == 100 and server.latency.p99_ms <= 100.0
    # the search starts at half of what SingleStream's median sustains (500 / 9.5 ms), then doubles
    assert [t.target_qps for t in server.serve.trials][:2] == pytest.approx([500 / 9.5, 1000 / 9.5])
    assert single.serve.trials[0].target_qps is None and single.latency is not None
    assert never.status == "error" and "no arrival rate met p99 <= 1 ms" in never.reason and not never.times_ms


def test_serving_cells_round_trip_through_a_run_file_that_report_and_history_load(tmp_path):
    from detbench.reports.cli import main as report
    from detbench.reports.history.cli import main as history

    cells = _cells()
    path = RunRecord(cells, options={"study": "serve"}, environment={"torch": "2.14.1"},
                     tool="detbench.bench.tools.serve").write(tmp_path / "serve.json")
    data = json.loads(path.read_text())
    assert data["detbench"]["schema_version"] == SCHEMA_VERSION == 5 and len(data["benchmarks"]) == 3
    back = load_results(path)
    assert {c.cell.id: c for c in back}.keys() == {c.cell.id for c in cells}
    server = next(c for c in back if c.cell.scenario == "server" and c.status == "ok")
    assert server.serve == cells[1].serve and server.times_ms == cells[1].times_ms
    assert report([str(path), "--out", str(tmp_path / "report")]) == 0
    assert "server-p99le100ms" in (tmp_path / "report" / "cells.csv").read_text()
    summary = (tmp_path / "report" / "summary.md").read_text()
    rate = cells[1].serve.sustainable_qps
    line = ("serve ssdlite320_mobilenet_v3_large (224x224) at"
            f" &lt;= 100 ms p99: eager, no batching, {rate:.3g} queries/s")
    assert line in summary and "| knee |" in summary and "meets (sustainable)" in summary  # Markdown-escaped <=
    assert "What should I use?" not in summary  # serving cells are not the matrix's throughput candidates
    assert 'alt="Serving: p99 vs offered load"' in (tmp_path / "report" / "report.html").read_text()
    assert history(["add", str(tmp_path / "h.sqlite"), str(path)]) == 0


def test_the_load_curve_marks_the_knee_where_p99_doubles_over_the_lightest_load():
    server = _cells()[1]
    points = load_curve(server.serve)
    assert [p.offered_qps for p in points] == sorted(p.offered_qps for p in points)
    knees = [p for p in points if p.knee]
    # the fake server's p99 jumps from ~14 ms to ~275 ms past its capacity of 60/s: the knee is the first rate above
    assert len(knees) == 1 and knees[0].offered_qps > 60.0 and knees[0].offered_qps == min(
        p.offered_qps for p in points if p.offered_qps > 60.0)
