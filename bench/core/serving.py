"""The serving study's plain parts (detbench.bench.tools.serve): its settings, the Server scenario's rate search,
LoadGen's logs read into figures, and one configuration's trials turned into cells of the run record.

Nothing here runs a model or LoadGen: the server loop (detbench.bench.runtime.serve_loop) runs trials, and
:func:`serve_configuration` asks for them through a callable, so the study runs the same against a server in its
own process (the tool) or in this one (the tests).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from detbench.bench.core.options import OptionError
from detbench.bench.core.schema import SCENARIOS, Cell, CellResult, ServeInfo, ServeTrial
from detbench.bench.core.stats.latency import latency_stats, percentile

PERCENTILE = 99.0  # the Server scenario's bound applies to this latency percentile (MLPerf's choice for detectors)
P99_CONFIDENCE = 0.95  # the distribution-free interval stated with every trial's p99
DEFAULT_QUERIES = 500  # per trial: the p99 is then the 5th-largest latency, its 95 % interval ranks 1..10 from the top
MIN_QUERIES = 100  # below this a p99 is the slowest query or its neighbour: refused
SEARCH_TRIALS = 10  # at most this many Server trials per cell (a rate that fails is tried twice)
SEARCH_PRECISION = 0.1  # the search stops once the passing and failing rates are within 10 % of each other
START_UTILISATION = 0.5  # the first Server trial offers half of what one query alone at a time would sustain
MAX_TRIAL_S = 120.0  # a trial at a low rate stops here with fewer queries (its count is in the trial)
SEARCH_FLOOR = 1 / 64  # below START x this, the search gives up: nothing meets the bound


class ServeOptionError(OptionError):
    """A bad serving option; one line naming the valid choices."""


@dataclass(frozen=True)
class ServeSettings:
    """One serving study: which scenarios, the Server bound, the queries per trial, dynamic batching."""

    scenarios: tuple[str, ...] = ("single-stream", "server")
    latency_bound_ms: float = 100.0
    queries: int = DEFAULT_QUERIES
    max_batch: int = 1  # dynamic batching: up to this many queued queries per model call (1 = none)
    batch_wait_ms: float = 0.0  # how long the first query of a batch waits for more (only with max_batch > 1)
    search_trials: int = SEARCH_TRIALS
    search_precision: float = SEARCH_PRECISION
    max_trial_s: float = MAX_TRIAL_S  # LoadGen ends a trial here even short of its queries (slow rates): stated
    plant_slowdown: float = 0.0  # a relative busy-wait after each model call, as a fraction of the call (self-check)

    def __post_init__(self) -> None:
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown or not self.scenarios:
            raise ServeOptionError(f"unknown scenario {', '.join(unknown) or '(none)'}; valid: {', '.join(SCENARIOS)}")
        checks = (("--p99-bound-ms", self.latency_bound_ms, 0.01, 1e7), ("--queries", self.queries, MIN_QUERIES, 1e7),
                  ("--max-batch", self.max_batch, 1, 1024), ("--batch-wait-ms", self.batch_wait_ms, 0, 1e5),
                  ("--search-trials", self.search_trials, 2, 100), ("search precision", self.search_precision, 0.01, 1),
                  ("--plant-slowdown", self.plant_slowdown, 0, 100), ("--max-trial-s", self.max_trial_s, 1, 1e5))
        for name, value, low, high in checks:
            if not low <= value <= high or math.isnan(value):
                raise ServeOptionError(f"bad {name} {value!r}; valid: {low:g}..{high:g}")
        if self.max_batch == 1 and self.batch_wait_ms:
            raise ServeOptionError("--batch-wait-ms needs dynamic batching; valid: --max-batch 2 or more with it")

    def cell(self, model: str, runtime: str, image_size: tuple[int, int] | None, scenario: str) -> Cell:
        return Cell(model, runtime=runtime, batch_size=self.max_batch, image_size=image_size, scenario=scenario,
                    latency_bound_ms=self.latency_bound_ms if scenario == "server" else None,
                    batch_wait_ms=self.batch_wait_ms if self.max_batch > 1 else None)


# --- the rate search ---------------------------------------------------------------------------------------------


@dataclass
class RateSearch:
    """The Server scenario's search for the highest arrival rate whose p99 meets the bound: double from a start
    until a rate fails (halve until one passes), then bisect geometrically between the highest passing rate and the
    lowest failing rate above it until they are within ``precision`` of each other or the trials run out.

    A rate fails only when it fails twice: a neighbour on the host can slow a trial, never speed one up, so one trial
    over the bound may be the host's doing, while one within it is a rate the server sustained. A rate that failed
    once is tried again at once; the trials count toward ``max_trials``."""

    start_qps: float
    max_trials: int = SEARCH_TRIALS
    precision: float = SEARCH_PRECISION
    tried: list[tuple[float, bool]] = field(default_factory=list)  # (target rate, met the bound), in order
    stop_reason: str | None = None

    def record(self, rate: float, met: bool) -> None:
        self.tried.append((rate, met))

    @property
    def sustainable_qps(self) -> float | None:
        passing = [rate for rate, met in self.tried if met]
        return max(passing) if passing else None

    def _failed(self, rate: float) -> bool:
        """Whether ``rate`` counts as over the bound: two trials of it failed and none passed."""
        outcomes = [met for tried, met in self.tried if tried == rate]
        return len(outcomes) >= 2 and not any(outcomes)

    def next_rate(self) -> float | None:
        """The next rate to try, or None with :attr:`stop_reason` set."""
        low = self.sustainable_qps
        if len(self.tried) < self.max_trials and self.tried:
            last, met = self.tried[-1]
            if not met and not self._failed(last) and (low is None or last > low):
                return last  # failed once: tried again before the search believes it
        above = [rate for rate, _ in self.tried if self._failed(rate) and (low is None or rate > low)]
        high = min(above) if above else None
        if low is not None and high is not None and high / low <= 1 + self.precision:
            self.stop_reason = f"bracketed: {low:.4g} met the bound, {high:.4g} did not (within {self.precision:.0%})"
            return None
        if len(self.tried) >= self.max_trials:
            unconfirmed = [rate for rate, met in self.tried if not met and not self._failed(rate)
                           and (low is None or rate > low)]
            if high:
                failing = f", {high:.4g} did not"
            else:
                failing = f", {min(unconfirmed):.4g} failed once" if unconfirmed else ", no failing rate found"
            passing = f"{low:.4g} met the bound" if low else "none met"
            self.stop_reason = f"{self.max_trials} trials run; {passing}{failing}"
            return None
        if low is None and high is None:
            return self.start_qps
        if low is None:
            assert high is not None
            if high <= self.start_qps * SEARCH_FLOOR:
                self.stop_reason = f"no rate down to {high:.4g} queries/s met the bound"
                return None
            return high / 2
        if high is None:
            return low * 2
        return math.sqrt(low * high)


# --- LoadGen's logs ---------------------------------------------------------------------------------------------

MLLOG = ":::MLLOG "


def detail_log_values(text: str) -> dict[str, Any]:
    """Every ``key: value`` of LoadGen's ``mlperf_log_detail.txt`` (its ``:::MLLOG {json}`` lines; the last wins)."""
    values: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith(MLLOG):
            try:
                entry = json.loads(line[len(MLLOG):])
            except ValueError:
                continue  # a line LoadGen cut short; the results are on lines of their own
            if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                values[entry["key"]] = entry.get("value")
    return values


