"""Real faults for testing the launcher (segfault, hard exit, hang, OOM); fired only via DETBENCH_TEST_FAULT."""

from __future__ import annotations

import ctypes
import os
import time

import torch

KINDS = ("segfault", "exit", "hang", "oom", "raise")


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
