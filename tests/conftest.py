"""Shared fixtures. Fakes live in tests/fakes/ and are shared, not re-invented per test."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from envcheck import nvml
from tests.fakes.nvml import FakeGpu, make_fake_nvml


@pytest.fixture
def fake_nvml() -> Callable[..., object]:
    """Install a fake pynvml: ``nv = fake_nvml([FakeGpu(...)], driver=...)``. Restored afterwards."""

    def install(gpus: list[FakeGpu] | None = None, **kwargs: object) -> object:
        fake = make_fake_nvml(gpus, **kwargs)
        nvml.reset()
        nvml.load(importer=lambda: fake)
        return fake

    yield install
    nvml.reset()


@pytest.fixture
def no_nvml() -> None:
    """NVML missing, as on a CPU machine or macOS."""

    def missing() -> object:
        raise ImportError("No module named 'pynvml'")

    nvml.reset()
    nvml.load(importer=missing)
    yield
    nvml.reset()
