"""Warm-up convergence on synthetic sequences, the timed region's bounds, compile/break-even arithmetic."""

from __future__ import annotations

import pytest

from detbench.bench.core import ratios
from detbench.bench.core.options import MeasurePolicy, WarmupPolicy
from detbench.bench.measure import timing


class FakeClock:
    """A clock that advances by a scripted duration on every ``step()``; sync is a no-op."""

    def __init__(self, durations_s):
        self.now = 0.0
        self.durations = list(durations_s)
        self.calls = 0

    def __call__(self):
        return self.now

    def step(self):
        self.now += self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1


def test_window_converged_compares_medians_of_the_last_two_windows():
    assert not timing.window_converged([1.0] * 5, window=3, tolerance=0.02)  # fewer than 2 windows
    assert timing.window_converged([5, 4, 3, 1.0, 1.01, 0.99, 1.0, 1.005, 1.0], window=3, tolerance=0.02)
    assert not timing.window_converged([1.0, 1.0, 1.0, 1.2, 1.2, 1.2], window=3, tolerance=0.02)


def test_warm_up_stops_when_a_decaying_sequence_settles():
    # 50 ms first iterations decaying to a 10 ms plateau (cache warm-up, autotune, allocator growth)
    durations = [0.050, 0.040, 0.030, 0.020, 0.015, 0.012, 0.011] + [0.010] * 100
    clock = FakeClock(durations)
    result = timing.warm_up(clock.step, lambda: None, WarmupPolicy(window=3, tolerance=0.02, min_iterations=4,
                                                                   max_iterations=100, max_s=60), clock=clock)
    assert result.converged and result.stop_reason == "converged"
    assert 9 <= result.iterations <= 14  # needs two flat windows after the decay
    assert result.median_ms == pytest.approx(10.0)
    assert result.seconds == pytest.approx(sum(durations[: result.iterations]))


def test_warm_up_reports_not_converged_at_the_iteration_cap():
    clock = FakeClock([0.010, 0.020] * 100)  # alternates: medians keep moving with window 1
    result = timing.warm_up(clock.step, lambda: None, WarmupPolicy(window=1, tolerance=0.02, min_iterations=2,
                                                                   max_iterations=12, max_s=60), clock=clock)
    assert (result.converged, result.stop_reason, result.iterations) == (False, "max_iterations", 12)


def test_warm_up_stops_at_the_time_cap():
    clock = FakeClock([float(i) for i in range(1, 100)])  # ever slower: never settles
    result = timing.warm_up(clock.step, lambda: None, WarmupPolicy(window=2, tolerance=0.02, min_iterations=2,
                                                                   max_iterations=1000, max_s=20), clock=clock)
    assert (result.converged, result.stop_reason) == (False, "max_s")
    assert result.seconds >= 20


def test_perf_counter_region_is_time_and_count_bounded():
    clock = FakeClock([0.1])
    run = timing.measure_perf_counter(clock.step, lambda: None, MeasurePolicy(min_iterations=5, min_s=2.0,
                                                                             max_iterations=100, max_s=10), clock)
    assert len(run.times_ms) == 20 and run.times_ms[0] == pytest.approx(100.0)  # 2 s of 100 ms iterations
    clock = FakeClock([1.0])
    run = timing.measure_perf_counter(clock.step, lambda: None, MeasurePolicy(min_iterations=5, min_s=0.5,
                                                                             max_iterations=100, max_s=10), clock)
    assert len(run.times_ms) == 5  # the iteration floor wins over a short min_s
    assert run.timer == "perf-counter+sync"


def test_planned_iterations_for_the_event_timer():
    policy = MeasurePolicy(min_iterations=20, min_s=2.0, max_iterations=2000, max_s=20)
    assert timing.planned_iterations(policy, 10.0) == 200  # 2 s of 10 ms
    assert timing.planned_iterations(policy, 500.0) == 20  # floor
    assert timing.planned_iterations(policy, 0.01) == 2000  # cap


def test_first_call_is_timed_alone_and_compile_is_first_minus_steady():
    clock = FakeClock([3.0, 0.01])
    first_s, _ = timing.time_first_call(clock.step, lambda: None, clock=clock)
    assert first_s == pytest.approx(3.0)
    assert ratios.compile_seconds(first_s, steady_median_ms=10.0) == pytest.approx(2.99)


def test_break_even_iterations():
    assert ratios.break_even_iterations(30.0, eager_median_ms=20.0, compiled_median_ms=10.0) == pytest.approx(3000)
    assert ratios.break_even_iterations(30.0, 10.0, 12.0) is None  # compiled is slower: never pays off
    assert ratios.break_even_iterations(30.0, None, 12.0) is None


def test_policies_validate():
    with pytest.raises(ValueError):
        WarmupPolicy(tolerance=0)
    with pytest.raises(ValueError):
        MeasurePolicy(min_s=5, max_s=1)
