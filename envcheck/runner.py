"""Run the selected checks in order, each bounded by a timeout; a crash or a hang becomes a failed check."""

from __future__ import annotations

import math
import threading
import time
import traceback

from detbench.envcheck.context import Context
from detbench.envcheck.options import MAX_TIMEOUT_S
from detbench.envcheck.registry import Check, list_checks
from detbench.envcheck.result import CheckResult, Outcome, failed, skipped

QUICK_SKIPS_NCCL_UNLESS_REQUIRED = "nccl"


def _selection_reason(check: Check, ctx: Context) -> str | None:
    opts = ctx.options
    if check.id in opts.skip:
        return "skipped by --skip"
    if opts.only and check.id not in opts.only:
        return "not selected by --only"
    if opts.quick and check.slow and not (check.id == QUICK_SKIPS_NCCL_UNLESS_REQUIRED and opts.require_nccl):
        return "skipped by --quick"
    return None


def _call_with_timeout(check: Check, ctx: Context, timeout_s: float) -> tuple[Outcome, bool]:
    """(outcome, finished). The check runs in a daemon thread so a hang cannot hold the preflight."""
    box: dict[str, Outcome] = {}

    def target() -> None:
        try:
            box["outcome"] = check.fn(ctx)
        except Exception as exc:  # noqa: BLE001 - a crashing check is a failed check, reported with its cause
            where = traceback.extract_tb(exc.__traceback__)[-1]
            box["outcome"] = failed(
                f"check crashed: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                f" ({where.filename.rsplit('/', 1)[-1]}:{where.lineno})",
                "this is the failure a job would hit too; fix its cause, or report it with `envcheck --json`",
            )

    thread = threading.Thread(target=target, name=f"envcheck-{check.id}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return failed(
            f"did not finish within {timeout_s:g} s",
            f"something hangs ({check.title}); re-run with --only {check.id} --timeout "
            f"{longer_timeout(timeout_s):g} "
            "to see whether it is slow or stuck; check `nvidia-smi` for a hung GPU",
        ), False
    return box["outcome"], True


def longer_timeout(timeout_s: float) -> float:
    """The limit a re-run should try: four times this one, at least a minute, at most what --timeout accepts."""
    return float(min(MAX_TIMEOUT_S, max(60, math.ceil(timeout_s * 4))))


def run_check(check: Check, ctx: Context) -> tuple[CheckResult, bool]:
    start = time.monotonic()
    finished = True
    reason = _selection_reason(check, ctx)
    if reason is not None:
        outcome = skipped(reason)
    elif check.needs_gpu and (gpu_reason := ctx.gpu_unavailable_reason()) is not None:
        outcome = skipped(gpu_reason)
    else:
        outcome, finished = _call_with_timeout(check, ctx, ctx.options.timeout_s)
    result = CheckResult(
        id=check.id,
        title=check.title,
        severity=check.severity,
        status=outcome.status,
        detail=outcome.detail,
        measured=outcome.measured,
        remedy=outcome.remedy,
        duration_s=round(time.monotonic() - start, 3),
    )
    return result, finished


def run_checks(ctx: Context, checks: list[Check] | None = None, on_result=None) -> tuple[list[CheckResult], bool]:
    """All results in registry order, and whether every check thread finished (False: exit hard)."""
    results, all_finished = [], True
    for check in checks if checks is not None else list_checks():
        result, finished = run_check(check, ctx)
        all_finished &= finished
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results, all_finished
