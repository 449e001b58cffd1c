"""A check: its id, title, severity and small function ``fn(ctx) -> Outcome``, and the decorator that registers it
(each module of envcheck/checks uses it; :mod:`detbench.envcheck.registry` lists them in run order)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from detbench.envcheck.result import SEVERITIES, Outcome

if TYPE_CHECKING:
    from detbench.envcheck.context import Context

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


REGISTERED: dict[str, Check] = {}  # id -> check, in registration (= run) order


def register_check(
    check_id: str, title: str, severity: str = "critical", *, needs_gpu: bool = False, slow: bool = False
) -> Callable[[CheckFn], CheckFn]:
    """Decorator: register ``fn(ctx) -> Outcome`` under ``check_id`` (registration order = run order)."""

    def decorate(fn: CheckFn) -> CheckFn:
        if check_id in REGISTERED:
            raise ValueError(f"check {check_id!r} is already registered")
        REGISTERED[check_id] = Check(check_id, title, severity, fn, needs_gpu=needs_gpu, slow=slow)
        return fn

    return decorate
