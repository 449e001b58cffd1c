"""Shared fixtures. Fakes live in tests/fakes/ and are shared, not re-invented per test."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from envcheck import nvml
from tests.fakes.nvml import FakeGpu, make_fake_nvml


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C means what it means in a terminal, however the suite was started: a job started with `&` or
    `nohup` ignores SIGINT, and every process a test starts would inherit that (the tests that interrupt a run
    with SIGINT would wait for ever). Nothing else is changed: SIGTERM and SIGHUP stay as they were."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
