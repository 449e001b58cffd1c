"""Architecture: a GPU whose compute capability has no kernel (sm or PTX) in torch's build fails."""

import pytest
import torch

from detbench.envcheck.checks import arch
from tests.envcheck.conftest import one_gpu


@pytest.fixture
def gpu(monkeypatch):
    def install(capability, arch_list):
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA Test GPU")
        monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: arch_list)

    return install


def test_missing_arch_fails(gpu, make_ctx):
    gpu((12, 0), ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"])
    outcome = arch.check_arch(make_ctx(one_gpu((12, 0))))
    assert outcome.status == "fail"
    assert "no kernel image is available" in outcome.detail
    assert "sm_120" in outcome.detail


def test_native_arch_passes(gpu, make_ctx):
    gpu((9, 0), ["sm_80", "sm_90"])
    outcome = arch.check_arch(make_ctx(one_gpu()))
    assert outcome.status == "pass", outcome.detail
    assert outcome.measured["devices"][0]["kernel"] == "sm_90"


def test_ptx_jit_passes(gpu, make_ctx):
    gpu((9, 0), ["sm_70", "sm_80", "compute_80"])
    outcome = arch.check_arch(make_ctx(one_gpu()))
    assert outcome.status == "pass"
    assert "compute_80 (PTX JIT)" in outcome.measured["devices"][0]["kernel"]


def test_newer_ptx_does_not_count():
    assert arch.arch_support((8, 0), ["sm_90", "compute_90"]) is None


def test_same_major_binary_compatible():
    assert arch.arch_support((8, 6), ["sm_80"]) == "sm_80 (binary compatible)"
    assert arch.arch_support((9, 0), ["sm_80"]) is None
