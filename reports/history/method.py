"""A run's *method*: the options that change what a cell measures (isolation, the rounds or measuring policy, the
block statistic, telemetry) and the detbench version, read from a cell result's dict (``CellResult.to_dict()``, or
the ``result`` JSON the store keeps). Runs of another method are another series: they never share a band, and the
change between them is shown as ``method changed``, not as a move. A cell's post-processing policy joins its run's
method for that cell's series."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

FIELDS = ("isolation", "measurement", "rounds", "block_statistic", "telemetry_hz", "detbench")


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _first(*values: Any) -> Any:
    return next((v for v in values if v not in (None, "")), None)


def method_of(result: Mapping[str, Any]) -> dict[str, Any]:
    """The run-level method fields of one cell result dict (None where the file does not say)."""
    config = _mapping(result.get("config"))
    options = _mapping(config.get("options"))
    environment = _mapping(result.get("environment"))
    rounds = _mapping(config.get("rounds_policy"))
    measure = _mapping(config.get("measure_policy"))
    measurement = _mapping(config.get("measurement"))
    return {
        "isolation": _first(options.get("isolation"), config.get("isolation")),
        "measurement": "rounds" if rounds else "until stable" if measure else None,
        "rounds": dict(rounds or measure) or None,
        "block_statistic": _first(options.get("block_statistic"), rounds.get("statistic"),
                                  rounds.get("block_statistic"), measurement.get("block_statistic"),
                                  config.get("block_statistic")),
        "telemetry_hz": options.get("telemetry_hz"),
        "detbench": _first(config.get("detbench_version"), options.get("detbench_version"),
                           environment.get("detbench"), environment.get("detbench_version")),
    }


def postprocess_policy(result: Mapping[str, Any]) -> str | None:
    policy = _mapping(result.get("postprocess")).get("policy")
    return str(policy) if policy else None


def key(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cell_key(run_method_key: str, policy: str | None) -> str:
    return key([run_method_key, policy])


def _show(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    return str(value)


def describe_change(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """``isolation process -> model; rounds ...`` between two methods, or ``""``."""
    parts = []
    for name in FIELDS:
        old, new = before.get(name), after.get(name)
        if old != new:
            label = name.replace("_", " ")
            scalar = not isinstance(old, Mapping) and not isinstance(new, Mapping)
            parts.append(f"{label} {_show(old)} -> {_show(new)}" if scalar else f"{label} policy changed")
    return "; ".join(parts)
