"""The process's heap before its first model: frozen once, and what comes later is still collected."""

from __future__ import annotations

import gc
import weakref

from detbench.bench.runtime.device import freeze_startup_objects


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_freezing_the_startup_heap_is_once_and_later_cycles_are_still_collected():
    freeze_startup_objects()
    frozen = gc.get_freeze_count()
    assert frozen > 10_000  # the interpreter, torch and pytest: far more than the objects a test makes
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a reference cycle, as a model's modules and hooks make: only the collector frees it
    alive = weakref.ref(a)
    del a, b
    freeze_startup_objects()  # once per process: what came since (the model of a group) is not frozen
    assert gc.get_freeze_count() == frozen
    gc.collect()
    assert alive() is None
