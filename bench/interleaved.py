"""Ratios between variants of one model, timed in interleaved rounds in one process.

``python -m bench.interleaved --models retinanet_resnet50_fpn --variants infer-eager-fp32,infer-eager-bf16,infer-compiled-fp32``

Host-bound detector cells move with the host: on the lent H100 VM the same loop switches between two
speeds (RetinaNet bf16 bs8: ~62 and ~85 ms per iteration) for tens of seconds at a time
(``docs/examples/h100-host-noise.json``). Cells timed one after another can land in different states,
so a ratio of two matrix cells is partly the host's. Here every variant is built, calibrated, compiled and
warmed up first; then rounds of short timed blocks visit the variants in rotating order, and each
ratio is the median over rounds of the per-round ratio (paired), with its interquartile range. A host
canary (a fixed pure-Python loop, timed before every block) records how the host's speed moved.

The matrix stays the place for absolute numbers, memory, FLOPs and telemetry; this is for ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from bench import faults, matrix, memory, stats, timing
from bench.models import MissingExtraError, get_model
from bench.models.registry import UnknownModelError
from bench.options import RunOptions, import_model_modules
from bench.postprocess import calibrate_postprocess
from bench.runner import (autocast_context, cell_device, device_name, graph_break_count, make_step, one_line, prepare,
                          release_memory)
from bench.schema import COMPILE_MODES, MODES, Cell, LatencyStats

SCHEMA_NAME = "detbench.interleaved"
SCHEMA_VERSION = 1
DEFAULT_VARIANTS = ("infer-eager-fp32", "infer-eager-bf16", "infer-compiled-fp32")
PRECISION_ALIASES = {"fp32": "fp32", "fp16": "amp-fp16", "bf16": "amp-bf16",
                     "amp-fp16": "amp-fp16", "amp-bf16": "amp-bf16"}
CANARY_LOOPS = 20_000


class InterleavedError(ValueError):
    """Bad input (variant text, rounds, block length); the message names the valid choices."""


@dataclass(frozen=True)
class Variant:
    """How one model is run: mode, compile and precision (``infer-compiled-bf16``)."""

    mode: str
    compile: str
    precision: str

    @classmethod
    def parse(cls, text: str) -> "Variant":
        parts = text.strip().split("-", 2)
        if len(parts) != 3:
            raise InterleavedError(f"bad variant {text!r}; write MODE-COMPILE-PRECISION, e.g. infer-compiled-bf16 "
                                   f"(modes {', '.join(MODES)}; compile {', '.join(COMPILE_MODES)}; "
                                   f"precisions fp32, fp16, bf16)")
        mode, compile_mode, precision = parts
        if mode not in MODES or compile_mode not in COMPILE_MODES or precision not in PRECISION_ALIASES:
            raise InterleavedError(f"bad variant {text!r}: modes {', '.join(MODES)}; compile "
                                   f"{', '.join(COMPILE_MODES)}; precisions fp32, fp16, bf16")
        return cls(mode, compile_mode, PRECISION_ALIASES[precision])

    @property
    def label(self) -> str:
        short = {"fp32": "fp32", "amp-fp16": "fp16", "amp-bf16": "bf16"}[self.precision]
        return f"{self.mode}-{self.compile}-{short}"

    def cell(self, model: str, batch_size: int, image_size: tuple[int, int] | None) -> Cell:
        return Cell(model, self.mode, self.compile, self.precision, batch_size, 1, image_size)


@dataclass
class VariantRun:
    """One variant's setup and its timed blocks (one block per round)."""

    variant: str
    cell_id: str
    status: str = "ok"  # ok | oom | error | skipped
    reason: str | None = None
    first_call_s: float | None = None
    compile_s: float | None = None
    graph_breaks: int | None = None
    break_even_iterations: float | None = None  # compiled: vs the eager variant of the same mode and precision
    warmup_iterations: int | None = None
    warmup_s: float | None = None
    iterations_per_block: int | None = None
    block_median_ms: list[float] = field(default_factory=list)  # one per round it took part in
    times_ms: list[float] = field(default_factory=list)  # every timed iteration, all blocks
    latency: LatencyStats | None = None
    throughput_ips: float | None = None  # at the median of all timed iterations
    detections_per_image: float | None = None
    postprocess: dict[str, Any] | None = None
    model_runtime_notes: dict[str, Any] | None = None  # what the built model ran (e.g. deformable attention path)


