"""``detbench``: one front door to every tool, once detbench is installed.

``detbench run --models retinanet_resnet50_fpn --benchmark-json=run.json`` is the benchmark matrix, ``pytest --pyargs
bench`` with the same options (``pytest bench/`` in a checkout does the same; ``detbench run --help`` lists them);
``detbench --models ...`` (options first, no command) is the same run. ``detbench check|report|history|ab`` are
``envcheck``, ``detbench-report``, ``detbench-history`` and ``detbench-ab`` (those names stay), and the studies
(``detbench fidelity``, ``trace``, ...) are the ``python -m detbench.bench.tools.*`` programs. ``detbench --help`` lists
them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Command:
    """One ``detbench`` sub-command: what it answers, and the ``module:function`` taking its arguments."""

    summary: str
    target: str  # imported by name when chosen: the front door loads no tool it does not run

    def load(self) -> Callable[[list[str]], int]:
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)


RUN = "run"
COMMANDS: dict[str, Command] = {
    RUN: Command("the benchmark matrix: detectors x eager/compiled x precisions x batch sizes x GPUs (pytest)",
                 "detbench.bench.plugin.cli:run_matrix"),
    "check": Command("preflight: will this machine or image run my job? (envcheck)", "detbench.envcheck.cli:main"),
    "report": Command("HTML, Markdown and CSV reports of run files; --fail-on-regression gates (detbench-report)",
                      "detbench.reports.cli:main"),
    "history": Command("every run in one SQLite file: trends, steps, a new run against its history "
                       "(detbench-history)", "detbench.reports.history.cli:main"),
    "ab": Command("the A/B gate: baseline and candidate environments timed side by side (detbench-ab)",
                  "detbench.bench.tools.ab:main"),
    "fidelity": Command("study: does the suite measure what a plain training or inference loop measures?",
                        "detbench.bench.tools.fidelity:main"),
    "plain-ddp": Command("study: the plainest DDP training loop under torchrun, the multi-GPU fidelity reference",
                         "detbench.bench.tools.plain_ddp:main"),
    "interleaved": Command("study: ratios between variants of one model, timed in interleaved rounds",
                           "detbench.bench.tools.interleaved:main"),
    "ratio-check": Command("study: do the matrix's paired ratios agree with the interleaved study's?",
                           "detbench.bench.tools.ratio_check:main"),
    "trace": Command("study: where a cell's time goes (torch.profiler trace and a kernel table)",
                     "detbench.bench.tools.trace:main"),
    "telemetry-overhead": Command("study: what the NVML telemetry sampler costs a GPU workload",
                                  "detbench.bench.tools.telemetry_overhead:main"),
    "serve": Command("study: the queries/s a detector sustains under a p99 bound, per runtime and batching "
                     "(MLPerf LoadGen)", "detbench.bench.tools.serve:main"),
    "smoke": Command("build, calibrate and run every registered detector once on this machine",
                     "detbench.bench.tools.smoke:main"),
}


def run_matrix(argv: list[str]) -> int:
    """The matrix: ``pytest --pyargs detbench.bench`` with these options."""
    return int(pytest.main(["--pyargs", "detbench.bench", "-p", "no:cacheprovider", *argv]))


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: detbench <command> [options]   (detbench <command> --help for its options)", "",
             "Benchmarking and environment validation for PyTorch object detection. Commands:", ""]
    lines += [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    lines += ["", "With options and no command (detbench --models ...), detbench runs the matrix."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"], ["help"]):
        print(usage())
        return 0
    if not args or args[0].startswith("-"):
        return run_matrix(args)  # the matrix's options alone: detbench's first form, kept
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"detbench: error: unknown command {name!r}; valid: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return int(COMMANDS[name].load()(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
