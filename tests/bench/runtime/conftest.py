"""Fixtures of the runtime tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def fault(monkeypatch):
    """``fault("tiny_convnet-train", "exit", rank=1)``: a real fault in one rank of the group."""

    def set_fault(cell_substring: str, kind: str, rank: int) -> None:
        monkeypatch.setenv("DETBENCH_TEST_FAULT", f"{cell_substring}:{kind}")
        monkeypatch.setenv("DETBENCH_TEST_FAULT_RANK", str(rank))

    return set_fault
