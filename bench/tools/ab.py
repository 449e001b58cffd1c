"""A/B gate: the same cells for a baseline and a candidate environment, measured side by side on one machine.

``detbench-ab --baseline-python A/bin/python --candidate-python B/bin/python -- --models retinanet_resnet50_fpn``

A comparison of two runs made at different times mixes the change with the host's drift (the lent VMs move
10-60 % on host-bound cells between leases), so both sides run here, now, alternating. Two modes:

- ``sides`` (default): each environment runs long-lived workers (detbench.bench.runtime.side) that build every cell
  once; the coordinator alternates short blocks between the baseline and the candidate of several fresh
  worker pairs in a random order, within a time budget, and judges each cell over the pairs, the worker
  process as the unit (detbench.bench.tools.ab_sides).
- ``rounds``: for a side that can only run once per command (a template writing ``{json}``): each round runs the
  baseline's and the candidate's whole ``pytest bench/`` back to back, in alternating order; one ratio per
  round and cell, each round a fresh pair of processes.

Both judge all cells of the run together (:mod:`detbench.bench.core.stats.judge`: Holm across the cells, a floor, each
cell's detectable change stated).

A side is a Python interpreter (two venvs), a command template (``docker run -i ... {worker}`` for sides,
``... --benchmark-json={json}`` for rounds), or this interpreter with extra environment settings. ``--out`` gets
``ab.json`` (every figure and verdict), ``summary.md`` (the verdict line and a table for a CI job summary,
inconclusive cells listed, never passed silently) and each side's results as ordinary run files.
Exit codes: 0 no regression, 3 a regression, 4 nothing comparable, 2 bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from detbench.bench.core import config as config_table
from detbench.bench.core.options import OptionError
from detbench.bench.core.record import write_file_atomically
from detbench.bench.runtime.side_client import SideSpec, check_python, supervised
from detbench.envcheck.isolate import tail
from detbench.envcheck.redact import redact_setting, redact_tree, redact_value

SCHEMA_NAME = "detbench.ab"
SCHEMA_VERSION = 2  # 2: the sides mode, its pairs and noise split; version 1 files (rounds) read the same keys
EXIT_OK, EXIT_USAGE, EXIT_REGRESSION, EXIT_NOTHING_COMPARABLE = 0, 2, 3, 4
EXIT_INTERRUPTED = 130
PYTEST_USAGE_ERROR = 4  # pytest's exit code for options it (or the bench plugin) refuses
TEMPLATE_FIELDS = ("{worker}", "{json}", "{dir}", "{name}", "{args}")
MODES = ("sides", "rounds")
DEFAULTS = {"sides": {"threshold": 0.02, "block_s": 0.25}, "rounds": {"rounds": 5, "threshold": 0.05}}
SIDES_ROUNDS = 6  # rounds per pair in the sides mode without a budget


class ABError(ValueError):
    """Bad A/B input; the message is one line naming the valid choices."""


# --- the rounds mode: a whole pytest run per side and round ----------------------------------------------


@dataclass
class SideRound:
    """One side's run in one round: where its JSON is and what came of it."""

    side: str
    round: int
    json: str
    returncode: int | None
    wall_s: float
    throughput_ips: dict[str, float] = field(default_factory=dict)  # cell id -> images/s, ok cells only
    status: dict[str, str] = field(default_factory=dict)  # cell id -> status
    error: str | None = None