@dataclass
class Ratio:
    """Throughput of ``variant`` over ``baseline``, paired by round (> 1: the variant is faster)."""

    variant: str
    baseline: str
    per_round: list[float]
    median: float
    q1: float
    q3: float

    @classmethod
    def paired(cls, variant: VariantRun, baseline: VariantRun) -> "Ratio | None":
        pairs = [b / v for b, v in zip(baseline.block_median_ms, variant.block_median_ms) if v > 0]
        if not pairs:
            return None
        ordered = sorted(pairs)
        return cls(variant.variant, baseline.variant, pairs, statistics.median(pairs),
                   stats.percentile(ordered, 25), stats.percentile(ordered, 75))


@dataclass
class ModelComparison:
    """Every variant of one model, the paired ratios to the first (baseline) variant, and the host canary."""

    model: str
    batch_size: int
    image_size: list[int] | None
    rounds: int
    block_s: float
    device: str
    timer: str
    variants: list[VariantRun]
    ratios: list[Ratio]
    host_canary_ms: list[float]  # before every block, in visiting order
    status: str = "ok"  # "partial" while variants are still being set up; "error" if nothing was measured
    reason: str | None = None
    environment: dict[str, Any] | None = None  # envcheck.fingerprint.collect(): GPU, UUIDs, driver, versions
    torch: str = torch.__version__
    schema: str = SCHEMA_NAME
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelComparison":
        if not isinstance(data, dict) or data.get("schema") != SCHEMA_NAME:
            raise InterleavedError(f"not a {SCHEMA_NAME} result")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise InterleavedError(f"{SCHEMA_NAME} schema_version {data.get('schema_version')!r} is not "
                                   f"supported (this detbench reads {SCHEMA_VERSION})")
        variants = [VariantRun(**{**v, "latency": LatencyStats(**v["latency"]) if v.get("latency") else None})
                    for v in data["variants"]]
        ratios = [Ratio(**r) for r in data["ratios"]]
        return cls(**{**data, "variants": variants, "ratios": ratios})


# --- measuring ------------------------------------------------------------------------------------------


def host_canary_ms(loops: int = CANARY_LOOPS) -> float:
    """Milliseconds of a fixed pure-Python loop: the host's single-thread speed right now."""
    began = time.perf_counter()
    total = 0
    for i in range(loops):
        total += i * i
    return (time.perf_counter() - began) * 1000.0 if total >= 0 else 0.0


def rotation(count: int, round_index: int) -> list[int]:
    """Visiting order for a round: 0..count-1 rotated by the round, so each variant takes every position."""
    start = round_index % count if count else 0
    return [(start + i) % count for i in range(count)]


@dataclass
class _Ready:
    run: VariantRun
    step: Callable[[], Any]
    keep: Any  # the prepared model/inputs, alive while the variant is timed


def _set_up(variant: Variant, model: str, batch_size: int, image_size: tuple[int, int] | None,
            options: RunOptions, device: torch.device) -> tuple[VariantRun, _Ready | None]:
    """Build, calibrate, compile and warm up one variant; failures come back as a non-ok VariantRun."""
    cell = variant.cell(model, batch_size, image_size)
    run = VariantRun(variant.label, cell.id)
    warmup_policy, _ = options.policies(device.type)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    try:
        prepared = prepare(cell, options, device)
        run.model_runtime_notes = dict(getattr(prepared.model, "runtime_notes", None) or {}) or None
        faults.maybe_trigger(cell.id)  # test-only, see bench/faults.py
        if prepared.spec.is_detector and cell.mode == "infer":
            with autocast_context(cell, device):
                load = calibrate_postprocess(prepared.model, prepared.spec, prepared.inputs)
            run.postprocess = load.to_dict() if load is not None else None
        breaks_before = graph_break_count()
        if cell.compile == "compiled":
            prepared.runnable = torch.compile(prepared.model, mode=options.compile_mode)
        step = make_step(cell, prepared, device)
        run.first_call_s, _ = timing.time_first_call(step, sync)
        warm = timing.warm_up(step, sync, warmup_policy)
        run.warmup_iterations, run.warmup_s = warm.iterations, warm.seconds
        if cell.compile == "compiled":
            run.graph_breaks = graph_break_count() - breaks_before
            run.compile_s = timing.compile_seconds(run.first_call_s, warm.median_ms or 0.0)
        _, measure_policy = options.policies(device.type)
        run.iterations_per_block = timing.planned_iterations(measure_policy, warm.median_ms or 1.0)
        return run, _Ready(run, step, prepared)
    except MissingExtraError as exc:
        run.status, run.reason = "skipped", str(exc)
    except Exception as exc:  # recorded, the other variants go on
        run.status = "oom" if memory.is_oom(exc) else "error"
        run.reason = f"{type(exc).__name__}: {one_line(exc)}"
        if run.status == "error":
            traceback.print_exc()
        release_memory(device)
    return run, None


