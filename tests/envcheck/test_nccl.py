"""NCCL check: the all-reduce sweep (real, over gloo on the CPU), busbw math, failures, hangs."""

import json
import sys
import tempfile
import time

import pytest
import torch

from detbench.envcheck.checks import nccl
from detbench.envcheck.links import LinkBudget
from detbench.envcheck.nccl_worker import parse_sizes

HANG = [sys.executable, "-c", "import time; time.sleep(600)"]


def printing(report: dict, code: int = 0) -> list[str]:
    """A fake worker that prints ``report`` as its JSON line and exits with ``code``."""
    return [sys.executable, "-c", f"import sys; print({json.dumps(report)!r}); sys.exit({code})"]


def sweep_report(world_size: int, times: dict[int, float | None], wrong: dict[int, list[int]] | None = None) -> dict:
    wrong = wrong or {}
    return {"world_size": world_size, "backend": "nccl", "nccl": "2.27.3", "warmup_iterations": 5, "iterations": 20,
            "sizes": [{"bytes": size, "wrong_ranks": wrong.get(size, []), "time_s": t} for size, t in times.items()]}


def test_a_real_two_rank_gloo_sweep_checks_and_times_every_size(monkeypatch):
    monkeypatch.delenv("NCCL_NVLS_ENABLE", raising=False)
    monkeypatch.setenv("NVSHMEM_DISABLE_NVLS", "1")  # the user's setting, recorded as it is
    outcome = nccl.run_sweep(2, 120, sizes="4K,64K", backend="gloo")
    assert outcome.status == "pass", (outcome.detail, outcome.remedy)
    rows = outcome.measured["sizes"]
    assert [r["bytes"] for r in rows] == [4096, 65536]
    assert all(r["correct"] and r["busbw_gbs"] > 0 and r["time_us"] > 0 for r in rows)
    assert outcome.measured["large_message_bytes"] == 65536  # nothing >= 256 MiB: the largest message
    assert outcome.measured["nccl_nvls_enable"] == "unset"  # nothing imposed
    assert outcome.measured["nvshmem_disable_nvls"] == "1"


def test_sizes_follow_nccl_tests_units():
    assert parse_sizes("1M,4M,16M,64M,256M,1G") == [2**20, 2**22, 2**24, 2**26, 2**28, 2**30]
    with pytest.raises(ValueError, match="bad message size '3'"):
        parse_sizes("3")
    with pytest.raises(ValueError, match="K/M/G"):
        parse_sizes("1T")


def test_hung_ranks_fail_after_the_timeout():
    start = time.monotonic()
    outcome = nccl.run_sweep(2, 0.5, command=HANG)
    assert time.monotonic() - start < 10
    assert outcome.status == "fail"
    assert "did not finish within 0.5 s" in outcome.detail
    assert "NCCL_DEBUG=INFO" in outcome.remedy


def test_a_failed_rank_is_named_with_the_nccl_message():
    error = "torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled system error"
    outcome = nccl.run_sweep(2, 30, command=printing({"failed_rank": 1, "error": error}, code=1))
    assert outcome.status == "fail"
    assert outcome.detail == f"rank 1 failed: {error}"


