"""A/B gate: the same cells for a baseline and a candidate, alternating in rounds on one machine.

``detbench-ab --baseline-python A/bin/python --candidate-python B/bin/python --rounds 5 --``
``--models retinanet_resnet50_fpn``

A comparison of two runs made at different times mixes the change with the host's drift (the lent VMs move
10-60 % on host-bound cells between leases). Here each round runs the baseline's and the candidate's matrix
back to back, in alternating order, so both sides see the same host; each round gives one candidate/baseline
throughput ratio per cell, and :func:`reports.significance.judge_paired` turns the ratios into a verdict
(Chromium's pinpoint and TorchBench's bisection rerun both sides side by side for the same reason).

A side is a Python interpreter (two venvs), a command template (two container images), or this interpreter
with extra environment settings. Every side-round writes an ordinary pytest-benchmark JSON under ``--out``, so
nothing measured is lost, ``ab.json`` holds the per-round figures and the verdicts, and ``summary.md`` the
verdict line and a table for a CI job summary (inconclusive cells listed, never passed silently).
Exit codes: 0 no regression, 3 a regression, 4 nothing comparable, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_NAME = "detbench.ab"
SCHEMA_VERSION = 1
EXIT_OK, EXIT_USAGE, EXIT_REGRESSION, EXIT_NOTHING_COMPARABLE = 0, 2, 3, 4
TEMPLATE_FIELDS = ("{json}", "{dir}", "{name}", "{args}")


class ABError(ValueError):
    """Bad A/B input; the message is one line naming the valid choices."""


@dataclass(frozen=True)
class Side:
    """How one side runs ``pytest bench/``: an interpreter, or a shell template, plus environment settings."""

    label: str
    python: str | None = None
    template: str | None = None
    env: tuple[tuple[str, str], ...] = ()

    def command(self, json_path: Path, bench_args: Sequence[str]) -> list[str] | str:
        """The command for one round: a list (interpreter) or a shell string (template)."""
        if self.template is not None:
            return self.template.format(json=shlex.quote(str(json_path)), dir=shlex.quote(str(json_path.parent)),
                                        name=shlex.quote(json_path.name),
                                        args=" ".join(shlex.quote(a) for a in bench_args))
        return [self.python or sys.executable, "-m", "pytest", "--pyargs", "bench", "-q", "-p", "no:cacheprovider",
                f"--benchmark-json={json_path}", *bench_args]


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


def run_side(side: Side, round_index: int, out: Path, bench_args: Sequence[str], timeout_s: float) -> SideRound:
    """Run one side once; a failure or timeout is recorded, never raised."""
    json_path = out / f"{side.label}-round{round_index}.json"
    command = side.command(json_path, bench_args)
    env = {**os.environ, **dict(side.env)}
    began = time.perf_counter()
    log = out / f"{side.label}-round{round_index}.log"
    with open(log, "wb") as handle:
        try:
            done = subprocess.run(command, shell=isinstance(command, str), env=env, stdout=handle,
                                  stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
            returncode: int | None = done.returncode
        except subprocess.TimeoutExpired:
            returncode = None
    record = SideRound(side.label, round_index, str(json_path), returncode, round(time.perf_counter() - began, 3))
    if returncode is None:
        record.error = f"timed out after {timeout_s:g} s (log: {log})"
        return record
    _read_results(record, json_path, log)
    return record


def _read_results(record: SideRound, json_path: Path, log: Path) -> None:
    from reports.load import LoadError, load_run  # noqa: PLC0415

    try:
        run = load_run(json_path, label=record.side)
    except LoadError as exc:
        record.error = f"{exc} (exit code {record.returncode}; log: {log})"
        return
    for result in run.results:
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
    """Verdict per cell; a cell the candidate never measured where the baseline did is a regression."""
    from bench.core import significance as sig  # noqa: PLC0415

    verdicts: dict[str, dict[str, Any]] = {}
    for cell_id, ratios in cell_ratios(rounds).items():
        cand_ok = any(cell_id in cand.throughput_ips for _, cand in rounds)
        if not ratios and not cand_ok:
            statuses = sorted({cand.status.get(cell_id, "missing") for _, cand in rounds})
            verdicts[cell_id] = {"verdict": sig.REGRESSION, "ratios": [],
                                 "reason": f"measured in the baseline, not in the candidate ({', '.join(statuses)})"}
            continue
        estimate = sig.judge_paired(ratios, threshold)
        verdicts[cell_id] = {**estimate.to_dict(), "ratios": ratios}
    return verdicts


def verdict_line(verdicts: dict[str, dict[str, Any]], threshold: float, rounds: int) -> str:
    counts = {name: sum(v["verdict"] == name for v in verdicts.values())
              for name in ("regression", "improvement", "unchanged", "inconclusive")}
    if not verdicts:
        return "VERDICT: nothing comparable (no cell was measured by the baseline)"
    return (f"VERDICT: {counts['regression']} regression(s), {counts['improvement']} improvement(s) beyond "
            f"{threshold:.0%} at 95% confidence; {counts['unchanged']} unchanged, {counts['inconclusive']} "
            f"inconclusive; {len(verdicts)} cells, {rounds} paired rounds")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detbench-ab", description=__doc__.split("\n\n")[0],
                                     epilog="Arguments after -- go to `pytest bench/` on both sides. Template "
                                            f"fields: {', '.join(TEMPLATE_FIELDS)}.")
    for side in ("baseline", "candidate"):
        group = parser.add_mutually_exclusive_group()
        group.add_argument(f"--{side}-python", help=f"interpreter of the {side} venv (default: this one)")
        group.add_argument(f"--{side}-cmd", help=f"shell template running the {side}, e.g. a `docker run` "
                                                 "that writes {json}")
        parser.add_argument(f"--{side}-env", action="append", default=[], metavar="NAME=VALUE",
                            help=f"environment setting for the {side} (repeatable)")
    parser.add_argument("--rounds", type=int, default=5, help="paired rounds (default 5; at least 3 to judge)")
    parser.add_argument("--threshold", type=float, default=0.05, help="smallest change that counts (default 0.05)")
    parser.add_argument("--round-timeout", type=float, default=3600.0, help="seconds per side-round (default 3600)")
    parser.add_argument("--out", default="ab-results", help="folder for the rounds' JSON and ab.json")
    parser.add_argument("bench_args", nargs="*", help="arguments for `pytest bench/` (after --)")
    return parser


def parse_sides(args: argparse.Namespace) -> tuple[Side, Side]:
    sides = []
    for label in ("baseline", "candidate"):
        template = getattr(args, f"{label}_cmd")
        if template is not None and "{json}" not in template and "{name}" not in template:
            raise ABError(f"--{label}-cmd must write its result to {{json}} (or {{dir}}/{{name}}); fields: "
                          f"{', '.join(TEMPLATE_FIELDS)}")
        env = []
        for item in getattr(args, f"{label}_env"):
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise ABError(f"bad --{label}-env {item!r}; use NAME=VALUE")
            env.append((name, value))
        sides.append(Side(label, getattr(args, f"{label}_python"), template, tuple(env)))
    if sides[0].python == sides[1].python and sides[0].template == sides[1].template and sides[0].env == sides[1].env:
        print("detbench-ab: baseline and candidate are the same; this measures the gate's own noise",
              file=sys.stderr)
    return sides[0], sides[1]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.rounds < 1:
            raise ABError(f"--rounds must be >= 1, got {args.rounds}")
        if not 0 <= args.threshold < 1:
            raise ABError(f"--threshold must be a fraction in [0, 1), got {args.threshold}")
        if not 0 < args.round_timeout < 1e6:
            raise ABError(f"--round-timeout must be between 0 and 1e6 seconds, got {args.round_timeout}")
        baseline, candidate = parse_sides(args)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
    except (ABError, OSError) as exc:
        print(f"detbench-ab: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rounds: list[tuple[SideRound, SideRound]] = []
    for index in range(args.rounds):
        order = (baseline, candidate) if index % 2 == 0 else (candidate, baseline)
        done = {side.label: run_side(side, index, out, args.bench_args, args.round_timeout) for side in order}
        for record in done.values():
            if record.error:
                print(f"detbench-ab: round {index} {record.side}: {record.error}", file=sys.stderr)
        rounds.append((done["baseline"], done["candidate"]))
        print(f"round {index + 1}/{args.rounds}: " + ", ".join(
            f"{r.side} {len(r.throughput_ips)} cells in {r.wall_s:.0f} s" for r in done.values()), flush=True)
        _write(out, baseline, candidate, rounds, judge(rounds, args.threshold), args)
    verdicts = judge(rounds, args.threshold)
    _write(out, baseline, candidate, rounds, verdicts, args)
    _print_table(verdicts)
    line = verdict_line(verdicts, args.threshold, len(rounds))
    print(line)
    if not verdicts:
        return EXIT_NOTHING_COMPARABLE
    return EXIT_REGRESSION if any(v["verdict"] == "regression" for v in verdicts.values()) else EXIT_OK


def _write(out: Path, baseline: Side, candidate: Side, rounds: list[tuple[SideRound, SideRound]],
           verdicts: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    """ab.json after every round (atomically), so an interrupted A/B run keeps its finished rounds."""
    payload = {"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "threshold": args.threshold,
               "bench_args": list(args.bench_args), "sides": [asdict(baseline), asdict(candidate)],
               "rounds": [[asdict(b), asdict(c)] for b, c in rounds], "verdicts": verdicts,
               "verdict_line": verdict_line(verdicts, args.threshold, len(rounds))}
    for name, text in (("ab.json", json.dumps(payload, indent=1)),
                       ("summary.md", summary_markdown(verdicts, payload["verdict_line"], baseline, candidate))):
        partial = out / f"{name}.partial"
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, out / name)


def summary_markdown(verdicts: dict[str, dict[str, Any]], line: str, baseline: Side, candidate: Side) -> str:
    """The verdict line and one row per cell, regressions and inconclusive cells first."""
    order = {"regression": 0, "inconclusive": 1, "improvement": 2, "unchanged": 3}
    out = [f"### detbench-ab: {_side_text(candidate)} vs {_side_text(baseline)}", "", f"**{line}**", "",
           "| cell | verdict | ratio | 95% interval | rounds | why |", "|---|---|---|---|---|---|"]
    for cell_id, v in sorted(verdicts.items(), key=lambda kv: (order.get(kv[1]["verdict"], 4), kv[0])):
        ratio = "-" if v.get("ratio") is None else f"{v['ratio']:.3f}"
        interval = f"{v['low']:.3f}-{v['high']:.3f}" if v.get("low") is not None else "-"
        why = str(v.get("reason", "")).replace("|", "/")
        out.append(f"| {cell_id} | {v['verdict']} | {ratio} | {interval} | {len(v.get('ratios', []))} | {why} |")
    return "\n".join(out) + "\n"


def _side_text(side: Side) -> str:
    what = side.template or side.python or "this interpreter"
    env = " ".join(f"{k}={v}" for k, v in side.env)
    return f"{side.label} (`{what}`{f' with {env}' if env else ''})".replace("|", "/")


def _print_table(verdicts: dict[str, dict[str, Any]]) -> None:
    for cell_id, v in sorted(verdicts.items()):
        ratio = v.get("ratio")
        interval = f"{v['low']:.3f}-{v['high']:.3f}" if v.get("low") is not None else "-"
        print(f"{cell_id:60s} {v['verdict']:12s} ratio {ratio if ratio is None else f'{ratio:.3f}'} "
              f"({interval}) rounds {len(v.get('ratios', []))}")


if __name__ == "__main__":
    sys.exit(main())
