"""``detbench-ab``'s default mode: each environment a set of long-lived sides, blocks alternating between them.

For every worker pair (one baseline side, one candidate side: fresh processes, bench.runtime.side) the cells are
set up once on both sides; then, round after round, each cell runs one short block on one side and then on the
other (which side goes first alternates), the GPU held by one side at a time, so the host's drift is common to
both blocks of a round and cancels in their ratio. Each round of pair p gives one candidate/baseline throughput
ratio; the rounds of several fresh pairs are judged together by :func:`bench.core.significance.judge_nested`,
which estimates the per-process offset between pairs rather than assuming it away (docs/ab.md: the noise
study). All sides are pinned to the same CPUs unless told otherwise: fresh processes on different cores of the
lent VMs sat apart by several %, on the same cores not measurably (docs/ab.md).

A side that dies, hangs (no answer within ``--side-timeout``) or disagrees on the cells is recorded with its
reason; its pair stops and the rest go on. Nothing here waits forever.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import secrets
import shlex
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.groups import rotation
from bench.core.options import RunOptions
from bench.core.record import RunRecord
from bench.core.schema import Cell, CellResult
from bench.core.significance import REGRESSION, ChangeEstimate, judge_nested
from bench.runtime.protocol import PROTOCOL_VERSION, decode
from envcheck.isolate import PACKAGE_ROOT, Supervisor, describe_exit, reap, tail
from envcheck.redact import redact_setting, redact_tree, redact_value

WORKER = "python -m bench.runtime.side"
# Every process a side starts carries this setting (a fresh token per side process): whatever leaves the side's
# tree (a worker whose parent died, a double fork) is still found and killed with the side (:func:`tagged`).
TAG_ENV = "DETBENCH_AB_SIDE"
EXIT_AFTER_EOF_S = 10.0  # a side whose output ended has this long to exit by itself before it is killed
# An interpreter side runs this detbench (its bench and envcheck, from a source checkout), whatever its working
# directory holds (a `tests/bench/` shadows `bench`) and whether or not its venv has detbench installed; the plugin
# is loaded by module, so no entry point is needed. From an installed (site-packages) detbench the side's own
# install runs: putting this venv's site-packages on another venv's path would mix their torch.
_BOOTSTRAP = """import importlib.util, os, runpy, sys
root, module = sys.argv[1:3]
del sys.argv[1:3]
for name in ("envcheck", "bench"):
    folder = os.path.join(root, name)
    spec = importlib.util.spec_from_file_location(name, os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    sys.modules[name] = package = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(package)
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""
_EOF = object()
# What one block contributes: a statistic of its iterations' times. Host stalls lengthen some iterations of a block
# (a minority, unevenly between the two sides of a round); a real change lengthens every iteration. On the first
# H200 gate run (docs/ab.md) the lower quartile gave 95 % intervals 16 % narrower than the median, the minimum 34 %
# narrower, with every estimate of a planted change inside its interval; the median counts slow iterations in.
BLOCK_STATS = {
    "p25": lambda times: float(np.percentile(times, 25)),
    "median": lambda times: float(np.median(times)),
    "min": lambda times: float(np.min(times)),
}


class SideFailed(RuntimeError):  # noqa: N818 - the side failed; its message says how
    """A side died, hung or broke the protocol; the message is one line."""


@dataclass(frozen=True)
class Side:
    """How one environment runs: an interpreter (a venv's python), or a shell template (a ``docker run ...``), plus
    environment settings. A template holds ``{worker}`` (a long-lived side) or ``{json}`` (a round per process)."""

    label: str
    python: str | None = None
    template: str | None = None
    env: tuple[tuple[str, str], ...] = ()

    def worker_command(self) -> list[str] | str:
        """The command of a long-lived side (bench.runtime.side)."""
        if self.template is not None:
            return self.template.replace("{worker}", WORKER)
        return run_module(self.python or sys.executable, "bench.runtime.side")

    def command(self, json_path: Path, bench_args: Sequence[str]) -> list[str] | str:
        """The command of one round-per-process run of ``pytest bench/``: a list (interpreter) or a shell string."""
        if self.template is not None:
            return self.template.format(json=shlex.quote(str(json_path)), dir=shlex.quote(str(json_path.parent)),
                                        name=shlex.quote(json_path.name), args=quote_args(bench_args),
                                        worker=WORKER)
        # the bench package by its folder when it is this checkout's (a `bench` where the side runs is not it)
        target = [str(Path(PACKAGE_ROOT, "bench"))] if from_checkout() else ["--pyargs", "bench"]
        return run_module(self.python or sys.executable, "pytest", *target, "-q", "-p", "no:cacheprovider",
                          "-p", "no:detbench", "-p", "bench.plugin.plugin", f"--benchmark-json={json_path}",
                          *bench_args)

    def describe(self) -> str:
        """The side as it may be published: settings and template redacted."""
        what = redact_value(self.template) if self.template else self.python or "this interpreter"
        env = " ".join(f"{k}={redact_setting(k, v)}" for k, v in self.env)
        return f"{self.label} (`{what}`{f' with {env}' if env else ''})"


def from_checkout() -> bool:
    """Whether this detbench runs from a source checkout (an editable install, PYTHONPATH), not site-packages."""
    return Path(PACKAGE_ROOT).name not in ("site-packages", "dist-packages")


def run_module(python: str, module: str, *args: str) -> list[str]:
    """``python -m module args`` with this detbench's packages first when they come from a source checkout."""
    if not from_checkout():
        return [python, "-m", module, *args]
    return [python, "-c", _BOOTSTRAP, PACKAGE_ROOT, module, *args]


def check_python(python: str, option: str) -> None:
    """Raise ValueError (one line) unless ``python`` names an executable file (a path or a name on PATH)."""
    if shutil.which(python) is None:
        raise ValueError(f"{option} {python!r} is not an executable file; give a venv's interpreter, e.g. "
                         f"{option} venv-b/bin/python")


def tagged(token: str) -> Callable[[], list[int]]:
    """A callable listing the processes whose environment carries ``TAG_ENV=token`` (read from /proc)."""
    needle = f"\0{TAG_ENV}={token}\0".encode()

    def pids() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:  # gone, or another user's
                continue
            if needle in b"\0" + environ + b"\0":
                found.append(int(entry.name))
        return found

    return pids


def supervised(command: list[str] | str, log: Path, env: dict[str, str], pipes: bool = False) -> Supervisor:
    """A supervisor for a side's command whose whole process tree, and whatever leaves it, ends with it;
    ``pipes``: spoken to over stdin/stdout (a long-lived side)."""
    token = secrets.token_hex(8)
    return Supervisor(command, log, env={**env, TAG_ENV: token}, shell=isinstance(command, str),
                      stdin_pipe=pipes, stdout_pipe=pipes, extra_pids=tagged(token))


class SideProcess:
    """One running side, spoken to over its pipes; every answer is awaited with a deadline."""

    def __init__(self, spec: Side, pair: int, out: Path) -> None:
        self.spec, self.pair = spec, pair
        self.name = f"{spec.label}-{pair}"
        self.log = out / f"{self.name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **dict(spec.env)}
        self.supervisor = supervised(spec.worker_command(), self.log, env, pipes=True)
        self.lines: queue.Queue[Any] = queue.Queue()
        self.failure: str | None = None
        self.hello: dict[str, Any] = {}

    def start(self) -> None:
        self.supervisor.start()
        threading.Thread(target=self._read, daemon=True, name=f"read-{self.name}").start()

    def _read(self) -> None:
        stdout = self.supervisor.proc.stdout if self.supervisor.proc else None
        try:
            for line in stdout if stdout is not None else ():
                event = decode(line.rstrip("\n"))
                if event is not None:
                    self.lines.put(event)
        except (OSError, ValueError):  # the pipe was closed under it: the side was ended
            pass
        self.lines.put(_EOF)

    @property
    def alive(self) -> bool:
        return self.failure is None

    def send(self, command: dict[str, Any]) -> None:
        import json  # noqa: PLC0415

        proc = self.supervisor.proc
        try:
            assert proc is not None and proc.stdin is not None
            proc.stdin.write(json.dumps(command) + "\n")
            proc.stdin.flush()
        except (OSError, ValueError) as exc:
            raise self._fail(f"could not send {command.get('cmd')!r} ({exc})") from None

    def next_event(self, timeout_s: float, waiting_for: str) -> dict[str, Any]:
        try:
            event = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            self.supervisor.kill()
            raise self._fail(f"hung: no answer to {waiting_for} within {timeout_s:g} s (killed)") from None
        if event is _EOF:
            # its output ended: give it a moment to exit with its own status, then its tree is killed
            code = reap(self.supervisor.proc, EXIT_AFTER_EOF_S) if self.supervisor.proc else None
            self.supervisor.kill()  # what it started dies with it
            raise self._fail(f"{describe_exit(code)} while {waiting_for}")
        return dict(event)

    def _fail(self, why: str) -> SideFailed:
        if self.failure is None:
            last = [line for line in tail(self.log, 2000).splitlines() if line.strip()]
            self.failure = f"{self.name} {why}" + (f"; last output: {last[-1][:300]}" if last else "")
        return SideFailed(self.failure)

    def stop(self) -> None:
        if self.supervisor.proc is None:
            return
        if self.alive:
            try:
                self.send({"cmd": "quit"})
                self.supervisor.proc.wait(timeout=30)
            except (SideFailed, Exception):  # noqa: BLE001 - stopping: whatever happens, the supervisor kills
                pass
        self.supervisor.kill()
        self.supervisor.finish()


@dataclass
class CellRecord:
    """One cell across the pairs: per pair and round, the baseline's and candidate's block medians."""

    cell: Cell
    iterations: int = 0
    blocks: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # pair -> rounds [{round, base, cand}]
    failures: list[str] = field(default_factory=list)
    baseline_ok: bool = False
    candidate_ok: bool = False
    lost: dict[str, int] = field(default_factory=lambda: {"baseline": 0, "candidate": 0})  # sides lost mid-run

    def ratios(self) -> list[list[float]]:
        """Per pair, candidate/baseline throughput of every round (baseline block time / candidate block time)."""
        return [[r["base_ms"] / r["cand_ms"] for r in rounds if r["cand_ms"] > 0] for rounds in self.blocks.values()]


@dataclass
class GateRun:
    """Everything one sides-mode run measured and decided."""

    cells: list[CellRecord]
    sides: list[dict[str, Any]]
    verdicts: dict[str, ChangeEstimate]
    results: dict[str, list[CellResult]]  # side name -> its cells' results
    wall_s: float
    timed_s: float
    setup_s: float
    pinned: list[int] | None
    pairs: int
    rounds: int
    block_s: float
    block_stat: str = "p25"
    notes: list[str] = field(default_factory=list)

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


def run_gate(baseline: Side, candidate: Side, plan: Callable[[dict[str, Any] | None], Sequence[Cell]],
             options: RunOptions, *, pairs: int, rounds: int, block_s: float, threshold: float,
             pin: list[int] | None, out: Path, side_timeout_s: float, block_stat: str = "p25", progress: Any = print,
             on_round: Any = None) -> GateRun:
    """Run the sides, alternate the blocks, judge every cell (see the module docstring).

    ``plan(environment)`` gives the cells once the sides are up, from the first live baseline side's environment
    fingerprint (its GPUs decide what can run: the coordinator may be a CPU-only CI runner driving containers).
    ``on_round(run)`` gets the run so far after every round (the caller writes it: a cut run keeps its rounds)."""
    began = time.perf_counter()
    sides = [SideProcess(spec, p, out) for p in range(pairs) for spec in (baseline, candidate)]
    results: dict[str, list[CellResult]] = {}
    records: dict[str, CellRecord] = {}
    timed = setup_s = 0.0
    notes: list[str] = []
    try:
        for side in sides:
            side.start()
        for side in sides:
            _expect_hello(side, side_timeout_s)
        reference = next((s.hello.get("environment") for s in sides if s.alive and s.spec.label == "baseline"), None)
        cells = list(plan(reference))
        records = {c.id: CellRecord(c) for c in cells}
        setup_began = time.perf_counter()
        for side in sides:
            if side.alive:
                side.send({"cmd": "setup", "cells": [c.to_dict() for c in cells], "options": options.to_dict()})
        for side in sides:
            _collect_setup(side, records, results, side_timeout_s)
        setup_s = time.perf_counter() - setup_began
        progress(f"set up {len(cells)} cell(s) on {sum(s.alive for s in sides)}/{len(sides)} side(s) "
                 f"in {setup_s:.0f} s")
        if pin is not None:
            for side in sides:
                _ask(side, {"cmd": "pin", "cpus": pin}, side_timeout_s, {"ok"})
        block_timeout = max(60.0, 40 * block_s)
        for record in records.values():  # alone on the GPU now: each side warms each cell up until stable
            _warm_up(record, sides, block_s, options, side_timeout_s)
        statistic = BLOCK_STATS[block_stat]
        for round_index in range(1, rounds + 1):
            for pair in range(pairs):
                base, cand = sides[2 * pair], sides[2 * pair + 1]
                # which side goes first flips every round (and between pairs), for every cell: an effect of going
                # first or second cancels within each pair's rounds
                for index in rotation(len(cells), round_index):
                    record = records[cells[index].id]
                    timed += _paired_block(record, base, cand, round_index, (round_index + pair) % 2, block_timeout,
                                           statistic)
            progress(f"round {round_index}/{rounds}: {_round_line(records, round_index)}")
            if on_round is not None:
                on_round(_gate_run(records, sides, results, threshold, began, timed, setup_s, pin, pairs,
                                   round_index, block_s, block_stat, notes))
        for side in sides:
            if side.alive:
                results.setdefault(side.name, []).extend(_side_results(side, records, side_timeout_s))
    except BaseException:  # interrupted (Ctrl-C, SIGTERM) or broken: no goodbye, every side is killed at once
        for side in sides:
            side.failure = side.failure or f"{side.name} was ended: the run was interrupted"
        raise
    finally:
        for side in sides:
            side.stop()
    return _gate_run(records, sides, results, threshold, began, timed, setup_s, pin, pairs, rounds, block_s,
                     block_stat, notes)


def _gate_run(records: dict[str, CellRecord], sides: list[SideProcess], results: dict[str, list[CellResult]],
              threshold: float, began: float, timed: float, setup_s: float, pin: list[int] | None, pairs: int,
              rounds: int, block_s: float, block_stat: str, notes: list[str]) -> GateRun:
    """The run as it stands: the verdict of every cell the baseline set up, every side's failure noted."""
    notes = [*notes, *(s.failure for s in sides if s.failure)]
    verdicts = {cid: judge_cell(r, threshold) for cid, r in records.items() if r.baseline_ok}
    return GateRun(list(records.values()), [_side_facts(s) for s in sides], verdicts, results,
                   time.perf_counter() - began, timed, setup_s, pin, pairs, rounds, block_s, block_stat, notes)


def judge_cell(record: CellRecord, threshold: float) -> ChangeEstimate:
    """The verdict: the nested paired test of the rounds; a cell the candidate never measured is a regression."""
    ratios = [r for r in record.ratios() if r]
    candidate_lost = record.lost["candidate"] > record.lost["baseline"]
    if not ratios and (not record.candidate_ok or candidate_lost):
        why = "; ".join(record.failures) or "the candidate did not set it up"
        return ChangeEstimate(REGRESSION, None, None, None, None, 0, 0, "round", False,
                              f"measured in the baseline, not in the candidate ({why})")
    estimate = judge_nested(ratios, threshold)
    if record.failures:
        estimate = dataclasses.replace(estimate, reason=estimate.reason + "; " + "; ".join(record.failures))
    return estimate


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
        side.send(command)
        event = side.next_event(timeout_s, f"{command['cmd']} {command.get('cell', '')}".strip())
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


def _warm_up(record: CellRecord, sides: list[SideProcess], block_s: float, options: RunOptions,
             timeout_s: float) -> None:
    """Each side warms the cell up alone until stable (the sides set up all at once, where no warm-up settles);
    the blocks' iteration count comes from the sides' steady medians, the same on every side."""
    medians = []
    for side in sides:
        if not side.alive or record.cell.id not in side.hello.get("ready", ()):
            continue
        event = _ask(side, {"cmd": "warmup", "cell": record.cell.id}, timeout_s, {"ok"})
        if event is None:
            record.lost[side.spec.label] += 1
            record.failures.append(f"{side.failure}")
        elif event.get("event") == "ok" and event.get("median_ms"):
            medians.append(float(event["median_ms"]))
            if not event.get("converged"):
                record.failures.append(f"{side.name}: warm-up stopped unconverged after {event.get('iterations')} "
                                       "iterations (judged anyway)")
        else:
            record.failures.append(f"{side.name} warm-up: {event.get('message', event.get('event'))}")
    policy = options.rounds_policy("cuda")
    if medians:
        record.iterations = max(policy.min_block_iterations, round(block_s * 1000.0 / statistics.median(medians)))


def _paired_block(record: CellRecord, base: SideProcess, cand: SideProcess, round_index: int, cand_first: int,
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


def _side_results(side: SideProcess, records: dict[str, CellRecord], timeout_s: float) -> list[CellResult]:
    out = []
    for cell_id in side.hello.get("ready", ()):
        event = _ask(side, {"cmd": "result", "cell": cell_id}, timeout_s, {"result"})
        if event is not None and event.get("event") == "result":
            out.append(CellResult.from_dict(event["result"], source=side.name))
    return out


def _side_facts(side: SideProcess) -> dict[str, Any]:
    env = side.hello.get("environment") or {}
    return {"name": side.name, "label": side.spec.label, "pair": side.pair, "command": side.spec.describe(),
            "pid": side.hello.get("pid"), "failure": side.failure, "log": str(side.log),
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
                           "detbench-ab", {"ab_side": name})
        written.append(record.write(out / f"{name}.json"))
    return written


def quote_args(args: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)
