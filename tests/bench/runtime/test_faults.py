"""The planted slowdown the gate's tests rely on (the crash faults are exercised by the launcher's tests)."""

from __future__ import annotations

import time

import pytest

from detbench.bench.runtime import faults


def busy_step(ms: float):
    """A step that busy-waits ``ms`` and says how long it took (measured inside, so a lower bound of its time)."""

    def step() -> float:
        began = time.perf_counter()
        while time.perf_counter() - began < ms / 1000.0:
            pass
        return time.perf_counter() - began

    return step


def test_unset_or_unmatched_returns_the_step_itself(monkeypatch):
    step = busy_step(1)
    monkeypatch.delenv(faults.SLOWDOWN_ENV, raising=False)
    assert faults.slow_step("tiny_convnet-infer-eager-fp32-bs1-gpu1", step, lambda: None) is step
    monkeypatch.setenv(faults.SLOWDOWN_ENV, "retinanet:0.5")
    assert faults.slow_step("tiny_convnet-infer-eager-fp32-bs1-gpu1", step, lambda: None) is step


def test_a_matched_step_takes_one_and_a_half_times_as_long_and_adds_no_sync(monkeypatch):
    monkeypatch.setenv(faults.SLOWDOWN_ENV, "tiny_convnet-infer:0.5")
    syncs = []
    slowed = faults.slow_step("tiny_convnet-infer-eager-fp32-bs1-gpu1", busy_step(20), lambda: syncs.append(1))
    for _ in range(3):
        began = time.perf_counter()
        inner_s = slowed()  # the wrapped step's own output comes back
        total_s = time.perf_counter() - began
        # the wait is 0.5 x the step's time as the wrapper measured it, so this bound holds on a loaded machine too
        assert total_s >= 1.5 * inner_s
    assert syncs == []  # a sync per step would change the step's own host/GPU overlap


@pytest.mark.parametrize("spec", ["tiny", "tiny:fast", "tiny:0", "tiny:-0.1", "tiny:11", ":0.5", "tiny:nan",
                                  "retinanet:0.1,", "retinanet:0.1,fcos", "retinanet:0.1;fcos:0.02"])
def test_a_bad_spec_is_one_line_naming_the_format(monkeypatch, spec):
    monkeypatch.setenv(faults.SLOWDOWN_ENV, spec)
    with pytest.raises(ValueError, match=r"<cell-id substring>:<fraction in \(0, 10\]>") as err:
        faults.slow_step("tiny_convnet-infer-eager-fp32-bs1-gpu1", busy_step(1), lambda: None)
    assert "\n" not in str(err.value)


def test_a_list_plants_a_different_change_in_each_named_cell(monkeypatch):
    monkeypatch.setenv(faults.SLOWDOWN_ENV, "retinanet_resnet50_fpn-infer-eager-fp32-bs8:0.10, fcos_resnet50_fpn:0.02")
    assert faults.slowdown_fraction("retinanet_resnet50_fpn-infer-eager-fp32-bs8-gpu1") == 0.10
    assert faults.slowdown_fraction("fcos_resnet50_fpn-infer-eager-fp32-bs8-gpu1") == 0.02
    assert faults.slowdown_fraction("retinanet_resnet50_fpn-infer-compiled-bf16-bs8-gpu1") is None
    monkeypatch.setenv(faults.SLOWDOWN_ENV, "retinanet:0.3,retinanet_resnet50_fpn:0.1")
    assert faults.slowdown_fraction("retinanet_resnet50_fpn-infer-eager-fp32-bs8-gpu1") == 0.3  # the first match


def test_a_bad_entry_fails_every_cell_not_only_the_ones_it_names(monkeypatch):
    monkeypatch.setenv(faults.SLOWDOWN_ENV, "retinanet:0.1,fcos:lots")
    with pytest.raises(ValueError, match="at 'fcos:lots'"):
        faults.slowdown_fraction("ssdlite320_mobilenet_v3_large-infer-eager-fp32-bs8-gpu1")
