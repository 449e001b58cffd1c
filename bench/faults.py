"""Real faults for testing the launcher (segfault, hard exit, hang, OOM); fired only via DETBENCH_TEST_FAULT."""

from __future__ import annotations

import ctypes
import os
import time

import torch

KINDS = ("segfault", "exit", "hang", "oom", "raise")
FAULT_ENV = "DETBENCH_TEST_FAULT"  # test-only: "<cell-id substring>:<kind>[@<phase>]"


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
                  "(raised by bench.faults for a test)")
    elif kind == "raise":
        raise RuntimeError("injected failure (bench.faults)")
    else:
        raise ValueError(f"unknown fault {kind!r}; valid: {', '.join(KINDS)}")
