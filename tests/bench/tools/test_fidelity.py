"""detbench.bench.tools.fidelity: the checks' arithmetic, and the interleaved check on a tiny model on the CPU."""

from __future__ import annotations

import statistics

import pytest

from detbench.bench.core.options import RunOptions, import_model_modules
from detbench.bench.core.schema import Cell
from detbench.bench.tools import fidelity
from detbench.bench.tools.fidelity import FidelityReport

MODULES = ("tests.bench.tiny_models",)


def report(suite: list[float], bare: list[float]) -> FidelityReport:
    return FidelityReport("c", "cpu", "perf-counter+sync", 8, 10, suite_median_ms=suite, suite_mean_ms=suite,
                          bare_ms=bare)


def test_a_host_that_slows_down_for_a_while_cancels_in_the_paired_gap_but_shows_in_the_sequential_repeat():
    # from round 3 on, both timings run 40% slower (the host's slow state)
    r = report(suite=[100, 101, 100, 141, 140, 141], bare=[102, 103, 102, 144, 143, 144])
    assert r.throughput_gap == pytest.approx(0.02, abs=0.002)
    assert r.repeat_gap == pytest.approx(0.01)  # pairs of neighbouring rounds mostly share a state
    assert r.sequential_repeat_gap > 0.3  # first half vs second half does not
    assert r.passed


def test_a_timer_that_reads_8_percent_slow_fails_the_throughput_check():
    r = report(suite=[108.0] * 6, bare=[100.0] * 6)
    assert r.throughput_gap == pytest.approx(1 - 100 / 108)
    assert not r.passed and r.to_dict()["passed"] is False


def test_a_suite_that_wanders_between_interleaved_rounds_fails_the_repeat_check():
    r = report(suite=[100, 110, 100, 110, 100, 110], bare=[105] * 6)
    assert r.repeat_gap == pytest.approx(0.10)
    assert not r.passed


def test_check_alternates_the_matrix_block_and_the_bare_loop_on_one_cell_session(monkeypatch):
    from detbench.bench.runtime.session import CellSession

    import_model_modules(MODULES)
    calls: list[str] = []
    real_block, real_bare = CellSession.time_block, fidelity.bare_loop_ms
    monkeypatch.setattr(CellSession, "time_block",
                        lambda self, *a, **k: calls.append("suite") or real_block(self, *a, **k))
    monkeypatch.setattr(fidelity, "bare_loop_ms", lambda *a, **k: calls.append("bare") or real_bare(*a, **k))
    cell = Cell("tiny_convnet", "infer", "eager", "fp32", 2, 1, None)
    result = fidelity.check(cell, RunOptions(profile="fidelity", telemetry_hz=0), rounds=4)
    assert calls == ["suite", "bare", "bare", "suite", "suite", "bare", "bare", "suite"]
    data = result.to_dict()
    assert data["rounds"] == 4 and len(data["suite_median_ms_per_round"]) == 4 and len(data["host_canary_ms"]) == 8
    assert data["suite_throughput_ips"] > 0 and data["bare_loop_throughput_ips"] > 0
    # their size is the shared CPU's (the unit tests above check the arithmetic); here, that the gaps are the
    # ones of the rounds this run timed: each round's bare/suite ratio, and odd rounds over the even before
    suite, bare = data["suite_median_ms_per_round"], data["bare_loop_ms_per_round"]
    assert data["paired_gaps"] == pytest.approx([b / s - 1.0 for s, b in zip(suite, bare)])
    assert data["throughput_gap"] == pytest.approx(abs(statistics.median(data["paired_gaps"])))
    pairs = [odd / even - 1.0 for even, odd in zip(suite[0::2], suite[1::2])]
    assert data["repeat_gap"] == pytest.approx(abs(statistics.median(pairs)))
    assert data["passed"] is (data["throughput_gap"] <= fidelity.THROUGHPUT_TOLERANCE
                              and data["repeat_gap"] <= fidelity.REPEAT_TOLERANCE)
    cell_result = result.cell_result  # the matrix's own result for those blocks: FLOPs counted, 4 rounds
    assert cell_result.status == "ok" and cell_result.measurement.rounds == 4 and cell_result.flops_per_image > 0


def test_cli_exit_status_follows_the_verdict_and_bad_input_is_one_line(capsys):
    status = fidelity.main(["--model", "tiny_convnet", "--model-modules", MODULES[0], "--batch-size", "2",
                            "--rounds", "2"])
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == ("PASS" if status == 0 else "FAIL") and status in (0, 1)
    with pytest.raises(SystemExit) as exit_info:
        fidelity.main(["--model", "nope"])
    assert exit_info.value.code == 2
    assert "unknown model 'nope'; valid:" in capsys.readouterr().err


def test_a_cell_that_cannot_run_is_one_line_and_exit_2(capsys):
    status = fidelity.main(["--model", "tiny_needs_extra", "--model-modules", MODULES[0], "--rounds", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert "MissingExtraError" in err[0] and "pip install 'detbench[fake]'" in err[0]
