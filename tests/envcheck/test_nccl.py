"""NCCL: a rank that never answers becomes a failed check after the timeout (never a hang)."""

import sys
import time

import pytest

from envcheck.checks import nccl

HANG = [sys.executable, "-c", "import time; time.sleep(600)"]


def test_hung_ranks_fail_after_the_timeout():
    start = time.monotonic()
    outcome = nccl.run_allreduce(2, 0.5, commands=[HANG, HANG])
    assert time.monotonic() - start < 10
    assert outcome.status == "fail"
    assert "did not finish within 0.5 s" in outcome.detail
    assert "NCCL_DEBUG=INFO" in outcome.remedy


def test_crashing_rank_fails_with_its_error():
    crash = [sys.executable, "-c", "raise SystemExit('ncclInternalError: something broke')"]
    outcome = nccl.run_allreduce(1, 30, commands=[crash])
    assert outcome.status == "fail"
    assert "ncclInternalError" in outcome.detail


def test_wrong_sum_fails():
    report = '{"rank": 0, "correct": false, "expected": 3.0, "got": 2.0, "time_s": 0.001, "nccl": "2.27.3"}'
    outcome = nccl.run_allreduce(2, 30, commands=[[sys.executable, "-c", f"print({report!r})"]] * 2)
    assert outcome.status == "fail"
    assert "wrong sum" in outcome.detail


def test_good_ranks_pass_with_nccl_tests_bandwidth():
    reports = [f'{{"rank": {r}, "correct": true, "expected": 3.0, "got": 3.0, "time_s": 0.002, "nccl": "2.27.3"}}'
               for r in range(2)]
    commands = [[sys.executable, "-c", f"print({rep!r})"] for rep in reports]
    outcome = nccl.run_allreduce(2, 30, message_bytes=200_000_000, commands=commands)
    assert outcome.status == "pass", outcome.detail
    assert outcome.measured["algbw_gbs"] == pytest.approx(100.0)
    assert outcome.measured["busbw_gbs"] == pytest.approx(100.0)  # 2*(n-1)/n = 1 for n = 2


def test_bus_bandwidth_matches_nccl_tests():
    algbw, busbw = nccl.bus_bandwidth_gbs(1_000_000_000, 0.01, 8)
    assert algbw == pytest.approx(100.0)
    assert busbw == pytest.approx(175.0)
    assert nccl.bus_bandwidth_gbs(10**9, 1.0, 1)[1] == 0.0


def test_child_env_disables_nvls_unless_set(monkeypatch):
    monkeypatch.delenv("NCCL_NVLS_ENABLE", raising=False)
    assert nccl.nccl_env()["NCCL_NVLS_ENABLE"] == "0"
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "1")
    assert nccl.nccl_env()["NCCL_NVLS_ENABLE"] == "1"


def test_worker_commands_one_per_rank():
    commands = nccl.worker_commands(4, 29500, 1024, 10)
    assert len(commands) == 4
    assert [c[c.index("--rank") + 1] for c in commands] == ["0", "1", "2", "3"]


def test_one_rank_reports_busbw_factor_zero():
    report = '{"rank": 0, "correct": true, "expected": 1.0, "got": 1.0, "time_s": 0.001, "nccl": "2.27.3"}'
    outcome = nccl.run_allreduce(1, 30, commands=[[sys.executable, "-c", f"print({report!r})"]])
    assert outcome.status == "pass"
    assert outcome.measured["busbw_factor"] == 0 and outcome.measured["busbw_gbs"] == 0
    assert "busbw factor 0" in outcome.detail
