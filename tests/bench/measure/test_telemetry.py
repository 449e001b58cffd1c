"""NVML telemetry tracker: summary math, lost GPUs, counter wraps, throttle flags, UUID mapping, threads."""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
from collections.abc import Callable

import pytest

from detbench.bench.measure import telemetry_stats as stats
from detbench.bench.measure.telemetry import TelemetryTracker
from tests.fakes.nvml import NOT_SUPPORTED, FakeGpu


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("detbench-telemetry")]


def gpu(i: int = 0, **fields: object) -> FakeGpu:
    return FakeGpu(uuid=f"GPU-aaaaaaaa-0000-0000-0000-00000000000{i}", **fields)


def track(gpus: list[FakeGpu], samples: int = 15, indices: list[int] | None = None,
          **kwargs: object) -> TelemetryTracker:
    tracker = TelemetryTracker(indices if indices is not None else list(range(len(gpus))),
                               cuda_uuids=[g.uuid for g in gpus], **kwargs)
    with tracker:
        wait_for(lambda: tracker.samples_taken >= samples)
    return tracker


def test_energy_from_counter_and_derived_figures(fake_nvml):
    g = gpu(power_mw=200_000, energy_step_mj=250, util_gpu=80)
    fake_nvml([g])
    tracker = track([g], samples=30, rate_hz=50.0)
    summary = tracker.summary(images=640)
    dev = summary["devices"][0]
    assert summary["available"] and summary["reason"] is None
    assert dev["energy_source"] == "counter"
    # the slow counter is read every 0.5 s (every 25th tick at 50 Hz) plus the last sample; each read
    # advances the fake 250 mJ, so (reads - 1) steps lie between the first and last read
    reads = len(stats.finite(tracker.series[0].values["energy_mj"]))
    assert reads == 3  # ticks 0 and 25, and the closing tick
    assert dev["energy_j"] == pytest.approx((reads - 1) * 0.25)
    assert summary["energy_j"] == pytest.approx(dev["energy_j"])
    assert summary["energy_per_image_j"] == pytest.approx(dev["energy_j"] / 640, rel=1e-3)
    assert summary["mean_power_w"] == pytest.approx(dev["energy_j"] / dev["energy_window_s"], rel=1e-3)
    ips_per_w = 640 / summary["duration_s"] / summary["mean_power_w"]
    assert summary["images_per_s_per_w"] == pytest.approx(ips_per_w, rel=1e-3)
    assert summary["images_per_s_per_w"] == pytest.approx(640 / summary["energy_j"], rel=1e-2)  # images per joule
    assert dev["metrics"]["power_w"] == {"mean": 200.0, "p95": 200.0, "max": 200.0}
    assert dev["metrics"]["gpu_util_pct"]["mean"] == 80.0
    json.dumps(summary, allow_nan=False)


def test_energy_integrated_when_counter_not_supported(fake_nvml):
    g = gpu(power_mw=300_000, energy_mj=NOT_SUPPORTED)
    fake_nvml([g])
    dev = track([g]).summary(images=10)["devices"][0]
    assert dev["energy_source"] == "integrated-power"
    assert "total_energy" in dev["unsupported_queries"]
    assert dev["energy_j"] == pytest.approx(300.0 * dev["energy_window_s"], rel=1e-3)


def test_counter_going_backwards_falls_back_and_says_so(fake_nvml):
    g = gpu(power_mw=100_000, energy_mj=2**32 - 5_000, energy_step_mj=1_000)
    fake_nvml([g])
    tracker = TelemetryTracker([0], cuda_uuids=[g.uuid])
    with tracker:
        wait_for(lambda: tracker.samples_taken >= 5)
        g.energy_mj = 10  # the counter wrapped (or the driver reset it)
        wait_for(lambda: tracker.samples_taken >= 10)
    dev = tracker.summary(images=1)["devices"][0]
    assert dev["energy_source"] == "integrated-power"
    assert "backwards" in dev["energy_note"]
    assert dev["energy_j"] == pytest.approx(100.0 * dev["energy_window_s"], rel=1e-3)


def test_gpu_lost_mid_run_keeps_samples_and_goes_on(fake_nvml):
    gpus = [gpu(0, energy_step_mj=10), gpu(1, energy_step_mj=10)]
    fake_nvml(gpus)
    tracker = TelemetryTracker([0, 1], cuda_uuids=[g.uuid for g in gpus])
    with tracker:
        wait_for(lambda: tracker.samples_taken >= 5)
        gpus[1].gone = True
        lost_at = tracker.samples_taken
        wait_for(lambda: tracker.samples_taken >= lost_at + 8)
    summary = tracker.summary(images=4)
    alive, lost = summary["devices"]
    assert not alive["lost"] and "lost_at_s" not in alive
    assert lost["lost"] and 0 < lost["lost_at_s"] <= summary["duration_s"]
    assert 5 <= lost["samples"] < alive["samples"]
    # one counter read before the loss: the power readings carry the energy instead
    assert lost["energy_source"] == "integrated-power"
    assert lost["energy_j"] == pytest.approx(70.0 * lost["energy_window_s"], rel=1e-3)
    assert len(lost["series"]["t_s"]) == len(lost["series"]["power_w"]) == lost["samples"]
    json.dumps(summary, allow_nan=False)


