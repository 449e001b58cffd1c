"""Ratios between variants of one model, timed in interleaved rounds: a study over the matrix's engine.

``python -m detbench.bench.tools.interleaved --models retinanet_resnet50_fpn \
--variants infer-eager-fp32,infer-eager-bf16,infer-compiled-fp32``

Host-bound detector cells move with the host: on the lent H100 VM the same loop switches between two
speeds (RetinaNet bf16 bs8: ~62 and ~85 ms per iteration) for tens of seconds at a time
(``docs/examples/h100-host-noise.json``). Cells timed one after another can land in different states,
so a ratio of two cells timed minutes apart is partly the host's. The matrix therefore measures each
model's variants in one worker, interleaved (detbench.bench.runtime.engine); this command runs exactly that engine on
the variants you name (each becomes a cell; one worker per model, as the matrix's ``--isolation model``),
and reports each variant's ratio to the *first* variant, paired by round, with its interquartile range.
``--json`` writes an ordinary run (detbench.bench.core.record: pytest-benchmark's layout, every variant a cell result
that ``detbench-report`` reads), with this study's per-model summary (variants, ratios to the first) in its
``detbench.models`` (detbench.bench.core.comparison); files of the older ``detbench.interleaved`` schema still load.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import signal
import sys
from dataclasses import dataclass
from typing import Any

from detbench.bench.core import config as config_table
from detbench.bench.core import matrix
from detbench.bench.core.comparison import SCHEMA_VERSION, ModelComparison, Ratio, VariantRun
from detbench.bench.core.journal import new_run_id
from detbench.bench.core.options import RoundsPolicy, RunOptions, import_model_modules
from detbench.bench.core.ratios import paired_ratio
from detbench.bench.core.record import RunRecord
from detbench.bench.core.schema import MODES, Cell, CellResult
from detbench.bench.models import get_model
from detbench.bench.models.registry import UnknownModelError
from detbench.bench.runtime.device import cell_device

DEFAULT_VARIANTS = ("infer-eager-fp32", "infer-eager-bf16", "infer-compiled-fp32")
# a variant's compile word: eager or compiled (torch.compile's default mode; the matrix's --compile has the others)
COMPILE_MODES = ("eager", "compiled")
PRECISION_ALIASES = {"fp32": "fp32", "fp16": "amp-fp16", "bf16": "amp-bf16",
                     "amp-fp16": "amp-fp16", "amp-bf16": "amp-bf16"}


class InterleavedError(ValueError):
    """Bad input (variant text, rounds, block length); the message names the valid choices."""


@dataclass(frozen=True)
class Variant:
    """How one model is run: mode, compile and precision (``infer-compiled-bf16``)."""

    mode: str
    compile: str
    precision: str

    @classmethod
    def parse(cls, text: str) -> Variant:
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


def compare_model(model: str, variants: list[Variant], batch_size: int, image_size: tuple[int, int] | None,
                  options: RunOptions, rounds: int, block_s: float) -> ModelComparison:
    """Measure the variants as one group (detbench.bench.runtime.launch.run_group, ``options.isolation`` says where) in
    ``rounds`` interleaved rounds of ``block_s`` blocks, then summarise with ratios to the first variant."""
    from detbench.bench.runtime.launch import run_group  # noqa: PLC0415
    from detbench.envcheck.fingerprint import collect  # noqa: PLC0415

    options = dataclasses.replace(options, rounds=RoundsPolicy(rounds=rounds, block_s=block_s, min_block_iterations=3))
    cells = [v.cell(model, batch_size, image_size) for v in variants]
    results = run_group(cells, options)
    return summarise(model, variants, batch_size, image_size, rounds, block_s, results, collect())


def summarise(model: str, variants: list[Variant], batch_size: int, image_size: tuple[int, int] | None, rounds: int,
              block_s: float, results: list[CellResult], environment: dict[str, Any] | None) -> ModelComparison:
    """A ModelComparison (ratios to the first variant, host canary in visiting order) from cell results."""
    import torch  # noqa: PLC0415

    runs = [_variant_run(v, r) for v, r in zip(variants, results)]
    ok = [(run, r) for run, r in zip(runs, results) if r.status == "ok" and r.measurement is not None]
    base = results[0] if ok and ok[0][1] is results[0] else None
    ratios = []
    if base is not None:
        for run, result in ok[1:]:
            pair = paired_ratio(result, base)
            if pair is not None:
                ratios.append(Ratio(run.variant, runs[0].variant, pair.per_round, pair.median, pair.q1, pair.q3))
    # every r in ok has a measurement; the test says so to the type checker
    blocks = sorted((b.start_offset_s, b.host_canary_ms) for _, r in ok if r.measurement is not None
                    for b in r.measurement.blocks)
    status, reason = "ok", None
    if not ok:  # nothing measured: say why, from the variants
        status = "skipped" if all(r.status == "skipped" for r in results) else "error"
        reason = "; ".join(f"{run.variant}: {run.status}: {run.reason}" for run in runs)
    device = next((r.device for r in results if r.device), "") or ""
    timer = next((r.timer for _, r in ok if r.timer), "")
    return ModelComparison(model, batch_size, list(image_size) if image_size else None, rounds, block_s, device, timer,
                           runs, ratios, [c for _, c in blocks if c is not None], status, reason, environment,
                           torch.__version__, [r.to_dict() for r in results])


def _variant_run(variant: Variant, result: CellResult) -> VariantRun:
    blocks = result.measurement.blocks if result.measurement else []
    detections = result.detections_per_image or {}
    return VariantRun(
        variant.label, result.cell.id, result.status, result.reason, result.first_call_s, result.compile_s,
        result.graph_breaks, result.break_even_iterations, result.warmup_iterations, result.warmup_s,
        blocks[0].iterations if blocks else None, [b.median_ms for b in blocks], list(result.times_ms),
        result.latency, result.throughput_ips, detections.get("mean"), result.postprocess,
        result.model_runtime_notes or None)


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
            if run["status"] not in ("ok", "skipped"):
                ips = f"{run['status']}: {str(run.get('reason'))[:60]}"
            compile_s = f"{run['compile_s']:.1f}" if run.get("compile_s") is not None else ""
            breaks = str(run["graph_breaks"]) if run.get("graph_breaks") is not None else ""
            print(f"{data['model']:34s} {run['variant']:22s} {ips:>8s} {shown:>7s} {iqr:>15s} {compile_s:>9s} "
                  f"{breaks:>6s}")
        canary = data["host_canary_ms"]
        if canary:
            print(f"{'':34s} host canary {min(canary):.2f}-{max(canary):.2f} ms "
                  f"(spread {(max(canary) - min(canary)) / min(canary):.0%})")


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m detbench.bench.tools.interleaved",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, help="comma-separated registry names")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help="comma-separated MODE-COMPILE-PRECISION; the first is the baseline "
                             f"(default {','.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--image-size", default=None, help="HEIGHTxWIDTH (default: each model's native size)")
    for name in ("--rounds", "--block-s", "--model-modules"):  # the matrix's knobs, with its defaults
        parser.add_argument(name, **config_table.argument_spec(config_table.table_option(name)))
    # --model-timeout-s: this study's earlier name for the matrix's --cell-timeout
    parser.add_argument("--cell-timeout", "--model-timeout-s",
                        **config_table.argument_spec(config_table.table_option("--cell-timeout")))
    parser.add_argument("--inline", action="store_true", help="run in this process (no per-model worker)")
    parser.add_argument("--json", default=None, help="write the results here (after every model)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so a child model process is killed with us
    parser = build_parser()
    args = parser.parse_args(argv)
    modules = matrix.parse_csv(args.model_modules) or ()
    try:
        variants = parse_variants(args.variants)
        options = RunOptions(profile="interleaved", telemetry_hz=0, count_flops=False, model_modules=modules,
                             isolation="inline" if args.inline else "model", cell_timeout_s=args.cell_timeout,
                             rounds_count=args.rounds, block_s=args.block_s)
        policy = options.rounds_policy(cell_device().type)  # the matrix's rounds and blocks on this device
        if policy.rounds < 2:
            raise InterleavedError(f"--rounds must be >= 2 (ratios are paired by round), got {policy.rounds}")
        if args.batch_size < 1:
            raise InterleavedError(f"--batch-size must be >= 1, got {args.batch_size}")
        import_model_modules(modules)
        models = [m for m in args.models.split(",") if m]
        if not models:
            raise InterleavedError("no models given; e.g. --models retinanet_resnet50_fpn")
        for name in models:
            get_model(name)  # UnknownModelError names the valid choices
        image_size = matrix.parse_image_size(args.image_size)
    except (InterleavedError, matrix.MatrixError, UnknownModelError, ValueError) as exc:
        parser.error(str(exc))
    results: list[dict[str, Any]] = []
    cells: list[CellResult] = []
    for model in models:
        result = compare_model(model, variants, args.batch_size, image_size, options, policy.rounds,
                               policy.block_s)
        results.append(result.to_dict())
        cells.extend(result.cell_results())
        if args.json:
            _write_json(args.json, results, cells, options)
    print_table(results)
    failed = [v for r in results for v in r["variants"] if v["status"] not in ("ok", "skipped")]
    return 1 if failed or any(r.get("status") not in ("ok", "skipped") for r in results) else 0


def _write_json(path: str, models: list[dict[str, Any]], cells: list[CellResult], options: RunOptions) -> None:
    """An ordinary run (atomically, after every model): the variants' cells, the study's summary beside them."""
    from detbench.envcheck.fingerprint import collect  # noqa: PLC0415

    RunRecord(cells, options.to_dict(), collect(), new_run_id(), "detbench.bench.tools.interleaved",
              {"study": "interleaved", "study_schema_version": SCHEMA_VERSION, "models": models}).write(path)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
