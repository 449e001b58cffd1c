"""What should I use? One piece of advice per (run, detector, mode, GPU count), from cell results, by one rule.

The pytest plugin's closing summary (bench/plugin/display.py), ``detbench-report`` (HTML, summary.md,
recommendations.csv) and ``python -m detbench.reports.advisor`` all render these typed rows; none ranks on its own.
This module is pure: no torch, no pandas, no rendering (renderers format the numbers).

The ranking rule
----------------
1. Candidates are the cells that ran ok with a throughput and, for a deployment runtime, whose outputs agree with
   eager FP32 (detbench.bench.runtime.deploy.parity). Cells that did not (oom, error, timeout, skipped, not-supported,
   or outputs that disagree: status ``parity disagree``) are never picked; they are listed with their recorded reason.
2. The batch size (and image size) the advice is given at is the one of the candidate with the highest
   throughput (images/s, the median over its timed blocks). Each batch size has its own baseline, so no paired
   ratio compares batch sizes: this one step is a plain throughput comparison.
3. At that batch size the candidates are ranked by their gain over the group's baseline, eager FP32 at the same
   mode, batch size, image size and GPU count:

   * the **paired ratio** (median over the rounds in which one worker timed both cells, interleaved, with its
     interquartile range) where the cell has one;
   * otherwise the quotient of the two throughputs, marked **not interleaved**: the cells were timed by
     different workers (``--isolation cell``, a retried worker, a batch search), so host drift is in it;
   * the baseline's own gain is 1.

   A paired ratio cancels the host's drift, which moved host-bound detectors 10-60 % between minutes on the lent
   VMs; two throughputs timed apart do not. So where the cells were interleaved their ratio, not their
   throughputs, decides the order, and every row says which it used. With no ok baseline at that batch size,
   throughput ranks and the gain says why there is none. Equal gains are ordered by throughput.
4. Candidates at other batch sizes follow, by throughput.
5. The pick and the runner-up are a **tie within the noise** when both gains are paired against the same
   baseline and the runner-up's upper quartile reaches the pick's lower quartile.

A second question, for serving one request at a time: :func:`within_latency` names per detector the configuration
at batch 1 (single stream) with the lowest median latency among those whose p99 is at most a budget, with the same
exclusions (never a cell whose outputs disagree), and lists the others with their p99.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from detbench.bench.core.ratios import baseline_of
from detbench.bench.core.schema import BATCH_MAX, COMPILE_MODES, MEMORY_FORMATS, PRECISIONS, RUNTIMES, Cell, CellResult

REASON_CHARS = 240
INTERLEAVED = "interleaved"  # both cells timed in rounds by one worker: a paired ratio with its spread
NOT_INTERLEAVED = "not interleaved"  # timed by different workers: a plain throughput quotient, host drift included
BASELINE = "baseline"  # the cell is eager FP32 itself
PARITY_DISAGREE = "parity disagree"  # a failure's status: the cell ran, but its outputs differ from eager FP32


@dataclass(frozen=True)
class Axis:
    """A configuration axis the advice checks for values the run did not try."""

    name: str
    values: tuple[str, ...]
    of: Callable[[Cell], str]


AXES: tuple[Axis, ...] = (
    Axis("compile", COMPILE_MODES, lambda c: c.compile),
    Axis("precision", PRECISIONS, lambda c: c.precision),
    Axis("memory format", MEMORY_FORMATS, lambda c: c.memory_format),
    Axis("runtime", RUNTIMES, lambda c: c.runtime),
    Axis("batch", (BATCH_MAX,), lambda c: BATCH_MAX if c.searches_batch else "given"),
)


@dataclass(frozen=True)
class Gain:
    """Throughput over eager FP32 at the same mode, batch, image size and GPU count.

    ``basis`` is :data:`INTERLEAVED` (``value`` is the paired ratio's median, ``q1``/``q3`` its quartiles),
    :data:`NOT_INTERLEAVED` (a throughput quotient, no spread), :data:`BASELINE` (1), or, with ``value`` None,
    why there is no gain (``"eager fp32 at batch 16: oom"``)."""

    value: float | None
    q1: float | None = None
    q3: float | None = None
    basis: str = ""
    baseline_cell_id: str | None = None

    @property
    def paired(self) -> bool:
        """Whether the gain is a paired measurement against its baseline (the baseline itself counts)."""
        return self.value is not None and self.basis in (INTERLEAVED, BASELINE)


@dataclass(frozen=True)
class Candidate:
    """One configuration that ran ok, with what the advice quotes."""

    cell_id: str
    configuration: str  # Cell.configuration, e.g. "compiled/amp-bf16/channels_last"
    batch_size: int  # the batch the timed blocks ran at (a bsmax cell: the largest that fit)
    image_size: tuple[int, int] | None
    compiled: bool
    throughput_ips: float
    gain: Gain
    peak_memory_bytes: int | None = None
    compile_s: float | None = None  # compiled cells only
    break_even_iterations: float | None = None  # compiled cells only
    break_even_basis: str | None = None
    graph_breaks: int | None = None
    mfu: float | None = None  # achieved / datasheet peak, 0..1
    gpu_util_pct: float | None = None  # mean over the timed region, 0..100
    runtime: str = "eager"  # the deployment runtime (Cell.runtime)
    median_ms: float | None = None  # per iteration (= per request at batch 1)
    p99_ms: float | None = None

    @property
    def never_pays_off(self) -> bool:
        """A compiled cell not faster than its eager twin: compiling never earns its time back."""
        return (self.compiled and self.break_even_iterations is None
                and "never pays off" in (self.break_even_basis or ""))


@dataclass(frozen=True)
class FailedConfiguration:
    """A configuration that did not run ok, and the recorded reason (one line)."""

    cell_id: str
    configuration: str
    batch_size: int | str  # the cell's batch (``max`` for a batch search that found none)
    status: str
    reason: str


@dataclass
class Advice:
    """The advice for one (run, detector, mode, GPU count): candidates ranked by the module's rule."""

    run: str
    model: str
    mode: str
    gpus: int
    ranked: list[Candidate] = field(default_factory=list)  # best first; see the module docstring
    failures: list[FailedConfiguration] = field(default_factory=list)
    not_tried: list[str] = field(default_factory=list)  # axis values the group never ran: "compile: max-autotune"
    not_at_batch: list[str] = field(default_factory=list)  # configurations these results ran (same mode) with no
    # cell at the pick's batch and image size: they were not in the ranking
    notes: list[str] = field(default_factory=list)  # CUDA-graph fallbacks, recompilations, batch-search boundaries
    tie: bool = False  # the runner-up's paired range reaches the pick's: a tie within the noise

    @property
    def best(self) -> Candidate | None:
        return self.ranked[0] if self.ranked else None

    @property
    def runner_up(self) -> Candidate | None:
        return self.ranked[1] if len(self.ranked) > 1 else None

    @property
    def runner_up_comparable(self) -> bool:
        """Whether the runner-up is at the pick's batch and image size (so their gains share a baseline)."""
        best, runner = self.best, self.runner_up
        return (best is not None and runner is not None and best.batch_size == runner.batch_size
                and best.image_size == runner.image_size)


class RunLike(Protocol):
    """What :func:`advise_runs` needs of a run (e.g. ``detbench.reports.load.Run``)."""

    label: str
    results: list[CellResult]


def same_worker(a: CellResult, b: CellResult) -> bool:
    """Whether two cells were timed by one worker in interleaved rounds (only then is their ratio paired)."""
    ma, mb = a.measurement, b.measurement
    if ma is None or mb is None or not ma.blocks or not mb.blocks:
        return False
    return (ma.isolation != "cell" and ma.isolation == mb.isolation and ma.group == mb.group
            and ma.worker_attempt == mb.worker_attempt)


def baseline_cell(result: CellResult) -> Cell:
    """Eager FP32 at the batch ``result`` was measured at (for a ``bsmax`` cell: the largest that fit)."""
    return dataclasses.replace(baseline_of(result.cell), batch_size=_batch(result) or 1)


def gain_over_eager_fp32(result: CellResult, by_id: dict[str, CellResult]) -> Gain:
    """The gain of ``result`` over its baseline: the paired ratio when one worker timed both, else a throughput
    quotient marked not interleaved, else why there is none."""
    batch = _batch(result)
    base_id = baseline_cell(result).id
    if result.cell.id == base_id:
        return Gain(1.0, 1.0, 1.0, BASELINE, base_id)
    base = by_id.get(base_id)
    if base is None or base.status != "ok" or not base.throughput_ips:
        why = "not measured" if base is None else base.status
        return Gain(None, basis=f"eager fp32 at batch {batch}: {why}", baseline_cell_id=base_id)
    ratio = result.ratio
    if ratio is not None and ratio.baseline_cell_id == base_id and same_worker(result, base):
        return Gain(ratio.median, ratio.q1, ratio.q3, INTERLEAVED, base_id)
    assert result.throughput_ips is not None
    return Gain(result.throughput_ips / base.throughput_ips, basis=NOT_INTERLEAVED, baseline_cell_id=base_id)


def advise(results: Iterable[CellResult], run: str = "", axes: Sequence[Axis] = AXES) -> list[Advice]:
    """One :class:`Advice` per (detector, mode, GPU count) of ``results``, in model, mode, GPU-count order,
    ranked by the rule in the module docstring. A group where nothing ran ok gets advice with no pick that
    lists its failures."""
    # serving cells have their own advice: detbench.bench.core.serving.serving_advice
    results = [r for r in results if r.cell.scenario is None]
    by_id = {r.cell.id: r for r in results}
    groups: dict[tuple[str, str, int], list[CellResult]] = {}
    universe: dict[str, dict[str, Cell]] = {}  # mode -> configuration -> a cell that ran it, in first-seen order
    for result in results:
        groups.setdefault((result.cell.model, result.cell.mode, result.cell.gpus), []).append(result)
        universe.setdefault(result.cell.mode, {}).setdefault(result.cell.configuration, result.cell)
    advice = []
    for (model, mode, gpus), members in sorted(groups.items()):
        ranked = _ranked([_candidate(r, by_id) for r in members if _eligible(r)])
        failures = [FailedConfiguration(r.cell.id, r.cell.configuration, _batch(r) or r.cell.batch_size,
                                        PARITY_DISAGREE if r.status == "ok" else r.status,
                                        _one_line(r.reason or "no reason recorded"))
                    for r in members if r.status != "ok" or disagrees(r)]
        item = Advice(run, model, mode, gpus, ranked, failures, _not_tried(members, axes),
                      _not_at_batch(members, ranked[0], universe[mode]) if ranked else [], _notes(members))
        item.tie = _tie(item)
        advice.append(item)
    return advice


def disagrees(result: CellResult) -> bool:
    """Whether a deployed cell's outputs disagree with eager FP32 (such a cell is never recommended)."""
    parity = result.deploy.parity if result.deploy is not None else None
    return parity is not None and parity.verdict == "disagree"


def _eligible(result: CellResult) -> bool:
    return result.status == "ok" and bool(result.throughput_ips) and not disagrees(result)


@dataclass(frozen=True)
class LatencyAdvice:
    """Per (run, detector, GPU count): the batch-1 inference configuration with the lowest median latency among
    those whose p99 is within ``p99_budget_ms`` (``pick`` None: none is), and the others over the budget."""

    run: str
    model: str
    gpus: int
    p99_budget_ms: float
    pick: Candidate | None
    within: list[Candidate] = field(default_factory=list)  # by median latency, the pick first
    over: list[Candidate] = field(default_factory=list)  # p99 above the budget, by p99


def within_latency(results: Iterable[CellResult], p99_budget_ms: float, run: str = "") -> list[LatencyAdvice]:
    """The fastest configuration with p99 <= ``p99_budget_ms`` at batch 1 (single stream), per detector and GPU
    count, over inference cells that ran ok (and agree with eager FP32). Raises ValueError for a budget <= 0."""
    if not p99_budget_ms > 0:
        raise ValueError(f"the p99 budget must be a positive number of milliseconds, got {p99_budget_ms!r}")
    results = list(results)
    by_id = {r.cell.id: r for r in results}
    groups: dict[tuple[str, int], list[Candidate]] = {}
    for r in results:
        if r.cell.mode == "infer" and _batch(r) == 1 and _eligible(r) and r.latency is not None and \
                r.cell.scenario is None:
            groups.setdefault((r.cell.model, r.cell.gpus), []).append(_candidate(r, by_id))
    out = []
    for (model, gpus), candidates in sorted(groups.items()):
        within = sorted((c for c in candidates if c.p99_ms is not None and c.p99_ms <= p99_budget_ms),
                        key=lambda c: (c.median_ms or 0.0, c.p99_ms or 0.0))
        over = sorted((c for c in candidates if c not in within), key=lambda c: c.p99_ms or 0.0)
        out.append(LatencyAdvice(run, model, gpus, p99_budget_ms, within[0] if within else None, within, over))
    return out


def advise_runs(runs: Iterable[RunLike]) -> list[Advice]:
    """Advice for every run, each labelled with the run's label."""
    return [a for run in runs for a in advise(run.results, run.label)]


# --- the rule's pieces -------------------------------------------------------------------------------------


def _batch(result: CellResult) -> int | None:
    return result.measured_batch_size


def _candidate(result: CellResult, by_id: dict[str, CellResult]) -> Candidate:
    assert result.throughput_ips is not None
    telemetry = result.telemetry_summary
    compiled = result.cell.compiled
    return Candidate(
        cell_id=result.cell.id, configuration=result.cell.configuration, batch_size=_batch(result) or 0,
        image_size=result.cell.image_size, compiled=compiled, throughput_ips=float(result.throughput_ips),
        gain=gain_over_eager_fp32(result, by_id), peak_memory_bytes=result.peak_memory_bytes,
        compile_s=result.compile_s if compiled else None,
        break_even_iterations=result.break_even_iterations if compiled else None,
        break_even_basis=result.break_even_basis if compiled else None,
        graph_breaks=result.graph_breaks, mfu=result.mfu,
        gpu_util_pct=telemetry.gpu_util_pct_mean if telemetry is not None else None, runtime=result.cell.runtime,
        median_ms=result.latency.median_ms if result.latency else None,
        p99_ms=result.latency.p99_ms if result.latency else None)


def _ranked(candidates: list[Candidate]) -> list[Candidate]:
    """Steps 2-4 of the rule: the fastest candidate's batch and image size, ranked there by gain, then the rest."""
    if not candidates:
        return []
    fastest = max(candidates, key=lambda c: c.throughput_ips)
    setting = (fastest.batch_size, fastest.image_size)
    here = [c for c in candidates if (c.batch_size, c.image_size) == setting]
    elsewhere = [c for c in candidates if (c.batch_size, c.image_size) != setting]
    # within one batch and image size every candidate has a gain (one baseline) or none has (no ok baseline)
    here.sort(key=lambda c: (c.gain.value if c.gain.value is not None else 0.0, c.throughput_ips), reverse=True)
    elsewhere.sort(key=lambda c: c.throughput_ips, reverse=True)
    return here + elsewhere


def _tie(item: Advice) -> bool:
    """Step 5: paired ranges against the same baseline that overlap."""
    best, runner = item.best, item.runner_up
    if best is None or runner is None or not item.runner_up_comparable:
        return False
    a, b = best.gain, runner.gain
    if not (a.paired and b.paired) or a.q1 is None or b.q3 is None:
        return False
    return b.q3 >= a.q1


def _not_tried(results: Sequence[CellResult], axes: Sequence[Axis]) -> list[str]:
    out = []
    for axis in axes:
        seen = {axis.of(r.cell) for r in results}
        missing = [v for v in axis.values if v not in seen]
        if missing:
            out.append(f"{axis.name}: {', '.join(missing)}")
    return out


def _not_at_batch(members: Sequence[CellResult], best: Candidate, universe: dict[str, Cell]) -> list[str]:
    """Configurations of this mode that these results ran somewhere, with no cell of this group at the pick's
    batch and image size, so they were not in the ranking. Failed cells there are failures, and a configuration
    whose compile mode, precision or memory format the group never ran is already in ``not_tried``."""
    here = {r.cell.configuration for r in members
            if _batch(r) == best.batch_size and r.cell.image_size == best.image_size}
    ran = {name: {getattr(r.cell, name) for r in members} for name in ("compile", "precision", "memory_format")}
    return [c for c, cell in universe.items()
            if c not in here and all(getattr(cell, name) in values for name, values in ran.items())]


def _notes(results: Sequence[CellResult]) -> list[str]:
    """What a user should know besides the ranking: CUDA graphs that fell back, recompilations in steady state,
    and where each batch search found the OOM boundary."""
    notes = []
    for r in results:
        where = f"{r.cell.configuration} bs{r.cell.batch_size}"
        details = r.compile_details
        if details is not None and details.cudagraph_skips:
            notes.append(f"{where}: CUDA graphs skipped for {details.cudagraph_skips} graph(s)"
                         + (f" ({details.cudagraph_skip_reasons})" if details.cudagraph_skip_reasons else ""))
        if details is not None and details.recompilations:
            notes.append(f"{where}: {details.recompilations} recompilation(s) after the first call")
        search = r.batch_search
        if search is not None:
            oom = f", {search.smallest_oom} runs out of memory" if search.smallest_oom else ""
            notes.append(f"{where}: {search.largest_fit or 'no batch'} fits{oom} ({len(search.probes)} probes; "
                         f"{search.stop_reason})")
    return [_one_line(n) for n in notes]


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


# --- the advice in words: the terminal (detbench.bench.plugin.display) and the reports say the same ---------------


def gain_text(gain: Gain) -> str:
    """``1.80× (1.75–1.86)`` paired, ``1.00× (baseline)``, ``1.50× (not interleaved)``, or why there is none."""
    if gain.value is None:
        return gain.basis
    if gain.basis == INTERLEAVED and gain.q1 is not None and gain.q3 is not None:
        return f"{gain.value:.2f}× ({gain.q1:.2f}–{gain.q3:.2f})"
    if gain.basis == INTERLEAVED:
        return f"{gain.value:.2f}×"
    return f"{gain.value:.2f}× ({gain.basis})"


def break_even_text(best: Candidate) -> str:
    """Iterations after which compiling pays, ``never (not faster than eager)``, or why it is unknown."""
    if not best.compiled:
        return ""
    if best.break_even_iterations is not None:
        return f"{best.break_even_iterations:,.0f} it"
    return "never (not faster than eager)" if best.never_pays_off else (best.break_even_basis or "")


def runner_up_text(item: Advice) -> str:
    """The runner-up with its gain when it shares the pick's baseline (and whether that is a tie), else with its
    throughput."""
    runner = item.runner_up
    if runner is None:
        return ""
    name = f"{runner.configuration} bs{runner.batch_size}"
    if not item.runner_up_comparable or runner.gain.value is None:
        return f"{name}: {runner.throughput_ips:.1f} images/s"
    return f"{name}: {gain_text(runner.gain)}" + ("; a tie within the noise" if item.tie else "")
