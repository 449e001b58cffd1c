"""GPU health from NVML, via the shared FakeGpu: ECC, remapped rows, throttling, PCIe, processes."""

import pytest

from detbench.envcheck.checks import health
from tests.fakes.nvml import NOT_SUPPORTED, FakeGpu


def run(fake_nvml, make_ctx, **fields):
    fake_nvml([FakeGpu(**fields)])
    return health.check_health(make_ctx())


def test_healthy_gpu_passes(fake_nvml, make_ctx):
    outcome = run(fake_nvml, make_ctx)
    assert outcome.status == "pass", outcome.detail
    assert outcome.measured["devices"]["nvml 0"]["temperature_c"] == 35


@pytest.mark.parametrize(
    "fields, status, words",
    [
        ({"ecc_uncorrected_volatile": 3}, "fail", "3 uncorrected ECC errors since the last reset"),
        ({"ecc_uncorrected_aggregate": 5}, "warn", "5 uncorrected ECC errors in the GPU's lifetime"),
        ({"remapped_rows_failed": 1}, "fail", "row remapping failed"),
        ({"remapped_rows_pending": 1}, "warn", "row remapping pending"),
        ({"retired_pages_pending": 1}, "fail", "page retirement pending"),
        ({"throttle_reasons": 0x40}, "fail", "HwThermalSlowdown"),
        ({"throttle_reasons": 0x8}, "fail", "HwSlowdown"),
        ({"throttle_reasons": 0x4}, "warn", "SwPowerCap"),
        ({"pcie_gen": 1, "util_gpu": 0}, "warn", "PCIe link generation 1 below its max 5 (GPU idle"),
        ({"pcie_width": 8, "util_gpu": 90}, "fail", "PCIe link width 8 below its max 16 under load"),
        ({"temperature_c": 91}, "warn", "91 C"),
        ({"processes": [(999999, 2 * 2**30)]}, "warn", "pid 999999 (2048 MiB)"),
    ],
)
def test_findings(fake_nvml, make_ctx, fields, status, words):
    outcome = run(fake_nvml, make_ctx, **fields)
    assert outcome.status == status, outcome.detail
    assert words in outcome.detail
    assert outcome.remedy


def test_idle_throttle_reason_is_ignored(fake_nvml, make_ctx):
    assert run(fake_nvml, make_ctx, throttle_reasons=0x1 | 0x2).status == "pass"


def test_power_cap_below_default_warns(fake_nvml, make_ctx):
    outcome = run(fake_nvml, make_ctx, power_limit_mw=400_000, power_default_limit_mw=700_000)
    assert outcome.status == "warn"
    assert "nvidia-smi -pl 700" in outcome.remedy


def test_unsupported_queries_are_not_available(fake_nvml, make_ctx):
    outcome = run(fake_nvml, make_ctx, ecc_uncorrected_volatile=NOT_SUPPORTED, ecc_uncorrected_aggregate=NOT_SUPPORTED,
                  remapped_rows_uncorrectable=NOT_SUPPORTED, retired_pages_pending=NOT_SUPPORTED)
    assert outcome.status == "pass"
    assert outcome.measured["devices"]["nvml 0"]["ecc_uncorrected_volatile"] is None


def test_lost_gpu_fails(fake_nvml, make_ctx):
    outcome = run(fake_nvml, make_ctx, gone=True)
    assert outcome.status == "fail"
    assert "GPU lost" in outcome.detail


def test_no_nvml_skips(no_nvml, make_ctx):
    outcome = health.check_health(make_ctx())
    assert outcome.status == "skip"
    assert "no NVML" in outcome.detail