def test_throttle_flags_ignore_idle(fake_nvml):
    bits = {"idle": 0x1, "sw_power_cap": 0x4, "hw_thermal": 0x40}
    idle = gpu(0, throttle_reasons=bits["idle"])
    hot = gpu(1, throttle_reasons=bits["idle"] | bits["hw_thermal"] | bits["sw_power_cap"])
    fake_nvml([idle, hot])
    summary = track([idle, hot], samples=3).summary(images=1)
    assert summary["devices"][0]["throttle_reasons"] == [] and not summary["devices"][0]["throttled"]
    assert summary["devices"][1]["throttle_reasons"] == ["sw_power_cap", "hw_thermal_slowdown"]
    assert summary["throttled"]


def test_old_pynvml_throttle_reasons_name(fake_nvml):
    g = gpu(throttle_reasons=0x8)
    nv = fake_nvml([g])
    del nv.nvmlDeviceGetCurrentClocksEventReasons
    assert track([g], samples=3).summary(images=1)["devices"][0]["throttle_reasons"] == ["hw_slowdown"]


def test_uuid_mapping_with_reordered_visible_devices(fake_nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    gpus = [gpu(i, name=f"GPU number {i}") for i in range(3)]
    fake_nvml(gpus)
    tracker = TelemetryTracker([0, 1, 5], cuda_uuids=[gpus[2].uuid, gpus[0].uuid[4:]])
    with tracker:
        wait_for(lambda: tracker.samples_taken >= 2)
    summary = tracker.summary(images=1)
    assert [(d["cuda_index"], d["nvml_index"], d["name"]) for d in summary["devices"]] == [
        (0, 2, "GPU number 2"),
        (1, 0, "GPU number 0"),
    ]
    assert summary["unmapped_cuda_indices"] == [5]


def test_achieved_rate_reported_and_at_least_20_hz(fake_nvml):
    g = gpu()
    fake_nvml([g])
    summary = track([g], samples=25, rate_hz=50.0).summary(images=1)
    assert summary["rate_hz_requested"] == 50.0
    assert 20.0 <= summary["rate_hz_achieved"] <= 60.0
    assert summary["samples"] >= 25
    assert summary["duration_s"] == pytest.approx((summary["samples"] - 1) / summary["rate_hz_achieved"], rel=0.02)
    assert summary["pcie_rate_hz_achieved"] >= 20.0


def test_slow_queries_skip_deadlines_instead_of_drifting(fake_nvml):
    g = gpu()
    nv = fake_nvml([g])
    fast_power = nv.nvmlDeviceGetPowerUsage

    def slow_power(handle: object) -> int:
        time.sleep(0.015)  # a 15 ms NVML answer at a 10 ms period
        return fast_power(handle)

    nv.nvmlDeviceGetPowerUsage = slow_power
    tracker = track([g], samples=12, rate_hz=100.0)
    t_s = tracker.series[0].t_s
    # each tick lands on a multiple of the period (on or after its deadline), every other one skipped
    period_counts = [(t - t_s[0]) / 0.01 for t in t_s[1:-1]]
    assert all(b - a >= 1.5 for a, b in itertools.pairwise(period_counts))
    assert 20.0 <= tracker.summary(images=1)["rate_hz_achieved"] <= 70.0


def test_series_decimated_and_rounded(fake_nvml):
    g = gpu(power_mw=123_456)
    fake_nvml([g])
    summary = track([g], samples=30, rate_hz=200.0, keep_series_points=8).summary(images=1)
    series = summary["devices"][0]["series"]
    assert 2 <= len(series["t_s"]) <= 8
    assert series["t_s"][0] == 0.0 and series["t_s"] == sorted(series["t_s"])
    assert set(series) == {"t_s", "gpu_util_pct", "power_w", "sm_clock_mhz", "temperature_c", "memory_used_bytes"}
    assert series["power_w"][0] == 123.5


def test_pcie_in_bytes_per_second(fake_nvml):
    g = gpu(pcie_tx_kbs=1000, pcie_rx_kbs=NOT_SUPPORTED)
    fake_nvml([g])
    metrics = track([g], samples=3).summary(images=1)["devices"][0]["metrics"]
    assert metrics["pcie_tx_bytes_s"]["mean"] == 1000 * 1024
    assert metrics["pcie_rx_bytes_s"] is None


def test_broken_query_is_recorded_not_raised(fake_nvml):
    g = gpu()
    nv = fake_nvml([g])
    calls = {"n": 0}
    real = nv.nvmlDeviceGetTemperature

    def breaks_later(handle: object, sensor: int) -> int:
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("ctypes exploded")
        return real(handle, sensor)

    nv.nvmlDeviceGetTemperature = breaks_later
    tracker = TelemetryTracker([0], cuda_uuids=[g.uuid])
    with tracker:
        wait_for(lambda: calls["n"] > 3 and not any(t.name.endswith("sampler") for t in sampler_threads()))
    summary = tracker.summary(images=1)
    assert any("ctypes exploded" in e for e in summary["sampler_errors"])


def test_without_nvml_unavailable_and_no_thread(no_nvml):
    before = threading.active_count()
    tracker = TelemetryTracker([0], cuda_uuids=["GPU-x"])
    with tracker:
        assert threading.active_count() == before
    summary = tracker.summary(images=8)
    assert summary["available"] is False
    assert "nvidia-ml-py" in summary["reason"]
    assert summary["devices"] == [] and summary["energy_j"] is None


def test_no_cuda_devices_is_unavailable(fake_nvml):
    fake_nvml([gpu()])
    tracker = TelemetryTracker([0], cuda_uuids=[])
    with tracker:
        pass
    summary = tracker.summary(images=1)
    assert summary["available"] is False and "no CUDA devices" in summary["reason"]


def test_rate_zero_disables(fake_nvml):
    nv = fake_nvml([gpu()])
    tracker = TelemetryTracker([0], rate_hz=0, cuda_uuids=[gpu().uuid])
    with tracker:
        assert not sampler_threads()
    assert tracker.summary(images=1) is None
    assert nv.query_calls == 0


def test_no_thread_left_after_exit(fake_nvml):
    g = gpu()
    fake_nvml([g])
    tracker = TelemetryTracker([0], cuda_uuids=[g.uuid])
    with tracker:
        assert len(sampler_threads()) == 2  # fast lane + PCIe lane
    assert sampler_threads() == []


def test_exception_in_region_still_stops_sampler(fake_nvml):
    g = gpu()
    fake_nvml([g])
    with pytest.raises(KeyError), TelemetryTracker([0], cuda_uuids=[g.uuid]):
        raise KeyError("cell failed")
    assert sampler_threads() == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate_hz": -1.0}, "rate_hz must be"),
        ({"rate_hz": float("inf")}, "from 0 to 1000"),
        ({"keep_series_points": 1}, "keep_series_points"),
        ({"cuda_indices": [-1]}, "CUDA ordinals"),
    ],
)
def test_bad_arguments_are_clear(kwargs, message):
    args = {"cuda_indices": [0], **kwargs}
    with pytest.raises(ValueError, match=message):
        TelemetryTracker(**args)


