"""torch.compile's bookkeeping around a compiled cell: dynamo's settings before a compile, graph breaks, recompiles
and the reasons CUDA graphs were skipped."""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator
from typing import Any

# inductor's artifact loggers that say why a graph runs without CUDA graphs ("skipping cudagraphs due to ...")
# (torch >= 2.8 names them "cudagraphs"; torch 2.5-2.7 log the same messages among other perf hints)
CUDAGRAPH_LOGGERS = ("torch._inductor.cudagraph_utils.__cudagraphs", "torch._inductor.scheduler.__cudagraphs",
                     "torch._inductor.cudagraph_utils.__perf_hints")


def _dynamo() -> Any:
    """torch._dynamo, imported on first use: eager-only workers skip its ~1 s import. (``import torch._dynamo``
    inside a function would make ``torch`` local to it: tests/test_imports.py.)"""
    return importlib.import_module("torch._dynamo")


def graph_break_count() -> int:
    return int(sum(_dynamo().utils.counters["graph_break"].values()))


def dynamo_frames_compiled() -> int:
    """Frames dynamo has converted since its counters were cleared: every cache miss (compile or recompile)."""
    return int(_dynamo().utils.counters["frames"]["total"])


def cudagraph_skip_count() -> int:
    return int(_dynamo().utils.counters["inductor"]["cudagraph_skips"])


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "cudagraph" in message:  # the older perf-hints logger carries other hints too
            self.into.append(message)


@contextlib.contextmanager
def cudagraph_skip_messages() -> Iterator[list[str]]:
    """Collect inductor's "skipping cudagraphs due to ..." messages while the block runs: reduce-overhead and
    max-autotune fall back to plain kernels for graphs CUDA graphs cannot take (e.g. data-dependent shapes),
    and the reason is what a user needs to see."""
    messages: list[str] = []
    handler = _Collect(messages)
    loggers = [logging.getLogger(name) for name in CUDAGRAPH_LOGGERS]
    for log in loggers:
        log.addHandler(handler)
    try:
        yield messages
    finally:
        for log in loggers:
            log.removeHandler(handler)


def configure_dynamo(*, reset: bool) -> None:
    """Before a compile: ``reset`` dynamo (``torch._dynamo.reset()``) if asked, clear its counters (graph breaks
    are then this compile's), and, since one process compiles many variants of a model, raise the recompile
    limit (every instance and shape is a cache entry) and keep shapes static, as a fresh process per cell
    would compile them."""
    dynamo = _dynamo()
    if reset:
        dynamo.reset()
    dynamo.utils.counters.clear()
    config = dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(int(getattr(config, name)), 256))
    config.automatic_dynamic_shapes = False
