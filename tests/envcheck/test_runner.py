"""Runner: each check time-bounded; a crash or a hang is a failed check; --skip/--only/--quick select."""

import threading
import time

import pytest

from detbench.envcheck import context, isolate
from detbench.envcheck.registry import Check, UnknownCheckError, check_ids, get_check
from detbench.envcheck.result import Outcome, passed
from detbench.envcheck.runner import run_check, run_checks


def test_hanging_check_fails_after_the_timeout(make_ctx):
    release = threading.Event()

    def hang(ctx) -> Outcome:
        release.wait(30)
        return passed("never")

    start = time.monotonic()
    result, finished = run_check(Check("hang", "hangs", "critical", hang), make_ctx(timeout_s=0.3))
    release.set()
    assert time.monotonic() - start < 5
    assert not finished
    assert result.status == "fail" and "did not finish within 0.3 s" in result.detail
    assert "--only hang" in result.remedy


def test_crashing_check_fails_with_its_cause(make_ctx):
    def crash(ctx) -> Outcome:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    result, finished = run_check(Check("crash", "crashes", "critical", crash), make_ctx())
    assert finished and result.status == "fail"
    assert "illegal memory access" in result.detail and result.remedy


def test_skip_only_quick(make_ctx):
    results, _ = run_checks(make_ctx(only=("host",), quick=True), [get_check("host"), get_check("speed")])
    assert [r.status for r in results] == [results[0].status, "skip"]
    assert results[0].status in ("pass", "warn", "fail")
    results, _ = run_checks(make_ctx(skip=("host",)), [get_check("host")])
    assert results[0].status == "skip" and "--skip" in results[0].detail
    result, _ = run_check(get_check("speed"), make_ctx(quick=True))
    assert "--quick" in result.detail


def test_require_nccl_runs_nccl_despite_quick(make_ctx):
    result, _ = run_check(get_check("nccl"), make_ctx(quick=True, require_nccl=True))
    assert "--quick" not in result.detail  # skipped for want of a GPU instead


def test_registry_order_and_unknown_id():
    assert check_ids() == ["torch_pairing", "driver", "visibility", "arch", "cudnn", "tv_ops", "nccl",
                           "health", "host", "speed"]
    with pytest.raises(UnknownCheckError, match="valid checks: torch_pairing, driver"):
        get_check("drivers")


def test_hung_cuda_probe_becomes_an_error(monkeypatch):
    monkeypatch.setattr(context, "no_cuda_facts", lambda: None)
    monkeypatch.setattr(isolate, "python_module", lambda *a: [__import__("sys").executable, "-c",
                                                                "import time; time.sleep(600)"])
    start = time.monotonic()
    facts = context.run_probe(0.5)
    assert time.monotonic() - start < 5
    assert facts["timed_out"] and "did not finish within 0.5 s" in facts["error"]


def test_cpu_machine_probe_needs_no_child():
    facts = context.run_probe(5)
    assert facts["cuda_available"] is False and facts["error"] is None


def test_probe_runs_once_within_90_percent_of_the_timeout():
    from detbench.envcheck.context import Context
    from detbench.envcheck.options import Options

    calls = []
    ctx = Context(Options(timeout_s=10), probe=lambda timeout_s: calls.append(timeout_s) or {"error": None})
    ctx.gpu_facts(), ctx.gpu_facts(), ctx.gpu_unavailable_reason()
    assert calls == [pytest.approx(9.0)]