def trace_latencies_ns(text: str) -> list[int]:
    """Each sample's latency in LoadGen's ``mlperf_log_trace.json`` (enable_trace): the ``Sample`` begin events'
    ``complete_ns``, which LoadGen counts from the sample's scheduled arrival, in the order issued. Read line by line:
    the trace is one event a line, and LoadGen does not promise a closed JSON document."""
    latencies: list[int] = []
    for line in text.splitlines():
        if '"name":"Sample"' not in line or '"ph":"b"' not in line:
            continue
        event = json.loads(line.rstrip().rstrip(","))
        latencies.append(int(event["args"]["complete_ns"]))
    return latencies


def p99_interval(sorted_ms: list[float], q: float = PERCENTILE / 100,
                 confidence: float = P99_CONFIDENCE) -> list[float]:
    """A distribution-free interval for the q-quantile from order statistics: ranks l < u with
    P(X_(l) <= quantile <= X_(u)) >= confidence under the binomial law of the count below the quantile. Empty when
    ``n`` is too small for one (the interval would need ranks past the largest latency)."""
    n = len(sorted_ms)
    tail = (1 - confidence) / 2
    from scipy.stats import binom  # noqa: PLC0415 - here: the report imports this module and needs no scipy, which took
    # 1.6 CPU-s of its start on this VM (2026-12-06); the server loop imports it as it starts (serve_loop)

    low_rank, high_rank = int(binom.ppf(tail, n, q)), int(binom.ppf(1 - tail, n, q)) + 1  # 1-based ranks
    if low_rank < 1 or high_rank > n:
        return []
    return [sorted_ms[low_rank - 1], sorted_ms[high_rank - 1]]