def test_a_crash_without_a_report_quotes_stderr():
    crash = [sys.executable, "-c", "raise SystemExit('ncclInternalError: something broke')"]
    outcome = nccl.run_sweep(1, 30, command=crash)
    assert outcome.status == "fail"
    assert "ncclInternalError" in outcome.detail


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where the NCCL backend cannot start")
def test_a_real_rank_failure_names_the_rank(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the user's TMPDIR, in the sweep's process and in this one
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    outcome = nccl.run_sweep(2, 120, sizes="4K", backend="nccl")
    assert outcome.status == "fail"
    assert outcome.detail.startswith("rank ") and " failed: " in outcome.detail
    assert list(tmp_path.iterdir()) == []  # no rank's error file (pytorch-errorfile-*) left in it


def test_wrong_sum_fails_naming_size_and_ranks():
    report = sweep_report(2, {2**20: 0.001, 2**22: 0.002}, wrong={2**22: [1]})
    outcome = nccl.run_sweep(2, 30, command=printing(report))
    assert outcome.status == "fail"
    assert "wrong sum at 4 MiB on ranks [1]" in outcome.detail


def test_busbw_per_size_is_nccl_tests_arithmetic():
    report = sweep_report(4, {2**20: 1e-4, 2**30: 0.01})
    rows = nccl.size_rows(report)
    assert rows[0]["algbw_gbs"] == pytest.approx(2**20 / 1e-4 / 1e9, abs=0.01)
    assert rows[1]["algbw_gbs"] == pytest.approx(107.4, abs=0.01)
    assert rows[1]["busbw_gbs"] == pytest.approx(161.1, abs=0.01)  # 2(n-1)/n = 1.5 for n = 4
    assert rows[1]["time_us"] == 10000.0


def test_bus_bandwidth_matches_nccl_tests():
    algbw, busbw = nccl.bus_bandwidth_gbs(1_000_000_000, 0.01, 8)
    assert algbw == pytest.approx(100.0)
    assert busbw == pytest.approx(175.0)
    assert nccl.bus_bandwidth_gbs(10**9, 1.0, 1)[1] == 0.0


def test_large_message_busbw_is_the_best_at_256_mib_or_more():
    rows = [
        {"bytes": 2**26, "busbw_gbs": 500.0},
        {"bytes": 2**28, "busbw_gbs": 290.0},
        {"bytes": 2**30, "busbw_gbs": 280.0},
    ]
    assert nccl.large_message_busbw(rows) == (290.0, 2**28)


def test_one_rank_checks_correctness_only():
    outcome = nccl.run_sweep(1, 30, command=printing(sweep_report(1, {2**20: None, 2**30: None})))
    assert outcome.status == "pass"
    assert "bandwidth not measured" in outcome.detail
    assert "large_message_busbw_gbs" not in outcome.measured


NVLINK_450 = LinkBudget("nvlink", 450.0, "NVLink 4.0, 18 links into the set on GPU 0 (direct): 450 GB/s per direction")
PCIE_31 = LinkBudget("pcie", 31.5, "PCIe 4.0 x16 (GPU 0): 31.5 GB/s per direction",
                     pairs=[{"gpus": [0, 1], "p2p_read": "disabled by regkey"}])


def test_busbw_above_half_the_nvlink_rate_passes():
    # the 2x H100 figure: 295 GB/s against 450 GB/s per direction
    outcome = nccl.run_sweep(2, 30, budget=NVLINK_450, command=printing(sweep_report(2, {2**30: 2**30 / 295e9})))
    assert outcome.status == "pass", outcome.detail
    assert "66% of the NVLink 4.0" in outcome.detail
    assert outcome.measured["link"]["link_type"] == "nvlink"


def test_busbw_below_half_the_nvlink_rate_warns_naming_the_link_and_remedy(monkeypatch):
    monkeypatch.setenv("NCCL_P2P_DISABLE", "1")
    outcome = nccl.run_sweep(2, 30, budget=NVLINK_450, command=printing(sweep_report(2, {2**30: 2**30 / 20e9})))
    assert outcome.status == "warn"
    assert "only 4% of the NVLink 4.0" in outcome.detail and "(nvlink)" in outcome.detail
    assert "NCCL_P2P_DISABLE=1" in outcome.remedy and "--ipc=host" in outcome.remedy


def test_busbw_below_half_of_pcie_names_acs_iommu_and_p2p():
    outcome = nccl.run_sweep(2, 30, budget=PCIE_31, command=printing(sweep_report(2, {2**30: 2**30 / 6e9})))
    assert outcome.status == "warn"
    assert "(pcie)" in outcome.detail
    assert "ACS" in outcome.remedy and "iommu" in outcome.remedy
    assert outcome.remedy.startswith("peer-to-peer is off between some GPUs (disabled by regkey)")


def test_an_unknown_link_is_not_judged():
    budget = LinkBudget("unknown", None, "NVML not available")
    ok, detail, remedy = nccl.judge_bandwidth(5.0, budget)
    assert ok and "not judged" in detail and remedy is None


def test_the_sweep_imposes_no_multicast_setting_and_records_the_users(monkeypatch):
    for name in nccl.MULTICAST_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not {k for k in nccl.MULTICAST_VARIABLES if k in nccl.nccl_env()}
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "0")
    assert nccl.nccl_env()["NCCL_NVLS_ENABLE"] == "0"
