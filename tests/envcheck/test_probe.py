"""bf16 support means bf16 in hardware, not torch's emulation (T4, V100)."""

import torch

from detbench.envcheck.probe import native_bf16_supported


def test_emulated_bf16_is_not_support(monkeypatch):
    calls = []

    def is_bf16_supported(including_emulation=True):
        calls.append(including_emulation)
        return including_emulation  # a T4: True only when emulation counts

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert native_bf16_supported() is False
    assert calls == [False]


def test_old_torch_without_the_keyword(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert native_bf16_supported() is True