def _time_block(ready: _Ready, device: torch.device, block_s: float) -> list[float]:
    """Per-iteration milliseconds of one block: CUDA events on a GPU, perf_counter + sync on the CPU."""
    if device.type == "cuda":
        policy = timing.MeasurePolicy(min_iterations=ready.run.iterations_per_block,
                                      min_s=0.0, max_iterations=ready.run.iterations_per_block, max_s=block_s * 10)
        return timing.measure_cuda_events(ready.step, policy, 1.0, device).times_ms
    policy = timing.MeasurePolicy(min_iterations=2, min_s=block_s, max_iterations=10_000, max_s=block_s * 10)
    return timing.measure_perf_counter(ready.step, lambda: None, policy).times_ms


def compare_model(model: str, variants: list[Variant], batch_size: int, image_size: tuple[int, int] | None,
                  options: RunOptions, rounds: int, block_s: float,
                  on_progress: Callable[[ModelComparison], None] | None = None) -> ModelComparison:
    """Set every variant up, then time ``rounds`` rounds of one ``block_s`` block per variant, rotating.

    ``on_progress`` gets a ``partial`` comparison after every variant's set-up, so that compile times and
    set-up failures survive a model that is killed before its timed rounds end."""
    device = cell_device()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = options.cudnn_benchmark
    # a block of ~block_s seconds per variant: the measure policy's min_s sets the iterations per block
    options = dataclasses.replace(options, measure=timing.MeasurePolicy(
        min_iterations=3, min_s=block_s, max_iterations=100_000, max_s=max(block_s, 1.0) * 10))
    runs: list[VariantRun] = []
    ready: list[_Ready] = []
    for variant in variants:
        began = time.perf_counter()
        run, prepared = _set_up(variant, model, batch_size, image_size, options, device)
        print(f"{model} {run.variant}: {run.status} after {time.perf_counter() - began:.1f} s of set-up"
              + (f" (first call {run.first_call_s:.1f} s)" if run.first_call_s is not None else "")
              + (f": {run.reason}" if run.reason else ""), file=sys.stderr, flush=True)
        runs.append(run)
        if prepared is not None:
            ready.append(prepared)
        if on_progress is not None:
            on_progress(ModelComparison(model, batch_size, list(image_size) if image_size else None, rounds, block_s,
                                        device_name(device), "", list(runs), [], [], "partial",
                                        f"{len(runs)} of {len(variants)} variants set up, timed rounds not run"))
    canary: list[float] = []
    for round_index in range(rounds):
        for index in rotation(len(ready), round_index):
            item = ready[index]
            if item.run.status != "ok":
                continue
            canary.append(host_canary_ms())
            try:
                times = _time_block(item, device, block_s)
            except Exception as exc:  # e.g. OOM once another variant holds memory: recorded, the rest go on
                item.run.status = "oom" if memory.is_oom(exc) else "error"
                item.run.reason = f"{type(exc).__name__} in round {round_index}: {one_line(exc)}"
                release_memory(device)
                continue
            item.run.times_ms.extend(times)
            item.run.block_median_ms.append(statistics.median(times))
    for item in ready:
        _summarise(item, batch_size)
    fill_break_even(runs)
    ok = [r for r in runs if r.status == "ok" and r.block_median_ms]
    baseline = runs[0] if runs and runs[0].status == "ok" and runs[0].block_median_ms else None
    ratios = [ratio for r in ok[1:] if baseline is not None
              for ratio in [Ratio.paired(r, baseline)] if ratio is not None]
    timer = "cuda-events" if device.type == "cuda" else "perf-counter+sync"
    status, reason = "ok", None
    if not ok:  # nothing measured: say why, from the variants
        status = "skipped" if all(r.status == "skipped" for r in runs) else "error"
        reason = "; ".join(f"{r.variant}: {r.status}: {r.reason}" for r in runs)
    from envcheck.fingerprint import collect  # noqa: PLC0415

    return ModelComparison(model, batch_size, list(image_size) if image_size else None, rounds, block_s,
                           device_name(device), timer, runs, ratios, canary, status, reason, collect())