def trial_from_logs(detail: dict[str, Any], latencies_ms: list[float], *, target_qps: float | None,
                    bound_ms: float | None, mean_batch: float | None, histogram: str | None,
                    wall_s: float) -> ServeTrial:
    """A trial's record from LoadGen's detail values and its per-sample latencies (milliseconds, from the trace)."""
    if not latencies_ms:
        return ServeTrial("error", target_qps=target_qps, reason="LoadGen's trace holds no completed sample",
                          wall_s=round(wall_s, 3))
    ordered = sorted(latencies_ms)
    stats = latency_stats(ordered)
    achieved = detail.get("result_completed_samples_per_sec") or detail.get("result_samples_per_second") or \
        detail.get("result_qps_with_loadgen_overhead")
    valid = detail.get("result_validity")
    reason = detail.get("result_invalid_reason") or None
    p99 = percentile(ordered, PERCENTILE)
    return ServeTrial(
        "ok", target_qps=target_qps, queries=len(ordered), scheduled_qps=_float(detail.get(
            "result_scheduled_samples_per_sec")), achieved_qps=_float(achieved),
        mean_batch=None if mean_batch is None else round(mean_batch, 3), p50_ms=round(stats.median_ms, 4),
        p90_ms=round(stats.p90_ms, 4), p99_ms=round(p99, 4), max_ms=round(stats.max_ms, 4),
        mean_ms=round(stats.mean_ms, 4), p99_interval_ms=[round(v, 4) for v in p99_interval(ordered)],
        met_bound=None if bound_ms is None else p99 <= bound_ms,
        loadgen_valid=None if valid is None else valid == "VALID",
        early_stopping_met=detail.get("early_stopping_met") if isinstance(detail.get("early_stopping_met"), bool)
        else None, histogram=histogram, wall_s=round(wall_s, 3), reason=reason if isinstance(reason, str) else None)


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# --- one configuration's cells ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialRequest:
    """What the server loop is asked to run: one LoadGen trial."""

    scenario: str
    queries: int
    target_qps: float | None = None  # server
    expected_ms: float | None = None  # single-stream and offline: LoadGen's hint for its schedule
    bound_ms: float | None = None  # server: the bound the trial is judged against
    max_duration_s: float | None = None  # LoadGen stops issuing here even short of ``queries``

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class TrialReply:
    """A trial run: its record and its per-sample latencies (ms), which the reported trial's cell keeps."""

    trial: ServeTrial
    latencies_ms: list[float] = field(default_factory=list)


@dataclass
class ServerFacts:
    """What setting up the server measured, shared by its cells."""

    step_ms: float  # one query alone (median at set-up): the service time the search starts from
    load_generator: str
    threads: int | None = None
    postprocess: dict[str, Any] | None = None  # detbench.bench.models.postprocess.PostprocessLoad.to_dict()
    detections_per_image: dict[str, float] | None = None
    deploy: Any = None  # detbench.bench.core.schema.DeployInfo of a deployed runtime
    device: str | None = None
    notes: dict[str, str] = field(default_factory=dict)


