"""The result of one check: what was measured, how it went, and the exact fix when it did not pass."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

STATUSES = ("pass", "warn", "fail", "skip")
SEVERITIES = ("critical", "warning")


@dataclass
class Outcome:
    """What a check function returns; the runner adds id, title, severity and duration."""

    status: str
    detail: str
    measured: dict[str, Any] = field(default_factory=dict)
    remedy: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {', '.join(STATUSES)}")
        if self.status in ("warn", "fail") and not self.remedy:
            raise ValueError(f"a {self.status} outcome needs a remedy ({self.detail})")


def passed(detail: str, **measured: Any) -> Outcome:
    return Outcome("pass", detail, measured)


def warned(detail: str, remedy: str, **measured: Any) -> Outcome:
    return Outcome("warn", detail, measured, remedy)


def failed(detail: str, remedy: str, **measured: Any) -> Outcome:
    return Outcome("fail", detail, measured, remedy)


def skipped(reason: str, **measured: Any) -> Outcome:
    return Outcome("skip", reason, measured)


def worst(outcomes: list[Outcome]) -> str:
    """The worst status among several findings (fail > warn > pass > skip)."""
    order = {"fail": 3, "warn": 2, "pass": 1, "skip": 0}
    return max((o.status for o in outcomes), key=order.__getitem__, default="skip")


@dataclass
class CheckResult:
    """One row of the preflight: id, title, severity, status, measured detail, remedy, duration."""

    id: str
    title: str
    severity: str
    status: str
    detail: str
    measured: dict[str, Any] = field(default_factory=dict)
    remedy: str | None = None
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {', '.join(STATUSES)}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} is not one of {', '.join(SEVERITIES)}")

    @property
    def ok(self) -> bool:
        return self.status != "fail"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
