"""Real faults for testing the launcher (segfault, hard exit, hang, OOM), fired only via DETBENCH_TEST_FAULT, a
planted slowdown for testing the regression gate, only via DETBENCH_TEST_SLOWDOWN, and a witness of finished blocks
for testing that a cut run keeps them, only via DETBENCH_TEST_WITNESS."""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable
from typing import Any

import torch

KINDS = ("segfault", "exit", "hang", "oom", "raise")
FAULT_ENV = "DETBENCH_TEST_FAULT"  # test-only: "<cell-id substring>:<kind>[@<phase>]"
SLOWDOWN_ENV = "DETBENCH_TEST_SLOWDOWN"  # test-only: "<cell-id substring>:<fraction>[,<substring>:<fraction>...]"
WITNESS_ENV = "DETBENCH_TEST_WITNESS"  # test-only: a file every finished block appends "<cell id> <round>" to
MAX_SLOWDOWN = 10.0  # a planted change beyond 11x the step time is a typo, not a test


def maybe_trigger(cell_id: str, phase: str = "set-up") -> None:
    """Fire the fault ``DETBENCH_TEST_FAULT=<cell-id substring>:<kind>[@<phase>]`` names when it matches
    ``cell_id`` and ``phase`` (``set-up``, the default, or ``round<N>``: before the cell's block in round N),
    so crash handling is tested with real crashes. Unset in normal runs: a no-op."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    target, _, rest = spec.rpartition(":")
    kind, _, when = rest.partition("@")
    if target and target in cell_id and (when or "set-up") == phase:
        trigger(kind)


def witness(cell_id: str, round_index: int) -> None:
    """Append ``<cell id> <round>`` to the file ``DETBENCH_TEST_WITNESS`` names, once the block's event is written:
    what a process finished before a signal cut it, seen apart from the journal. Unset in normal runs: a no-op."""
    path = os.environ.get(WITNESS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{cell_id} {round_index}\n")


def trigger(kind: str) -> None:
    """Fail the way ``kind`` says; an unknown kind is itself an error."""
    if kind == "segfault":
        ctypes.string_at(0)  # reads address 0: a genuine SIGSEGV
    elif kind == "exit":
        os._exit(3)  # no cleanup, no result written
    elif kind == "hang":
        while True:  # a stuck cell: only the launcher's timeout ends it
            time.sleep(0.05)
    elif kind == "oom":
        oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
        raise oom("CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of 79.19 GiB "
                  "(raised by detbench.bench.runtime.faults for a test)")
    elif kind == "raise":
        raise RuntimeError("injected failure (detbench.bench.runtime.faults)")
    else:
        raise ValueError(f"unknown fault {kind!r}; valid: {', '.join(KINDS)}")


def slowdown_fraction(cell_id: str) -> float | None:
    """The fraction ``DETBENCH_TEST_SLOWDOWN`` plants in ``cell_id``, else None.

    The value is ``<cell-id substring>:<fraction>``, or several of them comma-separated
    (``retinanet:0.1,fcos:0.02`` plants 10 % in one cell and 2 % in another); the first that matches wins.
    The whole value is checked on every call, so a typo fails the first cell, not just the cells it names."""
    spec = os.environ.get(SLOWDOWN_ENV)
    if not spec:
        return None
    found = None
    for target, fraction in parse_slowdowns(spec):
        if found is None and target in cell_id:
            found = fraction
    return found


def parse_slowdowns(spec: str) -> list[tuple[str, float]]:
    """``"a:0.1,b:0.02"`` -> ``[("a", 0.1), ("b", 0.02)]``; ValueError (one line, with an example) on bad input."""
    out = []
    for part in spec.split(","):
        target, sep, value = part.strip().rpartition(":")
        try:
            fraction = float(value)
        except ValueError:
            fraction = float("nan")
        # a cell id holds no ':' - a target with one is two entries joined by something other than a comma
        if not sep or not target or ":" in target or not 0 < fraction <= MAX_SLOWDOWN:  # nan fails the range too
            raise ValueError(f"bad {SLOWDOWN_ENV}={spec!r} (at {part!r}); use <cell-id substring>:<fraction in "
                             f"(0, {MAX_SLOWDOWN:g}]>[,...], e.g. retinanet:0.1,fcos:0.02 for 10% and 2% more time "
                             "per step")
        out.append((target, fraction))
    return out


def slow_step(cell_id: str, step: Callable[[], Any], sync: Callable[[], None]) -> Callable[[], Any]:
    """``step``, or, when ``DETBENCH_TEST_SLOWDOWN`` names this cell, a step that takes ``1 + fraction`` times as
    long on the host.

    The wrapper busy-waits after the real step for ``fraction`` x the host time the step itself took (a busy-wait,
    not a sleep, so the scheduler cannot stretch it). In a host-bound cell (the gate's planted cells: detectors at
    batch 8) the GPU waits for the host, so every timer sees the wait and the step's time grows by ``fraction``;
    no synchronisation is added, so the step keeps its own overlap of host and GPU work (an extra sync per step
    is a change of its own, seen at several % on an H200). In a GPU-bound cell the wait can hide behind GPU work:
    plant there a fraction larger than the GPU's lead. ``sync`` is unused; kept so call sites stay one shape.
    Unset in normal runs: ``step`` itself is returned."""
    fraction = slowdown_fraction(cell_id)
    if fraction is None:
        return step

    def slowed() -> Any:
        began = time.perf_counter()
        output = step()
        until = time.perf_counter() + fraction * (time.perf_counter() - began)
        while time.perf_counter() < until:
            pass
        return output

    return slowed
