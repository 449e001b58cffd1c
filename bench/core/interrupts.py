"""Stops that must not cut a record in two: a stop signal's handler calls :func:`interrupt`, which raises its
``KeyboardInterrupt`` at once, or, inside a :func:`whole` section, as the section ends.

A run journals each block and keeps it for its own JSON in one step (detbench.bench.runtime.run); a SIGTERM raised
between the two left the cut run's JSON a block ahead of its journal (a clean clone's CI, 2026-12-06)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

_depth = 0
_pending: KeyboardInterrupt | None = None


def interrupt(exc: KeyboardInterrupt) -> None:
    """Raise ``exc`` now, or as the innermost :func:`whole` section ends (the first stop wins)."""
    global _pending
    if _depth:
        _pending = _pending or exc
        return
    raise exc


@contextmanager
def whole() -> Iterator[None]:
    """A section a stop signal lands after, not inside (in the thread that runs signal handlers: the main one)."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending is not None:
            exc, _pending = _pending, None
            raise exc