def test_stats_helpers():
    assert stats.distribution([1.0, float("nan"), 3.0, 2.0]) == {"mean": 2.0, "p95": 2.9, "max": 3.0}
    assert stats.distribution([float("nan")]) is None
    assert stats.integrate_power_j([0.0, 1.0, 3.0], [100.0, 200.0, 200.0]) == pytest.approx(150.0 + 400.0)
    assert stats.counter_energy_j([1000.0, 1500.0, 4000.0]) == (3.0, None)
    assert stats.counter_energy_j([5000.0, 10.0])[0] is None
    assert stats.counter_energy_j([])[1] == "energy counter not supported"
    assert stats.decimate_indices(5, 10) == [0, 1, 2, 3, 4]
    picked = stats.decimate_indices(1000, 7)
    assert picked[0] == 0 and picked[-1] == 999 and len(picked) == 7
    assert stats.throttle_reason_names(0x1 | 0x10 | 0x8000) == ["sync_boost", "unknown_0x8000"]
    assert math.isclose(stats.percentile([0.0, 10.0], 95.0), 9.5)


def test_latest_reading_for_live_view(fake_nvml):
    g = gpu(power_mw=250_000, energy_step_mj=1_000)
    fake_nvml([g])
    tracker = TelemetryTracker([0], cuda_uuids=[g.uuid])
    with tracker:
        wait_for(lambda: tracker.samples_taken >= 3)
        row = tracker.latest()[0]
    assert row["power_w"] == 250.0 and row["energy_mj"] is not None and row["lost"] is False


def test_overhead_verdict_needs_the_interval_not_the_median():
    from detbench.bench.tools.telemetry_overhead import verdict

    assert verdict([0.1, 0.3, 0.4, 0.2]) == "under 1%"
    assert verdict([-3.0, -2.9, -3.1, -3.0]) == "over 1%"
    assert verdict([-12.9, 12.4, 3.9, -11.8]).startswith("inconclusive")
