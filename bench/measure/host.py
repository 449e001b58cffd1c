"""The host canary: a fixed pure-Python loop timed before every block, the host's single-thread speed right now."""

from __future__ import annotations

import time

CANARY_LOOPS = 20_000


def host_canary_ms(loops: int = CANARY_LOOPS) -> float:
    """Milliseconds of a fixed pure-Python loop: the host's single-thread speed right now."""
    began = time.perf_counter()
    total = 0
    for i in range(loops):
        total += i * i
    return (time.perf_counter() - began) * 1000.0 if total >= 0 else 0.0