def _summarise(item: _Ready, batch_size: int) -> None:
    run = item.run
    if run.times_ms:
        run.latency = stats.latency_stats(run.times_ms)
        run.throughput_ips = stats.throughput(run.times_ms, batch_size).median_ips
    counter = getattr(item.keep.spec, "count_detections", None)
    if run.status == "ok" and counter is not None and item.keep.targets is None:
        with torch.no_grad():
            counts = counter(item.step())
        run.detections_per_image = sum(counts) / len(counts) if counts else None


def eager_twin_variant(variant: str) -> str:
    """The eager variant with the same mode and precision as a compiled one (``infer-compiled-bf16`` ->
    ``infer-eager-bf16``)."""
    return variant.replace("-compiled-", "-eager-")


def fill_break_even(runs: list[VariantRun]) -> None:
    """Iterations after which each compiled variant has paid for its compile, against its eager twin."""
    medians = {r.variant: r.latency.median_ms for r in runs if r.status == "ok" and r.latency is not None}
    for run in runs:
        if run.compile_s is None or run.variant not in medians:
            continue
        twin = eager_twin_variant(run.variant)
        run.break_even_iterations = timing.break_even_iterations(run.compile_s, medians.get(twin), medians[run.variant])


# --- one model per child process ------------------------------------------------------------------------


def compare_in_child(model: str, argv: list[str], timeout_s: float) -> ModelComparison | dict[str, Any]:
    """Run one model's comparison as ``python -m bench.interleaved --inline`` in a new session.

    A crash or a hang ends only that model: the result is a dict with status ``error`` and the reason."""
    from bench.launch import REPO_ROOT, describe_exit, kill_group  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="detbench-interleaved-") as tmp:
        out = Path(tmp, "result.json")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "bench.interleaved", *argv, "--models", model, "--inline", "--no-table",
                   "--json", str(out)]
        child = subprocess.Popen(command, start_new_session=True, env=env)
        try:
            code = child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(child)
            return {"model": model, "status": "timeout", "reason": f"killed after {timeout_s:g} s",
                    "variants": _set_up_so_far(out)}
        except BaseException:  # interrupted (Ctrl-C, SIGTERM from `timeout`): the child must not outlive us
            kill_group(child)
            raise
        if code == 0 and out.exists():
            data = json.loads(out.read_text(encoding="utf-8"))
            return ModelComparison.from_dict(data["models"][0])
        return {"model": model, "status": "error", "reason": f"model process {describe_exit(code)}",
                "variants": _set_up_so_far(out)}


def _set_up_so_far(path: Path) -> list[dict[str, Any]]:
    """The variants a killed or crashed model process had set up (its last ``partial`` write), else []."""
    try:
        models = json.loads(path.read_text(encoding="utf-8"))["models"]
        return list(models[-1]["variants"]) if models and models[-1].get("status") == "partial" else []
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return []


# --- command line ---------------------------------------------------------------------------------------


def parse_variants(text: str) -> list[Variant]:
    variants = [Variant.parse(v) for v in text.split(",") if v.strip()]
    if not variants:
        raise InterleavedError("no variants given; e.g. --variants infer-eager-fp32,infer-compiled-fp32")
    if len({v.label for v in variants}) != len(variants):
        raise InterleavedError(f"a variant is listed twice in {text!r}")
    return variants


