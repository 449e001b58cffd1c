"""Pure math for telemetry summaries: distribution stats, energy, series decimation, throttle names.

No NVML and no threads here, so every number in a telemetry summary can be checked by hand in tests.
Missing readings are NaN in the input series and ``None`` in the output (JSON has no NaN).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

# NVML clock-event ("throttle") reason bits: stable ABI values from nvml.h, named in snake_case.
THROTTLE_REASON_BITS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
IDLE_REASON_BIT = 0x1


def throttle_reason_names(mask: int) -> list[str]:
    """Names of the bits set in an NVML clock-event mask, GpuIdle excluded (idle is not throttling)."""
    names = []
    bit = 1
    remaining = int(mask) & ~IDLE_REASON_BIT
    while remaining:
        if remaining & bit:
            names.append(THROTTLE_REASON_BITS.get(bit, f"unknown_0x{bit:x}"))
            remaining &= ~bit
        bit <<= 1
    return names


def finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if not math.isnan(v)]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of already sorted values."""
    if not sorted_values:
        raise ValueError("percentile of an empty series")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def distribution(values: Sequence[float], digits: int = 3) -> dict[str, float] | None:
    """``{"mean", "p95", "max"}`` over the finite readings, or None when there are none."""
    good = sorted(finite(values))
    if not good:
        return None
    return {
        "mean": round(sum(good) / len(good), digits),
        "p95": round(percentile(good, 95.0), digits),
        "max": round(good[-1], digits),
    }


def integrate_power_j(t_s: Sequence[float], power_w: Sequence[float]) -> float | None:
    """Energy in joules by the trapezoid rule over the finite power readings; None with fewer than two."""
    points = [(t, p) for t, p in zip(t_s, power_w) if not math.isnan(p)]
    if len(points) < 2:
        return None
    return sum(0.5 * (p0 + p1) * (t1 - t0) for (t0, p0), (t1, p1) in itertools.pairwise(points))


def counter_energy_j(energy_mj: Sequence[float]) -> tuple[float | None, str | None]:
    """Energy from the total-energy counter (mJ): last minus first finite reading.

    Returns ``(joules, None)``, or ``(None, why)`` when the counter cannot be trusted: missing,
    fewer than two readings, or going backwards (a wrap or a driver reset) anywhere in the run.
    """
    good = finite(energy_mj)
    if len(good) < 2:
        return None, "energy counter not supported" if not good else "energy counter read fewer than twice"
    if any(b < a for a, b in itertools.pairwise(good)):
        return None, "energy counter went backwards (wrap or reset)"
    return (good[-1] - good[0]) / 1000.0, None


def decimate_indices(count: int, keep: int) -> list[int]:
    """At most ``keep`` evenly spaced indices into a series of ``count``, always the first and last."""
    if count <= keep:
        return list(range(count))
    if keep <= 1:
        return [count - 1] if keep == 1 else []
    step = (count - 1) / (keep - 1)
    return sorted({round(i * step) for i in range(keep)})


def rounded(values: Sequence[float], indices: Sequence[int], digits: int) -> list[float | None]:
    """The chosen readings, rounded; NaN becomes None."""
    out: list[float | None] = []
    for i in indices:
        v = values[i]
        out.append(None if math.isnan(v) else round(v, digits) if digits else round(v))
    return out
