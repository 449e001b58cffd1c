"""`envcheck` / `python -m detbench.envcheck`: the preflight's command line.

Exit codes: 0 pass (warnings allowed), 1 a failed check or an unmet requirement, 2 usage error, or the
--json-out file could not be written (the table and verdict are printed first).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from detbench.envcheck import fingerprint
from detbench.envcheck.context import Context
from detbench.envcheck.options import AMP_DTYPES, MAX_TIMEOUT_S, Options, check_timeout, parse_capability
from detbench.envcheck.registry import check_ids
from detbench.envcheck.report import Report, render_plain, render_table
from detbench.envcheck.requirements import evaluate
from detbench.envcheck.runner import run_checks


def _capability(text: str) -> str:
    try:
        parse_capability(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not check_timeout(value):
        raise argparse.ArgumentTypeError(f"must be a number of seconds in (0, {MAX_TIMEOUT_S:g}], got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    ids = check_ids()
    parser = argparse.ArgumentParser(
        prog="envcheck",
        description="Preflight for GPU jobs: driver, CUDA, cuDNN, NCCL, torchvision ops, GPU health, host.",
        epilog="exit codes: 0 pass (warnings allowed), 1 a failed check or unmet requirement, 2 usage error. "
               f"checks: {', '.join(ids)}",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    parser.add_argument("--json-out", metavar="FILE",
                        help="also write the JSON report to FILE (unwritable: exit 2 after the verdict)")
    need = parser.add_argument_group("what the job needs (unmet -> exit 1)")
    need.add_argument("--require-gpu", action="store_true", help="fail without a usable CUDA GPU")
    need.add_argument("--gpus", type=_positive_int, metavar="N", help="at least N visible GPUs")
    need.add_argument("--require-nccl", action="store_true",
                      help="a working NCCL all-reduce (runs it even with --quick)")
    need.add_argument("--min-compute-capability", type=_capability, metavar="X.Y", help="e.g. 8.0 for Ampere")
    need.add_argument("--amp", choices=AMP_DTYPES, help="the autocast dtype the job uses")
    run = parser.add_argument_group("how to run")
    run.add_argument("--skip", action="append", default=[], choices=ids, metavar="CHECK_ID",
                     help=f"skip a check (repeatable); one of: {', '.join(ids)}")
    run.add_argument("--only", action="append", default=[], choices=ids, metavar="CHECK_ID",
                     help="run only these checks (repeatable)")
    run.add_argument("--timeout", type=_timeout, default=120.0, metavar="SECONDS",
                     help=f"per-check limit, up to {MAX_TIMEOUT_S:g} (default 120)")
    run.add_argument("--quick", action="store_true", help="skip the speed and NCCL checks")
    run.add_argument("--results-dir", default=".",
                     help="where results will be written (checked: writable, free disk)")
    return parser


def _console(to_stderr: bool):
    """A rich Console, or None when rich is not installed (plain text then)."""
    try:
        from rich.console import Console  # noqa: PLC0415
    except ImportError:
        return None
    console = Console(stderr=to_stderr)
    if not console.is_terminal:  # logs and CI: wide enough that remedies stay readable
        console = Console(stderr=to_stderr, width=160)
    return console


def _fingerprint(ctx: Context) -> dict:
    """The environment fingerprint; never collected in-process after CUDA init hung in the probe."""
    if ctx.gpu_facts().get("timed_out"):
        return {"error": "not collected: CUDA initialisation hung"}
    try:
        return fingerprint.collect()
    except ImportError as exc:  # no torch: the torch_pairing check already says so
        return {"error": f"not collected: {exc}"}


def options_from_args(args: argparse.Namespace) -> Options:
    return Options(
        require_gpu=args.require_gpu, gpus=args.gpus, require_nccl=args.require_nccl,
        min_compute_capability=args.min_compute_capability, amp=args.amp,
        skip=tuple(args.skip), only=tuple(args.only), timeout_s=args.timeout, quick=args.quick,
        results_dir=args.results_dir,
    )


def write_json(path: Path, document: str) -> str | None:
    """Write the JSON report (parent folders created); None, or one line saying what could not be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(document + "\n", encoding="utf-8")
    except OSError as exc:
        return f"cannot write the JSON report to {path} ({exc.strerror or exc})"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with argparse's one-line error on bad options
    try:
        options = options_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    ctx = Context(options)

    console = _console(args.json)
    if not args.json:
        print("envcheck: running checks...", file=sys.stderr, flush=True)
    results, all_finished = run_checks(ctx)
    fp = _fingerprint(ctx)
    report = Report(results, evaluate(ctx, results), options, fp)
    if args.json_out:  # written first: a file that cannot be written is exit 2 in what is printed too
        report.output_error = write_json(Path(args.json_out), json.dumps(report.to_dict(), indent=2, default=str))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    elif console is None:
        render_plain(report, sys.stdout)
    else:
        render_table(report, console)
    code = report.exit_code
    if report.output_error:  # the verdict above stands; the file the caller asked for is missing, which 1 would hide
        print(f"envcheck: error: {report.output_error}", file=sys.stderr)
    if not all_finished:  # a hung check thread would keep the interpreter alive: leave now
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