def print_table(models: list[dict[str, Any]]) -> None:
    print(f"\n{'model':34s} {'variant':22s} {'img/s':>8s} {'ratio':>7s} {'IQR':>15s} {'compile s':>9s} {'breaks':>6s}")
    for data in models:
        if data.get("status") != "ok":
            print(f"{data['model']:34s} {data.get('status')}: {data.get('reason')}")
            for run in data.get("variants") or []:  # what a killed model had set up
                compile_s = f", compile {run['compile_s']:.1f} s" if run.get("compile_s") is not None else ""
                print(f"{'':34s} {run['variant']:22s} set up: {run['status']}{compile_s}")
            continue
        if data["ratios"] == [] and len(data["variants"]) > 1:
            print(f"{data['model']:34s} no ratios: the baseline {data['variants'][0]['variant']} was not measured")
        ratios = {r["variant"]: r for r in data["ratios"]}
        for run in data["variants"]:
            ratio = ratios.get(run["variant"])
            base = run is data["variants"][0] and run["status"] == "ok"
            shown = f"{ratio['median']:.3f}" if ratio else ("1 (base)" if base else "-")
            iqr = f"{ratio['q1']:.3f}-{ratio['q3']:.3f}" if ratio else ""
            ips = f"{run['throughput_ips']:.1f}" if run.get("throughput_ips") else str(run["status"])
            compile_s = f"{run['compile_s']:.1f}" if run.get("compile_s") is not None else ""
            breaks = str(run["graph_breaks"]) if run.get("graph_breaks") is not None else ""
            print(f"{data['model']:34s} {run['variant']:22s} {ips:>8s} {shown:>7s} {iqr:>15s} {compile_s:>9s} {breaks:>6s}")
        canary = data["host_canary_ms"]
        if canary:
            print(f"{'':34s} host canary {min(canary):.2f}-{max(canary):.2f} ms "
                  f"(spread {(max(canary) - min(canary)) / min(canary):.0%})")


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so a child model process is killed with us
    parser = argparse.ArgumentParser(prog="python -m bench.interleaved", description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, help="comma-separated registry names")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help="comma-separated MODE-COMPILE-PRECISION; the first is the baseline "
                             f"(default {','.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", default=None, help="HEIGHTxWIDTH (default: each model's native size)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds of one block per variant (default 8)")
    parser.add_argument("--block-s", type=float, default=1.0, help="seconds per timed block (default 1)")
    parser.add_argument("--model-timeout-s", type=float, default=900.0, help="per model, in its own process")
    parser.add_argument("--inline", action="store_true", help="run in this process (no per-model child)")
    parser.add_argument("--no-table", action="store_true", help=argparse.SUPPRESS)  # a child of this command
    parser.add_argument("--model-modules", default="", help="extra modules that register models")
    parser.add_argument("--json", default=None, help="write the results here (after every model)")
    args = parser.parse_args(argv)
    modules = tuple(m for m in args.model_modules.split(",") if m)
    try:
        variants = parse_variants(args.variants)
        if args.rounds < 2:
            raise InterleavedError(f"--rounds must be >= 2 (ratios are paired by round), got {args.rounds}")
        if args.block_s <= 0 or args.batch_size < 1:
            raise InterleavedError("--block-s must be > 0 and --batch-size >= 1")
        import_model_modules(modules)
        models = [m for m in args.models.split(",") if m]
        if not models:
            raise InterleavedError("no models given; e.g. --models retinanet_resnet50_fpn")
        for name in models:
            get_model(name)  # UnknownModelError names the valid choices
        image_size = matrix.parse_image_size(args.image_size)
    except (InterleavedError, matrix.MatrixError, UnknownModelError, ValueError) as exc:
        parser.error(str(exc))
    options = RunOptions(profile="interleaved", telemetry_hz=0, count_flops=False, model_modules=modules)
    child_argv = [a for a in argv if a != "--inline"]
    child_argv = _without_option(_without_option(_without_option(child_argv, "--models"), "--json"), "--model-timeout-s")
    results: list[dict[str, Any]] = []

    def progress(partial: ModelComparison) -> None:  # a killed model process leaves its set-up behind
        if args.json:
            _write_json(args.json, [*results, partial.to_dict()])

    for model in models:
        if args.inline:
            result: Any = compare_model(model, variants, args.batch_size, image_size, options, args.rounds,
                                        args.block_s, progress)
        else:
            result = compare_in_child(model, child_argv, args.model_timeout_s)
        results.append(result.to_dict() if isinstance(result, ModelComparison) else result)
        if args.json:
            _write_json(args.json, results)
    if not args.no_table:
        print_table(results)
    return 0 if all(r.get("status") in ("ok", "skipped") for r in results) else 1


def _without_option(argv: list[str], name: str) -> list[str]:
    """argv without ``name VALUE`` / ``name=VALUE``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def _write_json(path: str, models: list[dict[str, Any]]) -> None:
    partial = f"{path}.partial"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump({"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "models": models}, handle, indent=1)
    os.replace(partial, path)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
