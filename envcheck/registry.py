"""The check registry: the built-in checks (envcheck/checks, one module per concern), in the order they run.

A check is defined and registered with :func:`detbench.envcheck.check.register_check`; this module loads the built-in
ones and looks them up, so the checks import nothing of it (no import circle).
"""

from __future__ import annotations

from detbench.envcheck.check import REGISTERED, Check, CheckFn, register_check

__all__ = ["Check", "CheckFn", "UnknownCheckError", "check_ids", "get_check", "list_checks", "register_check"]


class UnknownCheckError(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown check {name!r}; valid checks: {', '.join(check_ids())}")


def _load_builtin() -> None:
    import detbench.envcheck.checks  # noqa: F401, PLC0415 - registers the built-in checks


def list_checks() -> list[Check]:
    _load_builtin()
    return list(REGISTERED.values())


def check_ids() -> list[str]:
    return [c.id for c in list_checks()]


def get_check(check_id: str) -> Check:
    _load_builtin()
    if check_id not in REGISTERED:
        raise UnknownCheckError(check_id)
    return REGISTERED[check_id]
