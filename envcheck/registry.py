"""The check registry: id -> small function ``fn(ctx) -> Outcome``, in the order they run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from envcheck.result import SEVERITIES, Outcome

if TYPE_CHECKING:
    from envcheck.context import Context

CheckFn = Callable[["Context"], Outcome]


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    severity: str
    fn: CheckFn
    needs_gpu: bool = False  # skipped with the visibility reason when no usable CUDA GPU
    slow: bool = False  # skipped by --quick

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} is not one of {', '.join(SEVERITIES)}")


_CHECKS: dict[str, Check] = {}


class UnknownCheckError(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown check {name!r}; valid checks: {', '.join(check_ids())}")


def register_check(
    check_id: str, title: str, severity: str = "critical", *, needs_gpu: bool = False, slow: bool = False
) -> Callable[[CheckFn], CheckFn]:
    """Decorator: register ``fn(ctx) -> Outcome`` under ``check_id`` (registration order = run order)."""

    def decorate(fn: CheckFn) -> CheckFn:
        if check_id in _CHECKS:
            raise ValueError(f"check {check_id!r} is already registered")
        _CHECKS[check_id] = Check(check_id, title, severity, fn, needs_gpu=needs_gpu, slow=slow)
        return fn

    return decorate


def _load_builtin() -> None:
    import envcheck.checks  # noqa: F401, PLC0415 - registers the built-in checks


def list_checks() -> list[Check]:
    _load_builtin()
    return list(_CHECKS.values())


def check_ids() -> list[str]:
    return [c.id for c in list_checks()]


def get_check(check_id: str) -> Check:
    _load_builtin()
    if check_id not in _CHECKS:
        raise UnknownCheckError(check_id)
    return _CHECKS[check_id]