def serve_configuration(settings: ServeSettings, model: str, runtime: str, image_size: tuple[int, int] | None,
                        facts: ServerFacts, run: Callable[[TrialRequest], TrialReply],
                        progress: Callable[[str], None] = lambda line: None) -> list[CellResult]:
    """Every scenario of ``settings`` against one set-up server (``run`` runs one trial): a cell each."""
    cells: list[CellResult] = []
    service_ms = facts.step_ms  # the search starts from it: SingleStream's median once measured (warmer, longer)
    for scenario in settings.scenarios:
        info = ServeInfo(scenario, facts.load_generator, settings.queries, PERCENTILE, step_ms=round(facts.step_ms, 4),
                         planted_slowdown=settings.plant_slowdown, threads=facts.threads, notes=dict(facts.notes))
        replies: list[TrialReply] = []
        if scenario == "server":
            search = RateSearch(START_UTILISATION * 1000.0 / service_ms, settings.search_trials,
                                settings.search_precision)
            while (rate := search.next_rate()) is not None:
                reply = run(TrialRequest(scenario, settings.queries, target_qps=rate,
                                         bound_ms=settings.latency_bound_ms, max_duration_s=settings.max_trial_s))
                search.record(rate, reply.trial.status == "ok" and bool(reply.trial.met_bound))
                replies.append(reply)
                progress(_trial_line(scenario, reply.trial))
            info.sustainable_qps = search.sustainable_qps
            info.stop_reason = search.stop_reason
            met = [i for i, r in enumerate(replies) if r.trial.target_qps == info.sustainable_qps and r.trial.met_bound]
            info.reported_trial = met[-1] if met else None
        else:
            replies.append(run(TrialRequest(scenario, settings.queries, expected_ms=facts.step_ms,
                                            max_duration_s=settings.max_trial_s)))
            progress(_trial_line(scenario, replies[-1].trial))
            info.reported_trial = 0 if replies[0].trial.status == "ok" else None
            if scenario == "single-stream" and replies[0].trial.p50_ms:
                service_ms = replies[0].trial.p50_ms
        info.trials = [r.trial for r in replies]
        cells.append(_cell_result(settings.cell(model, runtime, image_size, scenario), info, replies, facts))
    return cells


def _cell_result(cell: Cell, info: ServeInfo, replies: list[TrialReply], facts: ServerFacts) -> CellResult:
    result = CellResult(cell, serve=info, postprocess=facts.postprocess, deploy=facts.deploy, device=facts.device,
                        detections_per_image=facts.detections_per_image, timer="loadgen-scheduled-arrival")
    if info.reported_trial is None:
        failed = [t for t in info.trials if t.status != "ok"]
        result.status = failed[-1].status if failed and len(failed) == len(info.trials) else "error"
        result.reason = (failed[-1].reason if failed and len(failed) == len(info.trials) else
                         f"no arrival rate met p{PERCENTILE:g} <= {cell.latency_bound_ms:g} ms ({info.stop_reason})")
        return result
    reply = replies[info.reported_trial]
    result.times_ms = [round(t, 4) for t in reply.latencies_ms]
    result.latency = latency_stats(result.times_ms)
    result.throughput_ips = reply.trial.achieved_qps
    return result


def _trial_line(scenario: str, trial: ServeTrial) -> str:
    if trial.status != "ok":
        return f"  {scenario}: {trial.status} ({trial.reason})"
    rate = f"{trial.target_qps:8.2f}/s offered, " if trial.target_qps is not None else ""
    bound = "" if trial.met_bound is None else (" meets the bound" if trial.met_bound else " over the bound")
    return (f"  {scenario}: {rate}{trial.achieved_qps or 0:8.2f}/s done, p50 {trial.p50_ms:8.2f} ms, p99 "
            f"{trial.p99_ms:8.2f} ms{bound} ({trial.queries} queries, batch {trial.mean_batch or 1:.2f})")


