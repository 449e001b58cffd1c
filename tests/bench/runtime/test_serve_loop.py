"""The serving study's server loop under MLPerf LoadGen, in this process, with a step that is a busy-wait of a known
time (no model): a planted slowdown is seen in the latencies and the sustainable Server rate, a server that stalls
once is charged for the queries that waited behind it, and each trial's histogram decodes to its latencies."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from detbench.bench.core.serving import ServerFacts, ServeSettings, TrialReply, TrialRequest, serve_configuration
from detbench.bench.runtime.serve_loop import Server, busy_wait, decode_histogram, run_trial
from tests.extras import require_extra

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _serve_extra() -> None:
    require_extra("serve")

STEP_S = 0.002  # the fake model: every call spins for 2 ms


class TakeTurns:
    """Studies that take turns, one trial each in a fixed order (one that finishes leaves the others to go on), so a
    neighbour's load that comes and goes falls on all alike: variants compared interleaved, as the measurements are."""

    def __init__(self, parties: tuple[str, ...]) -> None:
        self._cond = threading.Condition()
        self._active = list(parties)
        self._turn = parties[0]

    def _pass(self, party: str) -> None:
        at = self._active.index(party)
        self._turn = (self._active[at + 1:] + self._active[:at + 1])[0]
        self._cond.notify_all()

    def trials(self, party: str, server: Server, folder: Path) -> Callable[[TrialRequest], TrialReply]:
        count = [0]

        def run(request: TrialRequest) -> TrialReply:  # one log folder per trial, under pytest's tmp_path
            with self._cond:
                self._cond.wait_for(lambda: self._turn == party)
                count[0] += 1
                try:
                    return run_trial(server, request, folder / f"trial-{count[0]}")
                finally:
                    self._pass(party)
        return run

    def leave(self, party: str) -> None:
        with self._cond:
            if self._turn == party:
                self._pass(party)
            self._active.remove(party)


def _second_fastest(times_ms: list[float]) -> float:
    return sorted(times_ms)[1]


def _serve_interleaved(tmp_path: Path, plants: dict[str, float], settings: ServeSettings):
    """Each planted slowdown's study on a server of its own, the two taking turns trial by trial."""
    turns = TakeTurns(tuple(plants))

    def serve(name: str) -> list:
        server = Server(lambda indices: busy_wait(STEP_S), plant_slowdown=plants[name])
        try:
            facts = ServerFacts(step_ms=STEP_S * 1000, load_generator="test")
            return serve_configuration(settings, "busy-wait", "eager", None, facts,
                                       turns.trials(name, server, tmp_path / name))
        finally:
            turns.leave(name)
            server.close()

    with ThreadPoolExecutor(len(plants)) as pool:
        futures = {name: pool.submit(serve, name) for name in plants}
        return {name: future.result(timeout=100) for name, future in futures.items()}


def _search(trials: list) -> list[tuple[float, bool | None, float]]:
    """A Server search's trials in order, each (rate asked for, met the bound, p99 ms): what an assertion shows."""
    return [(round(t.target_qps or 0, 1), t.met_bound, round(t.p99_ms or 0, 1)) for t in trials]


