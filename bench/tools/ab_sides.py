"""``detbench-ab``'s default mode: each environment a set of long-lived sides, blocks alternating between them.

For every worker pair (one baseline side, one candidate side: fresh processes, detbench.bench.runtime.side, each with an
environment padding of random length) the cells are set up once on both sides, with a short fixed warm-up, and
every side runs each cell at the post-processing threshold the first baseline side calibrated. Then, round
after round, every live pair times every undecided cell once, the visits in a random order and which side goes
first drawn for each: one block on one side, then one on the other, the device held by one side at a time, so
the host's drift is common to both blocks and cancels in their ratio. The worker process is the unit: per cell,
the median of each pair's round log-ratios, then the mean and a t interval over the pairs, the cells of the run
judged together (:mod:`detbench.bench.core.stats.judge`). With a budget (``--budget-s``) a first look at half the timed
part stops the cells decided there and hands their time to the rest.

A side that dies, hangs (no answer within ``--side-timeout``) or disagrees on the cells is recorded with its
reason; its pair stops and the rest go on. A signal (SIGTERM, Ctrl-C) asks the sides for what they measured,
within :data:`CUT_WAIT_S`, before they are ended. Nothing here waits forever.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detbench.bench.core.options import RunOptions
from detbench.bench.core.record import RunRecord
from detbench.bench.core.schema import Cell, CellResult
from detbench.bench.core.stats.judge import (
    ALPHA,
    IMPROVEMENT,
    REGRESSION,
    UNCHANGED,
    CellVerdict,
    Evidence,
    decide,
    look_alpha,
    pair_evidence,
)
from detbench.bench.runtime.protocol import PROTOCOL_VERSION
from detbench.bench.runtime.side_client import (
    MAX_PAD,
    SideFailed,
    SideProcess,
    SideSpec,
)
from detbench.envcheck.redact import redact_tree

CUT_WAIT_S = 20.0  # after a signal, the sides have this long in all to give their results
RESULT_RESERVE_S = 5.0  # of a budget, kept for asking the sides for their results and ending them ...
RESERVE_PER_SIDE_S = 1.5  # ... and this much more a side (16 CPU sides under load: ~25 s)
MIN_PAIRS, GPU_PAIRS = 2, 8
GPU_BYTES_PER_SIDE = 4 << 30  # free device memory a side is assumed to need (a detector at batch 8 and its copy)
CPU_PAIRS_PER_CORE = 4  # on the CPU every pair shares the cores, one torch thread a side (docs/ab.md)
# What one block contributes: a statistic of its iterations' times. Host stalls lengthen some iterations of a block
# (a minority, unevenly between the two sides of a round); a real change lengthens every iteration. On the first
# H200 gate run (docs/ab.md) the lower quartile gave 95 % intervals 16 % narrower than the median, the minimum 34 %
# narrower, with every estimate of a planted change inside its interval; the median counts slow iterations in.
BLOCK_STATS = {
    "p25": lambda times: float(np.percentile(times, 25)),
    "median": lambda times: float(np.median(times)),
    "min": lambda times: float(np.min(times)),
}


@dataclass
class CellRecord:
    """One cell across the pairs: per pair and round, the baseline's and candidate's block statistics."""

    cell: Cell
    iterations: int = 0
    blocks: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # pair -> rounds [{round, base, cand}]
    failures: list[str] = field(default_factory=list)
    baseline_ok: bool = False
    candidate_ok: bool = False
    lost: dict[str, int] = field(default_factory=lambda: {"baseline": 0, "candidate": 0})  # sides lost mid-run
    stopped: CellVerdict | None = None  # decided at the first look: timed no further, this verdict kept
    score_thresh: float | None = None  # the post-processing threshold every side ran (None: the cell has none)

    def ratios(self) -> list[list[float]]:
        """Per pair, candidate/baseline throughput of every round (baseline block time / candidate block time)."""
        return [[r["base_ms"] / r["cand_ms"] for r in rounds if r["cand_ms"] > 0] for rounds in self.blocks.values()]


@dataclass(frozen=True)
class GatePlan:
    """How a sides-mode run spends its time (detbench-ab's options, resolved)."""

    pairs: int
    block_s: float
    floor: float
    rounds: int | None = None  # rounds per pair at most (None: as many as the budget allows)
    budget_s: float | None = None  # wall seconds for the whole run; a first look at half the timed part
    warmup_iterations: int = 3  # fixed, untimed, right after each cell's set-up
    probe_iterations: int = 3  # timed alone on one pair to size the blocks
    block_stat: str = "p25"
    seed: int = 0
    pin: list[int] | None = None
    side_timeout_s: float = 600.0

    @property
    def looks(self) -> int:
        return 2 if self.budget_s is not None else 1


@dataclass
class GateRun:
    """Everything one sides-mode run measured and decided."""

    cells: list[CellRecord]
    sides: list[dict[str, Any]]
    verdicts: dict[str, CellVerdict]
    results: dict[str, list[CellResult]]  # side name -> its cells' results
    wall_s: float
    timed_s: float
    setup_s: float
    plan: GatePlan
    rounds: int  # rounds begun (a round: every live pair times every undecided cell once)
    notes: list[str] = field(default_factory=list)
    cut: bool = False  # ended by a signal before its last round

    @property
    def duty_cycle(self) -> float:
        return self.timed_s / self.wall_s if self.wall_s > 0 else 0.0


def choose_cpus(spec: str) -> list[int] | None:
    """``auto``: two CPUs of this process's set (the third and fourth: CPU 0 takes most interrupts); ``none``;
    or a comma-separated list. Raises ValueError naming the valid forms."""
    if spec == "none":
        return None
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if spec == "auto":
        return allowed[2:4] if len(allowed) >= 4 else None
    try:
        cpus = sorted({int(c) for c in spec.split(",") if c.strip()})
    except ValueError:
        cpus = []
    if not cpus or (allowed and not set(cpus) <= set(allowed)):
        raise ValueError(f"bad --pin-cpus {spec!r}; valid: auto, none, or CPUs of {allowed or 'this machine'} "
                         "comma-separated, e.g. 2,3")
    return cpus


def default_pairs(hello: dict[str, Any]) -> int:
    """Worker pairs for a side like this one: on a GPU 8, fewer where its free memory gives a side less than
    :data:`GPU_BYTES_PER_SIDE`; on the CPU as many as fit its cores (:data:`CPU_PAIRS_PER_CORE` a core)."""
    free = hello.get("free_bytes")
    if free:
        return max(MIN_PAIRS, min(GPU_PAIRS, int(free) // (2 * GPU_BYTES_PER_SIDE)))
    cpus = int(hello.get("cpus") or 1)
    return max(MIN_PAIRS, min(GPU_PAIRS, CPU_PAIRS_PER_CORE * cpus))


def run_gate(baseline: SideSpec, candidate: SideSpec, plan: Callable[[dict[str, Any] | None], Sequence[Cell]],
             options: RunOptions, gate: GatePlan, *, out: Path, progress: Any = print, on_round: Any = None,
             on_cut: Any = None) -> GateRun:
    """Run the sides, alternate the blocks in a random order, judge every cell (see the module docstring).

    ``gate.pairs`` 0: sized from what the first baseline side has (:func:`default_pairs`). ``plan(environment)``
    gives the cells once the sides are up, from the first live baseline side's environment fingerprint (its GPUs
    decide what can run: the coordinator may be a CPU-only CI runner driving containers). ``on_round(run)`` gets
    the run so far after every round; ``on_cut(run)`` the run a signal cut, with the results the sides gave
    within :data:`CUT_WAIT_S` (the caller writes both: a cut run keeps its rounds and its sides' run files)."""
    began = time.perf_counter()
    rng = np.random.default_rng(gate.seed)
    cache = Path(tempfile.mkdtemp(prefix=".calibration-", dir=out))  # the leader's calibrations, for the others
    sides = [SideProcess(baseline, 0, out, int(rng.integers(0, MAX_PAD)), cache)]
    results: dict[str, list[CellResult]] = {}
    records: dict[str, CellRecord] = {}
    state: dict[str, Any] = {"timed": 0.0, "setup": 0.0, "rounds": 0}
    notes: list[str] = []

    def snapshot(cut: bool = False) -> GateRun:
        return _gate_run(records, sides, results, gate, began, state, notes, cut)

    stack = contextlib.ExitStack()

    def set_up(group: list[SideProcess], cells: list[Cell]) -> None:
        for side in group:
            if side.alive:
                side.send({"cmd": "setup", "cells": [c.to_dict() for c in cells], "options": options.to_dict(),
                           "warmup_iterations": gate.warmup_iterations})
        for side in group:
            _collect_setup(side, records, results, gate.side_timeout_s)

    try:
        # The leader (the first baseline side) starts alone and sets the cells up while the others start: it
        # calibrates post-processing into the run's calibration cache, and the sides of the same software read
        # it there instead of calibrating again (the cache's keys hold torch's and torchvision's versions: a side
        # of other software calibrates itself); every side then runs the leader's thresholds (_share_thresholds).
        leader = sides[0]
        leader.start()
        _expect_hello(leader, gate.side_timeout_s)
        if gate.pairs == 0:  # sized from the leader's hello
            gate = dataclasses.replace(gate, pairs=default_pairs(leader.hello))
            progress(f"{gate.pairs} worker pairs (sized from the first side: {_capacity(leader.hello)})")
        setup_began = time.perf_counter()
        cells: list[Cell] = []
        if leader.alive:
            cells = list(plan(leader.hello.get("environment")))
            records.update({c.id: CellRecord(c) for c in cells})
            leader.send({"cmd": "setup", "cells": [c.to_dict() for c in cells], "options": options.to_dict(),
                         "warmup_iterations": gate.warmup_iterations})
        sides += [SideProcess(candidate, 0, out, int(rng.integers(0, MAX_PAD)), cache)] + [
            SideProcess(spec, p, out, int(rng.integers(0, MAX_PAD)), cache) for p in range(1, gate.pairs)
            for spec in (baseline, candidate)]
        for side in sides[1:]:
            side.start()
        for side in sides[1:]:
            _expect_hello(side, gate.side_timeout_s)
        stack.enter_context(_signals_ask_first())
        if not records:  # the leader died before it was given the cells: the others set up at once, uncached
            reference = next((s.hello.get("environment") for s in sides if s.alive and s.spec.label == "baseline"),
                             None)
            cells = list(plan(reference))
            records.update({c.id: CellRecord(c) for c in cells})
            set_up(sides[1:], cells)
        else:
            _collect_setup(leader, records, results, gate.side_timeout_s)
            set_up(sides[1:], cells)
        _share_thresholds(sides, records, gate.side_timeout_s)
        if gate.pin is not None:
            for side in sides:
                _ask(side, {"cmd": "pin", "cpus": gate.pin}, gate.side_timeout_s, {"ok"})
        for record in records.values():  # alone on the device: one pair sizes the blocks, the same on every side
            _size_blocks(record, sides, gate, options)
        state["setup"] = time.perf_counter() - began  # every fixed cost: the sides' start, set-up, block sizing
        cached = sum(1 for s in sides if s.calibration and set(s.calibration.values()) == {"cached"})
        calibrated = sum(1 for s in sides if "calibrated" in s.calibration.values())
        progress(f"set up {len(cells)} cell(s) on {sum(s.alive for s in sides)}/{len(sides)} side(s) in "
                 f"{time.perf_counter() - setup_began:.0f} s (a fixed warm-up of {gate.warmup_iterations} "
                 f"iteration(s) each{_calibration_line(calibrated, cached)}), {state['setup']:.0f} s since the start")
        _timed_rounds(records, sides, gate, rng, began, state, progress,
                      (lambda: on_round(snapshot())) if on_round is not None else None)
        _collect_results(sides, results, time.perf_counter() + gate.side_timeout_s)
    except KeyboardInterrupt:  # a signal (SIGTERM, Ctrl-C): what the sides measured is asked for, then they end
        stack.close()  # a second signal now ends every side at once (detbench.envcheck.isolate's guard)
        if records:
            _collect_cut(sides, records, results)
            notes.append("the run was cut by a signal: judged on the rounds it finished")
            if on_cut is not None:
                on_cut(snapshot(cut=True))
        for side in sides:
            side.failure = side.failure or f"{side.name} was ended: the run was interrupted"
        raise
    except BaseException:  # broken: no goodbye, every side is killed at once
        for side in sides:
            side.failure = side.failure or f"{side.name} was ended: the run was interrupted"
        raise
    finally:
        stack.close()
        for side in sides:  # all asked at once, then each waited for: 16 sides end in the time of one
            side.quit()
        ends = time.perf_counter() + 30.0
        for side in sides:
            side.stop(ends - time.perf_counter())
        shutil.rmtree(cache, ignore_errors=True)
    return snapshot()


@contextlib.contextmanager
def _signals_ask_first() -> Iterator[None]:
    """While the sides run: SIGTERM, SIGINT and SIGHUP raise KeyboardInterrupt here instead of killing the sides
    at once (detbench.envcheck.isolate's guard, whose handlers come back after), so the sides can be asked for what they
    measured first (:func:`_collect_cut`, bounded by :data:`CUT_WAIT_S`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask_first(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"stopped by signal {signum} ({signal.Signals(signum).name})")

    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    for signum, handler in saved.items():
        if handler is not None and handler != signal.SIG_IGN:
            signal.signal(signum, ask_first)
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if signal.getsignal(signum) is ask_first and handler is not None:
                signal.signal(signum, handler)


def _calibration_line(calibrated: int, cached: int) -> str:
    if not calibrated and not cached:
        return ""  # nothing to calibrate (classifiers)
    return f"; post-processing calibrated on {calibrated} side(s), read from the leader's calibration on {cached}"


def _capacity(hello: dict[str, Any]) -> str:
    if hello.get("free_bytes"):
        return f"{int(hello['free_bytes']) / 2**30:.0f} GiB free on its GPU"
    return f"{hello.get('cpus') or '?'} CPU(s), no GPU"


def block_timeout_s(block_s: float, side_timeout_s: float) -> float:
    """How long a side may take to answer one timed block: a block answers fast or it hangs, so 40 blocks' time
    (at least 60 s), and never more than ``--side-timeout``, which bounds every wait for a side."""
    return min(side_timeout_s, max(40 * block_s, 60.0))


def _timed_rounds(records: dict[str, CellRecord], sides: list[SideProcess], gate: GatePlan,
                  rng: np.random.Generator, began: float, state: dict[str, Any], progress: Any,
                  after_round: Callable[[], None] | None) -> None:
    """Rounds until the budget (or the round cap) is spent. Each round visits every live pair and undecided cell
    in a random order, and which side of a pair goes first is drawn for each visit. With a budget, the first
    look comes at half the timed part: cells decided there stop and hand their time to the rest."""
    statistic = BLOCK_STATS[gate.block_stat]
    block_timeout = block_timeout_s(gate.block_s, gate.side_timeout_s)
    timed_began = time.perf_counter()
    reserve = RESULT_RESERVE_S + RESERVE_PER_SIDE_S * len(sides)
    deadline = None if gate.budget_s is None else began + gate.budget_s - reserve
    look_at = None if deadline is None else timed_began + (deadline - timed_began) / 2
    alpha = look_alpha(ALPHA, gate.looks, 1)
    while gate.rounds is None or state["rounds"] < gate.rounds:
        active = [cid for cid, r in records.items() if r.iterations and r.stopped is None]
        live = [p for p in range(gate.pairs) if sides[2 * p].alive and sides[2 * p + 1].alive]
        if not active or not live or (deadline is not None and time.perf_counter() >= deadline):
            break
        state["rounds"] += 1
        round_index = state["rounds"]
        visits = [(p, cid) for p in live for cid in active]
        order = rng.permutation(len(visits))
        for pair, cid in (visits[i] for i in order):
            if deadline is not None and time.perf_counter() >= deadline:
                break
            state["timed"] += _paired_block(records[cid], sides[2 * pair], sides[2 * pair + 1], round_index,
                                            bool(rng.integers(2)), block_timeout, statistic)
        progress(f"round {round_index}: {_round_line(records, round_index)}")
        if look_at is not None and time.perf_counter() >= look_at:
            look_at = None
            verdicts = judge_cells({cid: records[cid] for cid in active}, gate.floor, alpha)
            decided = [cid for cid, v in verdicts.items() if v.verdict in (REGRESSION, IMPROVEMENT, UNCHANGED)]
            for cid in decided:
                records[cid].stopped = dataclasses.replace(
                    verdicts[cid], reason=f"decided at the first look (round {round_index}): {verdicts[cid].reason}")
            progress(f"first look after round {round_index} (alpha {alpha:g}): {len(decided)} cell(s) decided and "
                     f"stopped{' (' + ', '.join(decided) + ')' if decided else ''}; {len(active) - len(decided)} "
                     "go on")
        if after_round is not None:
            after_round()


def _gate_run(records: dict[str, CellRecord], sides: list[SideProcess], results: dict[str, list[CellResult]],
              gate: GatePlan, began: float, state: dict[str, Any], notes: list[str], cut: bool) -> GateRun:
    """The run as it stands: the verdict of every cell the baseline set up, every side's failure noted."""
    notes = [*notes, *(s.failure for s in sides if s.failure)]
    alpha = look_alpha(ALPHA, gate.looks)
    final = judge_cells({cid: r for cid, r in records.items() if r.stopped is None}, gate.floor, alpha)
    verdicts = {cid: r.stopped if r.stopped is not None else final[cid] for cid, r in records.items()
                if r.baseline_ok}
    return GateRun(list(records.values()), [_side_facts(s) for s in sides], verdicts, results,
                   time.perf_counter() - began, state["timed"], state["setup"], gate, state["rounds"], notes, cut)


def judge_cells(records: dict[str, CellRecord], floor: float, alpha: float = ALPHA) -> dict[str, CellVerdict]:
    """The verdicts of the cells the baseline set up, judged together (detbench.bench.core.stats.judge); a cell the
    candidate never measured, or whose candidate side died or hung where the baseline's did not (before or after rounds
    had finished), is a regression."""
    evidence: dict[str, Evidence] = {}
    lost: dict[str, str] = {}
    died: dict[str, str] = {}  # the candidate's side failed mid-run in this cell, the baseline's did not as often
    for cid, record in records.items():
        if not record.baseline_ok:
            continue
        ratios = [r for r in record.ratios() if r]
        candidate_lost = record.lost["candidate"] > record.lost["baseline"]
        if not ratios and (not record.candidate_ok or candidate_lost):
            lost[cid] = "; ".join(record.failures) or "the candidate did not set it up"
        elif candidate_lost:
            died[cid] = (f"its side lost {record.lost['candidate']} block(s) where the baseline's lost "
                         f"{record.lost['baseline']}: {'; '.join(record.failures)}")
        evidence[cid] = pair_evidence(ratios)
    verdicts = decide({cid: e for cid, e in evidence.items() if cid not in lost}, floor, alpha=alpha)
    out = {}
    for cid in evidence:
        if cid in lost:
            out[cid] = CellVerdict(REGRESSION, None, None, None, None, None, None, None, floor, alpha,
                                   len(verdicts), 0, "worker pair", 0, False,
                                   f"measured in the baseline, not in the candidate ({lost[cid]})")
            continue
        verdict = verdicts[cid]
        failures = records[cid].failures
        if cid in died:  # a candidate that dies or hangs mid-run fails the gate, whatever its finished rounds say
            out[cid] = dataclasses.replace(verdict, verdict=REGRESSION,
                                           reason=f"the candidate failed mid-run ({died[cid]}); {verdict.reason}")
            continue
        out[cid] = dataclasses.replace(verdict, reason=verdict.reason + "; " + "; ".join(failures)) if failures \
            else verdict
    return out


def _share_thresholds(sides: list[SideProcess], records: dict[str, CellRecord], timeout_s: float) -> None:
    """Every side runs each cell at the post-processing threshold the first baseline side calibrated, so the
    sides do the same work whatever their software would have calibrated."""
    for cid, record in records.items():
        source = next((s for s in sides if s.alive and s.spec.label == "baseline" and cid in s.calibrated), None)
        if source is None:
            continue
        postprocess = source.calibrated[cid]
        record.score_thresh = postprocess.get("score_thresh")
        for side in sides:
            if side is source or cid not in side.hello.get("ready", ()):
                continue
            event = _ask(side, {"cmd": "thresholds", "cell": cid, "postprocess": postprocess}, timeout_s, {"ok"})
            if event is None or event.get("event") != "ok":
                record.failures.append(f"{side.name}: could not take the shared threshold "
                                       f"({(event or {}).get('message', side.failure)})")


def _size_blocks(record: CellRecord, sides: list[SideProcess], gate: GatePlan, options: RunOptions) -> None:
    """Time a few iterations of the cell alone on the first live pair (both sides); the blocks' iteration count
    comes from their median, the same on every side."""
    medians = []
    for side in [s for s in sides if s.alive and record.cell.id in s.hello.get("ready", ())][:2]:
        event = _ask(side, {"cmd": "probe", "cell": record.cell.id, "iterations": gate.probe_iterations},
                     gate.side_timeout_s, {"ok"})
        if event is None:
            record.lost[side.spec.label] += 1
            record.failures.append(f"{side.failure}")
        elif event.get("event") == "ok" and event.get("median_ms"):
            medians.append(float(event["median_ms"]))
        else:
            record.failures.append(f"{side.name} probe: {event.get('message', event.get('event'))}")
    minimum = options.rounds_policy("cuda").min_block_iterations
    if medians:
        record.iterations = max(minimum, round(gate.block_s * 1000.0 / statistics.median(medians)))


def _collect_cut(sides: list[SideProcess], records: dict[str, CellRecord],
                 results: dict[str, list[CellResult]]) -> None:
    """After a signal: each live side finishes the answer it owes, then gives its cells' results; all of it
    within :data:`CUT_WAIT_S`, after which the sides are ended with what came."""
    deadline = time.perf_counter() + CUT_WAIT_S
    for side in sides:
        if side.alive and side.in_flight is not None:  # a block (or another answer) in flight when the signal came
            try:
                side.next_event(max(0.1, deadline - time.perf_counter()), "finishing its answer")
                side.in_flight = None
            except (SideFailed, KeyboardInterrupt):
                continue
    _collect_results(sides, results, deadline)


def _collect_results(sides: list[SideProcess], results: dict[str, list[CellResult]], deadline: float) -> None:
    """Every live side's cells' results, asked of all sides at once, answered by ``deadline``."""
    asked = []
    for side in sides:
        if side.alive and side.in_flight is None and side.hello.get("ready"):
            try:
                for cell_id in side.hello["ready"]:
                    side.send({"cmd": "result", "cell": cell_id})
                asked.append(side)
            except SideFailed:
                continue
    for side in asked:
        try:
            for _ in side.hello["ready"]:
                event = side.next_event(max(0.1, deadline - time.perf_counter()), "giving its results")
                if event.get("event") == "result":
                    results.setdefault(side.name, []).append(CellResult.from_dict(event["result"], source=side.name))
        except (SideFailed, KeyboardInterrupt):
            continue


def _expect_hello(side: SideProcess, timeout_s: float) -> None:
    try:
        event = side.next_event(timeout_s, "starting")
        if event.get("event") != "hello":
            raise side._fail(f"broke the protocol: {event.get('event')!r} before hello")
        if event.get("protocol") != PROTOCOL_VERSION:
            raise side._fail(f"speaks protocol {event.get('protocol')!r}, this detbench-ab {PROTOCOL_VERSION}: "
                             "install the same detbench on both sides")
        side.hello = event
    except SideFailed:
        side.supervisor.kill()


def _collect_setup(side: SideProcess, records: dict[str, CellRecord], results: dict[str, list[CellResult]],
                   timeout_s: float) -> None:
    if not side.alive:
        return
    ready: set[str] = set()
    try:
        while True:
            event = side.next_event(timeout_s, "setting up")
            kind = event.get("event")
            if kind == "ok":
                break
            if kind == "ready":
                ready.add(str(event.get("cell")))
                if event.get("postprocess"):
                    side.calibrated[str(event.get("cell"))] = dict(event["postprocess"])
                if event.get("calibration"):
                    side.calibration[str(event.get("cell"))] = str(event["calibration"])
            elif kind == "result":
                failed = CellResult.from_dict(event["result"], source=side.name)
                results.setdefault(side.name, []).append(failed)
                if failed.cell.id in records:
                    records[failed.cell.id].failures.append(f"{side.name} set-up: {failed.status}: {failed.reason}")
            elif kind == "error":
                raise side._fail(f"refused the set-up: {event.get('message')}")
    except SideFailed:
        return
    unknown = ready - set(records)
    if unknown:
        side._fail(f"disagrees on the cells: set up {sorted(unknown)} that were not asked for")
        return
    for cell_id in ready:
        record = records[cell_id]
        if side.spec.label == "baseline":
            record.baseline_ok = True
        else:
            record.candidate_ok = True
    side.hello["ready"] = sorted(ready)


def _ask(side: SideProcess, command: dict[str, Any], timeout_s: float, expect: set[str]) -> dict[str, Any] | None:
    """One command, one answer; None when the side failed (recorded)."""
    if not side.alive:
        return None
    try:
        side.in_flight = str(command["cmd"])
        side.send(command)
        event = side.next_event(timeout_s, f"{command['cmd']} {command.get('cell', '')}".strip())
        side.in_flight = None
    except SideFailed:
        return None
    if event.get("event") not in expect:
        return event  # a failure result or an error: the caller decides
    return event


def _block(side: SideProcess, record: CellRecord, round_index: int, iterations: int,
           timeout_s: float) -> dict[str, Any] | None:
    """One block on one side: its record, or None (the cell failed there, or the side did; recorded)."""
    if not side.alive or record.cell.id not in side.hello.get("ready", ()):
        return None
    event = _ask(side, {"cmd": "block", "cell": record.cell.id, "round": round_index, "iterations": iterations},
                 timeout_s, {"block"})
    if event is None:  # the side died or hung in this cell's block: the cell's record says so
        record.lost[side.spec.label] += 1
        record.failures.append(f"{side.failure}")
        return None
    if event.get("event") == "block":
        return {**event["block"], "times_ms": event.get("times_ms") or []}
    if event.get("event") == "result":
        failed = CellResult.from_dict(event["result"], source=side.name)
        record.failures.append(f"{side.name} round {round_index}: {failed.status}: {failed.reason}")
    else:
        record.failures.append(f"{side.name} round {round_index}: {event.get('message', event)}")
    side.hello["ready"] = [c for c in side.hello.get("ready", ()) if c != record.cell.id]
    return None


def _paired_block(record: CellRecord, base: SideProcess, cand: SideProcess, round_index: int, cand_first: bool,
                  timeout_s: float, statistic: Any) -> float:
    """The cell's blocks of one round on both sides of a pair, back to back; their ratio is the round's."""
    if not record.iterations:
        return 0.0
    order = (cand, base) if cand_first else (base, cand)
    got = {side.spec.label: _block(side, record, round_index, record.iterations, timeout_s) for side in order}
    b, c = got.get("baseline"), got.get("candidate")
    timed = sum(x["wall_s"] for x in (b, c) if x is not None)
    if b is not None and c is not None:
        record.blocks.setdefault(base.pair, []).append(
            {"round": round_index, "base_ms": statistic(b["times_ms"] or [b["median_ms"]]),
             "cand_ms": statistic(c["times_ms"] or [c["median_ms"]]), "base_median_ms": b["median_ms"],
             "cand_median_ms": c["median_ms"],
             "base_canary_ms": b.get("host_canary_ms"), "cand_canary_ms": c.get("host_canary_ms"),
             "first": cand.spec.label if cand_first else base.spec.label})
    return timed


def _side_facts(side: SideProcess) -> dict[str, Any]:
    env = side.hello.get("environment") or {}
    return {"name": side.name, "label": side.spec.label, "pair": side.pair, "command": side.spec.describe(),
            "pid": side.hello.get("pid"), "failure": side.failure, "log": str(side.log), "env_pad": side.pad,
            "calibration": dict(side.calibration),
            "environment": redact_tree({k: env.get(k) for k in ("torch", "torchvision", "cuda_runtime", "cudnn", "gpu",
                                                                 "driver", "image", "python")})}


def _round_line(records: dict[str, CellRecord], round_index: int) -> str:
    parts = []
    for record in records.values():
        latest = [r for rounds in record.blocks.values() for r in rounds if r["round"] == round_index]
        if latest:
            ratio = statistics.median(r["base_ms"] / r["cand_ms"] for r in latest)
            parts.append(f"{record.cell.model[:12]}/{record.cell.precision} {ratio:.3f}")
    return ", ".join(parts) or "no paired block"


def write_side_runs(run: GateRun, out: Path, options: RunOptions, run_id: str) -> list[Path]:
    """Each side's cell results as an ordinary run file (detbench-report reads them), one per side process."""
    written = []
    # a side's own fingerprint, redacted here too: an older image's side publishes its image as it was named
    env_by_side = {s["name"]: s.get("environment") for s in run.sides}
    for name, results in run.results.items():
        record = RunRecord(results, options.to_dict(), redact_tree(env_by_side.get(name)), f"{run_id}-{name}",
                           "detbench-ab", {"ab_side": name, "cut": run.cut})
        written.append(record.write(out / f"{name}.json"))
    return written