# --- what the report and the advisor read -------------------------------------------------------------------------

KNEE_FACTOR = 2.0  # the knee: the first offered rate whose p99 is more than twice the lightest load's


@dataclass(frozen=True)
class CurvePoint:
    """One Server trial on a latency-vs-offered-load curve."""

    offered_qps: float
    achieved_qps: float | None
    p50_ms: float | None
    p99_ms: float | None
    met_bound: bool
    knee: bool = False  # the first point past the knee (KNEE_FACTOR)


def load_curve(info: ServeInfo) -> list[CurvePoint]:
    """A Server cell's trials by offered rate (failed trials left out), the knee marked: the first rate whose p99
    exceeds :data:`KNEE_FACTOR` times the p99 at the lightest load tried, where queueing starts to dominate."""
    trials = sorted((t for t in info.trials if t.status == "ok" and t.target_qps is not None),
                    key=lambda t: float(t.target_qps or 0))
    points, seen_knee = [], False
    floor = trials[0].p99_ms if trials and trials[0].p99_ms else None
    for trial in trials:
        knee = bool(not seen_knee and floor and trial.p99_ms and trial.p99_ms > KNEE_FACTOR * floor)
        seen_knee = seen_knee or knee
        points.append(CurvePoint(float(trial.target_qps or 0), trial.achieved_qps, trial.p50_ms, trial.p99_ms,
                                 bool(trial.met_bound), knee))
    return points


@dataclass(frozen=True)
class ServingAdvice:
    """Per detector, image size and bound: the configuration that sustains the most queries/s under the bound."""

    model: str
    image_size: tuple[int, int] | None
    bound_ms: float
    runtime: str | None  # None: no configuration met the bound
    max_batch: int | None
    batch_wait_ms: float | None
    sustainable_qps: float | None
    others: tuple[str, ...] = ()  # the other configurations, "runtime batch N: Q/s" (or why none)
    run: str = ""

    @property
    def line(self) -> str:
        size = f" ({self.image_size[0]}x{self.image_size[1]})" if self.image_size else ""
        if self.runtime is None:
            return f"serve {self.model}{size} at <= {self.bound_ms:g} ms p99: no configuration tried met the bound"
        batch = "no batching" if self.max_batch == 1 else \
            f"dynamic batch {self.max_batch} (wait {self.batch_wait_ms or 0:g} ms)"
        return (f"serve {self.model}{size} at <= {self.bound_ms:g} ms p99: {self.runtime}, {batch}, "
                f"{self.sustainable_qps:.3g} queries/s")


def serving_advice(results: list[CellResult], run: str = "") -> list[ServingAdvice]:
    """The advisor's serving lines: over the Server cells of ``results``, grouped by (model, image size, bound)."""
    groups: dict[tuple[str, tuple[int, int] | None, float], list[CellResult]] = {}
    for result in results:
        cell = result.cell
        if cell.scenario == "server" and cell.latency_bound_ms is not None:
            groups.setdefault((cell.model, cell.image_size, cell.latency_bound_ms), []).append(result)
    advice = []
    for (model, size, bound), members in groups.items():
        def rate(r: CellResult) -> float:
            return (r.serve.sustainable_qps or 0.0) if r.status == "ok" and r.serve is not None else 0.0

        ranked = sorted(members, key=rate, reverse=True)
        best = ranked[0] if rate(ranked[0]) > 0 else None
        others = tuple(f"{r.cell.runtime} batch {r.cell.batch}: " + (f"{rate(r):.3g}/s" if rate(r) else
                                                                     f"{r.status} ({(r.reason or '')[:80]})")
                       for r in ranked if r is not best)
        advice.append(ServingAdvice(model, size, bound, best.cell.runtime if best else None,
                                    best.cell.batch if best else None, best.cell.batch_wait_ms if best else None,
                                    rate(best) if best else None, others, run))
    return advice