@pytest.mark.timing
@pytest.mark.alone
def test_a_planted_slowdown_raises_the_latency_and_lowers_the_sustainable_rate_by_the_expected_amount(tmp_path):
    """A step of S = 2 ms with a planted relative busy-wait f = 1 (every call then takes 2S = 4 ms). The two servers
    take turns, trial by trial (TakeTurns), so a neighbour that comes and goes loads both alike.

    SingleStream (one query at a time), twice per server, by turns: the fastest queries take S + o against 2S + o (o:
    LoadGen's and the queue's overhead per query, ~0.1 ms here), a ratio of 1.9..2; accepted within 1.5..2.5 on this
    noisy 2-core VM. The second fastest of the 400, not a percentile: a neighbour that arrives for one run moves its
    percentiles, the planted wait (a fraction of the step's own wall time) doubling what the neighbour takes; CI saw
    the 10th percentiles' ratio at 3.56 beside the other timing tests (2026-12-05). Each p99 (the 2nd slowest of 200)
    is at least its server's step, 2S slowed: a neighbour only adds to it. Comparing the two servers' p99s failed
    beside a spinning neighbour (one run each: 4.3 ms slowed against 6.6 ms unslowed; the lower of two each: 4.1
    against 5.8, 2026-12-06): the spinner preempts a few of a 0.4 s run's queries by a scheduler slice, ~4 ms.

    Server, bound B = 100 ms, N = 200 queries a trial: a trial this short ends before an overloaded queue is steady,
    so a rate passes while the backlog it builds, N (S + o) - N / rate, stays under B: up to N / (N (S + o) - B),
    667/s for the step and 286/s for the slowed one (o = 0), 556/s and 263/s (o = 0.3 ms): a ratio of 0.43..0.47.
    Each search doubles from half of what its SingleStream median sustains and stops once its passing and failing
    rates are within 20 % (at most 7 trials; a rate fails only when it fails twice), so each rate is known to 20 %
    below its limit, a ratio of 0.36..0.56, and a host that slows both failures of a rate lowers one by a step more:
    accepted within 0.25..0.7. Measured on this VM (2026-12-05): 0.36-0.42 alone (5 runs), 0.30-0.51 (20 runs) beside
    three neighbours that spin and rest by turns (0.3-2.5 s each); CI saw 0.72 once, the searches neither interleaved
    nor confirming a failure, and then 0.20 (CI) and 0.25 (here) at the timing phase's start, beside the waiting
    tests' start-up: a neighbour that stays for both tries of the slowed server's rate lowers it by a factor, not a
    step. So the test runs `alone` (tests/conftest.py): last, once the other tests of the run have finished."""
    settings = ServeSettings(("single-stream", "single-stream", "server"), latency_bound_ms=100.0, queries=200,
                             search_trials=7, search_precision=0.2)
    studies = _serve_interleaved(tmp_path, {"base": 0.0, "slow": 1.0}, settings)
    base, slow = studies["base"], studies["slow"]
    assert [c.status for c in base + slow] == ["ok"] * 6, [c.reason for c in base + slow]
    fast_ratio = _second_fastest(slow[0].times_ms + slow[1].times_ms) / _second_fastest(
        base[0].times_ms + base[1].times_ms)
    p99s = {name: [c.serve.trials[0].p99_ms for c in study[:2]] for name, study in studies.items()}
    assert 1.5 <= fast_ratio <= 2.5, (fast_ratio, p99s)
    assert min(p99s["base"]) >= STEP_S * 1000 and min(p99s["slow"]) >= 2 * STEP_S * 1000, p99s
    rate_ratio = slow[2].serve.sustainable_qps / base[2].serve.sustainable_qps
    assert 0.25 <= rate_ratio <= 0.7, (rate_ratio, _search(base[2].serve.trials), _search(slow[2].serve.trials))
    # the cell reports the trial at the sustainable rate: its latencies, under the bound
    assert slow[2].latency.p99_ms <= 100.0 and slow[2].throughput_ips > 0 and len(slow[2].times_ms) == 200


def test_a_server_that_stalls_once_is_charged_for_the_queries_queued_behind_it(tmp_path):
    """Poisson arrivals at 150/s on a 2 ms step (utilisation 0.3) and one call that spins D = 150 ms: about
    150/s x 0.15 s = 22 queries arrive during the stall and wait for it, up to D, so the p99 of 300 queries (the 3rd
    slowest) is near D - 3 / 150 s = 130 ms. Timing from the scheduled arrival must show it (p99 >= D / 2), though
    every call but one took 2 ms; the median stays near the step."""
    calls = [0]

    def step(indices: list[int]) -> None:
        calls[0] += 1
        busy_wait(0.150 if calls[0] == 60 else STEP_S)

    server = Server(step)
    try:
        reply = run_trial(server, TrialRequest("server", 300, target_qps=150.0, bound_ms=50.0), tmp_path / "stall")
    finally:
        server.close()
    trial = reply.trial
    assert trial.status == "ok" and trial.queries == 300
    assert trial.max_ms >= 150.0 and trial.p99_ms >= 75.0, trial
    assert trial.met_bound is False and trial.p50_ms < 30.0
    assert trial.p99_interval_ms == []  # 300 queries are too few for a 95 % interval of the p99 (500 are enough)
    histogram = decode_histogram(trial.histogram)  # microseconds, 3 significant digits
    assert histogram.get_total_count() == 300
    assert histogram.get_max_value() / 1000 == pytest.approx(trial.max_ms, rel=2e-3)
    assert sorted(reply.latencies_ms)[-1] == pytest.approx(trial.max_ms, abs=1e-3)


def test_dynamic_batching_groups_queued_queries_up_to_the_largest_batch(tmp_path):
    """Offline issues every query at once: with batches of up to 4 and no wait, each call takes 4 queued ones."""
    sizes: list[int] = []
    server = Server(lambda indices: sizes.append(len(indices)), max_batch=4, max_wait_s=0.0)
    try:
        reply = run_trial(server, TrialRequest("offline", 120, expected_ms=0.1), tmp_path / "offline")
    finally:
        server.close()
    assert reply.trial.status == "ok" and reply.trial.queries == sum(sizes) >= 120
    assert max(sizes) == 4 and reply.trial.mean_batch > 3


def test_a_step_that_raises_is_a_failed_trial_not_a_hang(tmp_path):
    def step(indices: list[int]) -> None:
        raise RuntimeError("planted")

    server = Server(step)
    try:
        reply = run_trial(server, TrialRequest("single-stream", 100, expected_ms=1.0), tmp_path / "raises")
    finally:
        server.close()
    assert reply.trial.status == "error" and "RuntimeError: planted" in reply.trial.reason