def run_side(side: SideSpec, round_index: int, out: Path, bench_args: Sequence[str], timeout_s: float) -> SideRound:
    """Run one side once; a failure or timeout is recorded, never raised. The side's whole process tree ends
    with it, however the round ends (a timed-out ``pytest`` takes its worker along; a worker left behind by a
    pytest that died is found by its tag, :func:`detbench.bench.runtime.side_client.tagged`)."""
    json_path = out / f"{side.label}-round{round_index}.json"
    log = out / f"{side.label}-round{round_index}.log"
    env = {**os.environ, **dict(side.env)}
    # the round's own TMPDIR (inside the side's): a worker killed at the round timeout leaves its group folders
    # (detbench-group-*) there, and they go with the round
    scratch = tempfile.mkdtemp(prefix=f"detbench-ab-{side.label}-round{round_index}-", dir=env.get("TMPDIR"))
    try:
        with supervised(side.command(json_path, bench_args), log, {**env, "TMPDIR": scratch}) as run:
            timed_out = run.watch(timeout_s)
            run.kill()  # before the other side's round: nothing of this one runs on
            done = run.finish(timed_out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    record = SideRound(side.label, round_index, str(json_path), done.returncode, done.wall_s)
    if timed_out:
        record.error = f"timed out after {timeout_s:g} s; every process of the side was killed (log: {log})"
        return record
    _read_results(record, json_path, log)
    return record


def usage_failure(record: SideRound) -> str | None:
    """The line saying why pytest refused the side's options (its exit 4), or None: no other round would go."""
    if record.returncode != PYTEST_USAGE_ERROR:
        return None
    log = Path(record.json).with_suffix(".log")
    lines = [line.strip() for line in tail(log).splitlines() if "error" in line.lower() and "usage:" not in line]
    why = re.sub(r"(?i)^(?:\S*:\s*)?error:\s*", "", lines[-1]) if lines else "pytest refused its options"
    return f"the {record.side}'s pytest refused the matrix options (exit 4): {why} (log: {log})"


def _read_results(record: SideRound, json_path: Path, log: Path) -> None:
    from detbench.bench.core.record import RecordError, load_results  # noqa: PLC0415

    try:
        results = load_results(json_path)
    except RecordError as exc:
        record.error = f"{exc} (exit code {record.returncode}; log: {log})"
        return
    for result in results:
        record.status[result.cell.id] = result.status
        if result.status == "ok" and result.throughput_ips:
            record.throughput_ips[result.cell.id] = result.throughput_ips


def cell_ratios(rounds: list[tuple[SideRound, SideRound]]) -> dict[str, list[float]]:
    """Per cell, the candidate/baseline throughput ratio of every round in which both sides measured it."""
    ratios: dict[str, list[float]] = {}
    for base, cand in rounds:
        for cell_id, base_ips in base.throughput_ips.items():
            cand_ips = cand.throughput_ips.get(cell_id)
            ratios.setdefault(cell_id, [])
            if cand_ips is not None and base_ips > 0:
                ratios[cell_id].append(cand_ips / base_ips)
    return ratios


def judge(rounds: list[tuple[SideRound, SideRound]], threshold: float) -> dict[str, dict[str, Any]]:
    """Verdict per cell, the cells judged together (detbench.bench.core.stats.judge; each round a fresh pair of
    processes, so a round is a unit); a cell the candidate never measured where the baseline did is a regression."""
    from detbench.bench.core.stats.judge import REGRESSION, decide, pair_evidence  # noqa: PLC0415

    ratios = cell_ratios(rounds)
    lost = {}
    for cell_id, values in ratios.items():
        if not values and not any(cell_id in cand.throughput_ips for _, cand in rounds):
            statuses = sorted({cand.status.get(cell_id, "missing") for _, cand in rounds})
            lost[cell_id] = f"measured in the baseline, not in the candidate ({', '.join(statuses)})"
    verdicts = decide({cid: pair_evidence([[r] for r in values]) for cid, values in ratios.items()
                       if cid not in lost}, threshold)
    out: dict[str, dict[str, Any]] = {cid: {"verdict": REGRESSION, "ratios": [], "reason": why}
                                      for cid, why in lost.items()}
    out.update({cid: {**v.to_dict(), "ratios": ratios[cid]} for cid, v in verdicts.items()})
    return out


def run_rounds(baseline: SideSpec, candidate: SideSpec, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    note_same_sides(baseline, candidate)
    rounds: list[tuple[SideRound, SideRound]] = []
    began = time.perf_counter()

    def record(cut: bool) -> None:
        _write(out, baseline, candidate, args, judge(rounds, args.threshold), {
            "mode": "rounds", "rounds": [[asdict(b), asdict(c)] for b, c in rounds],
            "wall_s": round(time.perf_counter() - began, 1), "cut": cut})

    for index in range(args.rounds):
        order = (baseline, candidate) if index % 2 == 0 else (candidate, baseline)
        done = {}
        try:
            for side in order:
                side_round = done[side.label] = run_side(side, index, out, args.bench_args, args.round_timeout)
                refused = usage_failure(side_round)
                if refused:  # bad options: the first round says so, the others would only repeat it
                    raise ABError(refused)
                if side_round.error:
                    print(f"detbench-ab: round {index} {side_round.side}: {redact_value(side_round.error)}",
                          file=sys.stderr)
        except KeyboardInterrupt:  # the round it cut is dropped; the files say the run was cut
            if rounds:
                record(cut=True)
            raise
        rounds.append((done["baseline"], done["candidate"]))
        print(f"round {index + 1}/{args.rounds}: " + ", ".join(
            f"{r.side} {len(r.throughput_ips)} cells in {r.wall_s:.0f} s" for r in done.values()), flush=True)
        record(cut=False)
    return judge(rounds, args.threshold)


# --- the sides mode -----------------------------------------------------------------------------------------


def run_sides(baseline: SideSpec, candidate: SideSpec, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from detbench.bench.core import matrix  # noqa: PLC0415
    from detbench.bench.core.journal import new_run_id  # noqa: PLC0415
    from detbench.bench.core.schema import Cell  # noqa: PLC0415
    from detbench.bench.models import list_models  # noqa: PLC0415
    from detbench.bench.tools import ab_sides  # noqa: PLC0415

    run_config = _matrix_config(args.bench_args, list_models())
    skipped: dict[str, str] = {}

    def plan(environment: dict[str, Any] | None) -> list[Cell]:
        """The cells, for the GPUs the baseline side has (the coordinator may run on a CPU-only runner)."""
        caps = capabilities_of(environment) if environment else matrix.probe_capabilities()
        cells = matrix.expand(run_config.profile, run_config.filters, list_models(), max(caps.gpu_count, 1))
        skipped.update({c.id: r for c in cells for r in [matrix.skip_reason(c, caps)] if r})
        return [c for c in cells if c.id not in skipped]

    # the cells as this machine sees them: bad options and multi-GPU cells are usage errors before any side starts
    cells = matrix.expand(run_config.profile, run_config.filters, list_models(), 1)
    multi = [c.id for c in cells if c.gpus > 1 or c.searches_batch]
    if multi:
        raise ABError(f"the sides mode times one-GPU cells of a fixed batch size; not {', '.join(multi[:3])}: use "
                      "--gpus 1 and integer --batch-sizes, or --mode rounds")
    if not cells:
        raise ABError("no cell to compare: the matrix options select none")
    # the sides count no FLOPs and sample no telemetry: the gate compares times, and set-up time is wall time
    options = dataclasses.replace(run_config.options, count_flops=False, telemetry_hz=0.0)
    seed = args.seed if args.seed is not None else secrets.randbits(32)
    rounds = args.rounds if args.rounds is not None else (None if args.budget_s is not None else SIDES_ROUNDS)
    gate = ab_sides.GatePlan(pairs=args.pairs, block_s=args.block_s, floor=args.threshold, rounds=rounds,
                             budget_s=args.budget_s, block_stat=args.block_stat, seed=seed,
                             pin=ab_sides.choose_cpus(args.pin_cpus), side_timeout_s=args.side_timeout)
    note_same_sides(baseline, candidate)
    spend = f"a budget of {args.budget_s:g} s (first look at half its timed part)" if args.budget_s else \
        f"{rounds} round(s)"
    print(f"detbench-ab: up to {len(cells)} cell(s), {args.pairs or 'auto'} worker pair(s), ~{args.block_s:g} s "
          f"blocks, {spend}, floor {args.threshold:.0%}, seed {seed}, CPUs {gate.pin or 'not pinned'}", flush=True)
    run_id = new_run_id()

    def record(run: ab_sides.GateRun, files: list[Path]) -> dict[str, Any]:
        by_id = {r.cell.id: r for r in run.cells}
        verdicts = {cid: {**verdict.to_dict(), "ratios": by_id[cid].ratios()} for cid, verdict in run.verdicts.items()}
        detail = {"mode": "sides", "run_id": run_id, "pairs": run.plan.pairs, "rounds_per_pair": run.rounds,
                  "block_s": run.plan.block_s, "block_stat": run.plan.block_stat, "pinned_cpus": run.plan.pin,
                  "budget_s": run.plan.budget_s, "looks": run.plan.looks, "seed": run.plan.seed,
                  "warmup_iterations": run.plan.warmup_iterations, "cut": run.cut,
                  "options": options.to_dict(),
                  "skipped": skipped, "sides_started": run.sides, "notes": run.notes,
                  "cells": {r.cell.id: {"iterations": r.iterations, "blocks": r.blocks, "failures": r.failures,
                                        "score_thresh": r.score_thresh,
                                        "stopped_at_first_look": r.stopped is not None} for r in run.cells},
                  "wall_s": round(run.wall_s, 1), "setup_s": round(run.setup_s, 1),
                  "timed_s": round(run.timed_s, 1), "duty_cycle": round(run.duty_cycle, 3),
                  "side_runs": [str(f) for f in files]}
        _write(out, baseline, candidate, args, verdicts, detail)
        args.detail = detail  # the verdict line printed at the end says the rounds run
        return verdicts

    def cut(run: ab_sides.GateRun) -> None:
        record(run, ab_sides.write_side_runs(run, out, options, run_id))

    run = ab_sides.run_gate(baseline, candidate, plan, options, gate, out=out,
                            progress=lambda line: print(line, flush=True),
                            on_round=lambda so_far: record(so_far, []), on_cut=cut)
    verdicts = record(run, ab_sides.write_side_runs(run, out, options, run_id))
    print(f"wall {run.wall_s:.0f} s (set-up {run.setup_s:.0f} s), timed {run.timed_s:.0f} s: duty cycle "
          f"{run.duty_cycle:.0%}", flush=True)
    for note in run.notes:
        print(f"detbench-ab: {redact_value(note)}", file=sys.stderr)
    return verdicts


def capabilities_of(environment: dict[str, Any]) -> Any:
    """What a side's environment fingerprint says it can run (its GPUs, bf16 from compute capability 8.0)."""
    from detbench.bench.core.matrix import Capabilities  # noqa: PLC0415

    gpus = environment.get("gpus") or []
    majors = [int(str(g.get("compute_capability", "0")).split(".")[0]) for g in gpus]
    return Capabilities(cuda_available=bool(gpus), gpu_count=len(gpus), bf16_supported=bool(majors) and
                        min(majors) >= 8)


def _matrix_config(bench_args: Sequence[str], known_models: list[str]) -> config_table.RunConfig:
    parser = argparse.ArgumentParser(prog="detbench-ab -- (matrix options)", add_help=False,
                                     exit_on_error=False)
    config_table.add_to_argparse(parser, gate_only=True)
    try:
        values, unknown = parser.parse_known_args(list(bench_args))
    except argparse.ArgumentError as exc:
        raise ABError(f"bad matrix option: {exc}") from None
    if unknown:
        valid = ", ".join(o.name for o in config_table.OPTION_TABLE if o.gate)
        raise ABError(f"unknown matrix option(s) for the sides mode: {' '.join(unknown)}; valid: {valid}")
    from detbench.bench.core.options import import_model_modules  # noqa: PLC0415

    import_model_modules(tuple(filter(None, (values.model_modules or "").split(","))))
    # the sides run on GPUs even where this coordinator has none (a CI runner driving containers): an `auto`
    # profile and the device defaults are those of a GPU machine; a --weights path is the sides' (a container's
    # folders are not this coordinator's), so it is not looked for here
    return config_table.resolve(vars(values), cuda_available=True, known_models=known_models, local_files=False)


# --- shared: arguments, outputs -------------------------------------------------------------------------------


def verdict_line(verdicts: dict[str, dict[str, Any]], threshold: float, rounds: int, unit: str = "paired rounds") \
        -> str:
    counts = {name: sum(v["verdict"] == name for v in verdicts.values())
              for name in ("regression", "improvement", "unchanged", "inconclusive")}
    if not verdicts:
        return "VERDICT: nothing comparable (no cell was measured by the baseline)"
    return (f"VERDICT: {counts['regression']} regression(s), {counts['improvement']} improvement(s) beyond the "
            f"{threshold:.0%} floor, family-wise 5% (Holm over the cells); {counts['unchanged']} unchanged, "
            f"{counts['inconclusive']} inconclusive; {len(verdicts)} cells, {rounds} {unit}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detbench-ab", description=__doc__.split("\n\n")[0],
                                     epilog="Arguments after -- are the matrix options (as for `pytest bench/`). "
                                            f"Template fields: {', '.join(TEMPLATE_FIELDS)}.")
    for side in ("baseline", "candidate"):
        group = parser.add_mutually_exclusive_group()
        group.add_argument(f"--{side}-python", help=f"interpreter of the {side} venv (default: this one)")
        group.add_argument(f"--{side}-cmd", help=f"shell template running the {side}: with {{worker}} a long-lived "
                                                 "side (e.g. `docker run -i --rm --gpus all IMAGE {worker}`), with "
                                                 "{json} one round per process (--mode rounds)")
        parser.add_argument(f"--{side}-env", action="append", default=[], metavar="NAME=VALUE",
                            help=f"environment setting for the {side} (repeatable)")
    parser.add_argument("--mode", choices=MODES, default=None,
                        help="sides (default) or rounds (default when a template writes {json})")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="sides: wall seconds for the whole run, set-up included (the main knob): rounds go on "
                             "until it is spent, with a first look at half the timed part where decided cells stop "
                             "and hand their time to the rest (alpha split between the two looks)")
    parser.add_argument("--pairs", type=int, default=0, help="sides: fresh baseline/candidate worker pairs, the unit "
                                                             "of the verdict (default 0: sized from the first side, "
                                                             "8 on a GPU with the memory, 4 a core on the CPU)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (sides: per pair, at most; default 6 without "
                                                                 "--budget-s, else as many as it allows; rounds: "
                                                                 "default 5)")
    parser.add_argument("--block-s", type=float, default=None, help="sides: seconds per timed block (default 0.25)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="the floor: the smallest change flagged (default 0.02 sides, 0.05 rounds)")
    parser.add_argument("--seed", type=int, default=None, help="sides: seed of the random order and paddings "
                                                               "(default: a fresh one, recorded in ab.json)")
    parser.add_argument("--block-stat", choices=("p25", "median", "min"), default="p25",
                        help="sides: what a block contributes, a statistic of its iterations' times (default p25, the "
                             "lower quartile: host stalls lengthen a minority of iterations, a real change all)")
    parser.add_argument("--pin-cpus", default="auto", help="sides: CPUs every side is pinned to (auto: two of this "
                                                           "process's, the same for all; none; or e.g. 2,3)")
    parser.add_argument("--side-timeout", type=float, default=config_table.CELL_TIMEOUT_S,
                        help="sides: seconds a side may take to answer anything, a timed block included, before it "
                             "is killed as hung (a block also within 40 blocks' time, at least 60 s; default "
                             f"{config_table.CELL_TIMEOUT_S:g})")
    parser.add_argument("--round-timeout", type=float, default=3600.0, help="rounds: seconds per side-round "
                                                                            "(default 3600)")
    parser.add_argument("--out", default="ab-results", help="folder for ab.json, summary.md and the sides' runs")
    parser.add_argument("bench_args", nargs="*", help="matrix options (after --)")
    return parser


def parse_sides(args: argparse.Namespace) -> tuple[SideSpec, SideSpec]:
    sides = []
    for label in ("baseline", "candidate"):
        template = getattr(args, f"{label}_cmd")
        if template is not None:
            writes = "{json}" in template or "{name}" in template
            if args.mode == "rounds" and not writes:
                raise ABError(f"--{label}-cmd must write its result to {{json}} (or {{dir}}/{{name}}) in --mode "
                              f"rounds; fields: {', '.join(TEMPLATE_FIELDS)}")
            if args.mode == "sides" and "{worker}" not in template:
                raise ABError(f"--{label}-cmd must start the side with {{worker}} in --mode sides, e.g. "
                              f"`docker run -i --rm --gpus all IMAGE {{worker}}`; fields: {', '.join(TEMPLATE_FIELDS)}")
        env = []
        for item in getattr(args, f"{label}_env"):
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise ABError(f"bad --{label}-env {item!r}; use NAME=VALUE")
            env.append((name, value))
        python = getattr(args, f"{label}_python")
        if python is not None:
            check_python(python, f"--{label}-python")
        sides.append(SideSpec(label, python, template, tuple(env)))
    return sides[0], sides[1]


def note_same_sides(baseline: SideSpec, candidate: SideSpec) -> None:
    if (baseline.python, baseline.template, baseline.env) == (candidate.python, candidate.template, candidate.env):
        print("detbench-ab: baseline and candidate are the same; this measures the gate's own noise",
              file=sys.stderr)


def choose_mode(args: argparse.Namespace) -> str:
    """--mode, else rounds when a template writes {json} (the pre-sides form), else sides."""
    if args.mode is not None:
        return str(args.mode)
    templates = [t for t in (args.baseline_cmd, args.candidate_cmd) if t is not None]
    writes = [("{json}" in t or "{name}" in t) and "{worker}" not in t for t in templates]
    if any(writes) and not all(writes):
        raise ABError("one template writes {json} (a round per process) and the other starts {worker} (a long-lived "
                      "side): give both sides the same kind, or --mode")
    if templates and not any("{worker}" in t or "{json}" in t or "{name}" in t for t in templates):
        raise ABError(f"a --*-cmd template needs {{worker}} (sides) or {{json}} (rounds); fields: "
                      f"{', '.join(TEMPLATE_FIELDS)}")
    return "rounds" if any(writes) else "sides"


def main(argv: list[str] | None = None) -> int:
    # `timeout` and CI runners stop a job with SIGTERM: end as Ctrl-C does, so every side is killed on the way out
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.mode = choose_mode(args)
        for name, value in DEFAULTS[args.mode].items():
            if getattr(args, name) is None:
                setattr(args, name, value)
        if args.rounds is not None and args.rounds < 1:
            raise ABError(f"--rounds must be >= 1, got {args.rounds}")
        if args.pairs != 0 and not 2 <= args.pairs <= 16:
            raise ABError(f"--pairs must be 0 (auto) or within 2..16 (the pairs are the units of the verdict; each is "
                          f"two processes holding every cell), got {args.pairs}")
        if args.budget_s is not None and not 10 <= args.budget_s <= 1e6:
            raise ABError(f"--budget-s must be within [10, 1e6] seconds, got {args.budget_s}")
        if args.budget_s is not None and args.mode == "rounds":
            raise ABError("--budget-s is for --mode sides; --mode rounds takes --rounds")
        if not 0 <= args.threshold < 1:
            raise ABError(f"--threshold must be a fraction in [0, 1), got {args.threshold}")
        if args.block_s is not None and not 0 < args.block_s <= 60:
            raise ABError(f"--block-s must be within (0, 60] seconds, got {args.block_s}")
        for name in ("round_timeout", "side_timeout"):
            if not 0 < getattr(args, name) < 1e6:
                raise ABError(f"--{name.replace('_', '-')} must be between 0 and 1e6 seconds, got "
                              f"{getattr(args, name)}")
        if args.mode == "sides":
            from detbench.bench.tools.ab_sides import choose_cpus  # noqa: PLC0415

            choose_cpus(args.pin_cpus)
        baseline, candidate = parse_sides(args)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if args.mode == "sides":
            verdicts = run_sides(baseline, candidate, args, out)
        else:
            verdicts = run_rounds(baseline, candidate, args, out)
        _print_table(verdicts)
        print(_line(verdicts, args, getattr(args, "detail", None)), flush=True)
    except (ABError, OptionError, OSError) as exc:
        print(f"detbench-ab: {redact_value(' '.join(str(exc).split()))}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:  # choose_cpus, a matrix filter, a side's interpreter
        print(f"detbench-ab: {redact_value(' '.join(str(exc).split()))}", file=sys.stderr)
        return EXIT_USAGE
    except ImportError as exc:  # --model-modules names a module this interpreter cannot import
        print(f"detbench-ab: cannot import a model module: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:  # every side was ended on the way out; ab.json holds the finished rounds
        kept = Path(args.out, "ab.json")
        print(f"detbench-ab: {str(exc) or 'interrupted (Ctrl-C)'}; every side was ended; "
              f"{f'{kept} keeps the finished rounds' if kept.is_file() else 'no round had finished'}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    if not verdicts:
        return EXIT_NOTHING_COMPARABLE
    return EXIT_REGRESSION if any(v["verdict"] == "regression" for v in verdicts.values()) else EXIT_OK


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum} (SIGTERM)")


CUT_NOTE = "; CUT BY A SIGNAL: judged on the rounds finished before it"


def _line(verdicts: dict[str, dict[str, Any]], args: argparse.Namespace, detail: dict[str, Any] | None = None) -> str:
    """The verdict line; a run cut by a signal says so in it (the line a CI job greps and publishes)."""
    detail = detail or {}
    cut = CUT_NOTE if detail.get("cut") else ""
    if args.mode == "sides":
        pairs, done = detail.get("pairs", args.pairs), detail.get("rounds_per_pair", args.rounds or 0)
        return verdict_line(verdicts, args.threshold, done * pairs,
                            f"rounds ({pairs} worker pairs x up to {done})") + cut
    return verdict_line(verdicts, args.threshold, len(detail.get("rounds", [])) or args.rounds) + cut


def _write(out: Path, baseline: SideSpec, candidate: SideSpec, args: argparse.Namespace,
           verdicts: dict[str, dict[str, Any]], detail: dict[str, Any]) -> None:
    """ab.json and summary.md, atomically (an interrupted A/B run keeps what it had), every value redacted (a CI
    job publishes both: settings, templates, options and the sides' messages may carry credentials)."""
    line = _line(verdicts, args, detail)
    payload = {"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "threshold": args.threshold,
               "bench_args": list(args.bench_args), "sides": [_side_dict(baseline), _side_dict(candidate)],
               "verdicts": verdicts, "verdict_line": line, **detail}
    for name, text in (("ab.json", json.dumps(redact_tree(payload), indent=1)),
                       ("summary.md", redact_value(summary_markdown(verdicts, line, baseline, candidate, detail)))):
        write_file_atomically(out / name, text)


def _side_dict(side: SideSpec) -> dict[str, Any]:
    """A side as recorded: settings' values redacted (they leave the process in files a CI job publishes)."""
    data = asdict(side)
    data["env"] = [[name, redact_setting(name, value)] for name, value in side.env]
    data["template"] = redact_value(side.template) if side.template else None
    return data


def summary_markdown(verdicts: dict[str, dict[str, Any]], line: str, baseline: SideSpec, candidate: SideSpec,
                     detail: dict[str, Any] | None = None) -> str:
    """The verdict line and one row per cell, regressions and inconclusive cells first."""
    order = {"regression": 0, "inconclusive": 1, "improvement": 2, "unchanged": 3}
    out = [f"### detbench-ab: {_side_text(candidate)} vs {_side_text(baseline)}", "", f"**{line}**", ""]
    detail = detail or {}
    if detail.get("mode") == "sides":
        spend = f"a budget of {detail['budget_s']:g} s, {detail.get('looks')} looks" if detail.get("budget_s") \
            else "no budget, one look"
        out += [f"{detail['pairs']} fresh worker pairs x up to {detail['rounds_per_pair']} rounds of "
                f"~{detail['block_s']:g} s blocks in a random order ({spend}; seed {detail.get('seed')}); CPUs "
                f"{detail.get('pinned_cpus') or 'not pinned'}; wall {detail.get('wall_s')} s, set-up "
                f"{detail.get('setup_s')} s, timed {detail.get('timed_s')} s (duty cycle "
                f"{detail.get('duty_cycle', 0):.0%}){'; cut by a signal' if detail.get('cut') else ''}", ""]
    out += ["| cell | verdict | ratio | interval | detectable | units | rounds | block noise | pair spread | why |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for cell_id, v in sorted(verdicts.items(), key=lambda kv: (order.get(kv[1]["verdict"], 4), kv[0])):
        ratio = "-" if v.get("ratio") is None else f"{v['ratio']:.3f}"
        interval = f"{v['low']:.3f}-{v['high']:.3f}" if v.get("low") is not None else "-"
        detectable = "-" if v.get("detectable") is None else f">= {v['detectable']:.1%}"
        within = "-" if v.get("within_sd") is None else f"{v['within_sd']:.1%}"
        between = "-" if v.get("between_sd") is None else f"{v['between_sd']:.1%}"
        ratios = v.get("ratios") or []
        rounds = sum(len(r) for r in ratios) if ratios and isinstance(ratios[0], list) else len(ratios)
        why = str(v.get("reason", "")).replace("|", "/")
        out.append(f"| {cell_id} | {v['verdict']} | {ratio} | {interval} | {detectable} | {v.get('units', '-')} | "
                   f"{rounds} | {within} | {between} | {why} |")
    for note in detail.get("notes", []):
        out.append(f"\n- {str(note).replace('|', '/')}")
    return "\n".join(out) + "\n"


def _side_text(side: SideSpec) -> str:
    return side.describe().replace("|", "/")


def _print_table(verdicts: dict[str, dict[str, Any]]) -> None:
    for cell_id, v in sorted(verdicts.items()):
        ratio = v.get("ratio")
        interval = f"{v['low']:.3f}-{v['high']:.3f}" if v.get("low") is not None else "-"
        detectable = "" if v.get("detectable") is None else f", could see a slowdown >= {v['detectable']:.1%}"
        print(f"{cell_id:60s} {v['verdict']:12s} ratio {ratio if ratio is None else f'{ratio:.3f}'} "
              f"({interval}){detectable}")


if __name__ == "__main__":
    sys.exit(main())
