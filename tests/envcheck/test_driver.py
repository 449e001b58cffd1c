"""Driver vs torch CUDA: too old fails naming the driver needed; minor-version compatibility warns."""

import torch

from detbench.envcheck.checks import driver


def test_old_driver_fails_naming_the_minimum(fake_nvml, make_ctx, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    fake_nvml(driver="550.54.14", cuda_driver=12040)
    outcome = driver.check_driver(make_ctx())
    assert outcome.status == "fail"
    assert "580.65.06" in outcome.detail and "580.65.06" in outcome.remedy
    assert outcome.measured["driver"] == "550.54.14"


def test_new_driver_passes(fake_nvml, make_ctx, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    fake_nvml(driver="580.159.04", cuda_driver=13000)
    outcome = driver.check_driver(make_ctx())
    assert outcome.status == "pass", outcome.detail
    assert outcome.measured["driver_cuda"] == "13.0"


def test_minor_version_compat_warns(fake_nvml, make_ctx, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    fake_nvml(driver="560.35.03", cuda_driver=12060)
    outcome = driver.check_driver(make_ctx())
    assert outcome.status == "warn"
    assert "minor-version compatibility" in outcome.detail
    assert "570.26" in outcome.remedy


def test_driver_below_compat_floor_fails(fake_nvml, make_ctx, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    fake_nvml(driver="470.82.01", cuda_driver=11040)
    outcome = driver.check_driver(make_ctx())
    assert outcome.status == "fail"
    assert "550.54.14" in outcome.remedy


def test_no_nvml_skips(no_nvml, make_ctx):
    outcome = driver.check_driver(make_ctx())
    assert outcome.status == "skip"
    assert "nvidia-ml-py" in outcome.detail


def test_cpu_only_torch_skips(fake_nvml, make_ctx, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    fake_nvml()
    assert driver.check_driver(make_ctx()).status == "skip"
