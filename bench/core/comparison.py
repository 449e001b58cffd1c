"""A model's comparison of variants (``python -m detbench.bench.tools.interleaved``): each variant's blocks, its paired
ratios to the first variant, and the variants as ordinary cell results.

The study writes these summaries into an ordinary run (its ``detbench.models``); files of the older
``detbench.interleaved`` format (versions 1 and 2: the summaries at the top level) keep loading
(``docs/examples/h100-ratios-*.json``). The study and the reports share this one definition.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from dataclasses import dataclass, field
from typing import Any

from detbench.bench.core import stats
from detbench.bench.core.ratios import break_even_iterations
from detbench.bench.core.schema import MODES, BlockRecord, Cell, CellResult, LatencyStats, Measurement, PairedRatio

SCHEMA_NAME = "detbench.interleaved"
SCHEMA_VERSION = 2
SCHEMA_VERSIONS = (1, 2)  # 2: each model also carries its variants' full cell results ("cells")
COMPILE_WORDS = ("eager", "compiled")  # a variant's compile word; "compiled" is torch.compile's default mode
PRECISION_ALIASES = {"fp32": "fp32", "fp16": "amp-fp16", "bf16": "amp-bf16",
                     "amp-fp16": "amp-fp16", "amp-bf16": "amp-bf16"}


class ComparisonError(ValueError):
    """Not a readable ``detbench.interleaved`` record; the message says what is wrong."""


def variant_cell(variant: str, model: str, batch_size: int, image_size: tuple[int, int] | None) -> Cell:
    """The 1-GPU cell of a variant text (``infer-compiled-bf16``) for ``model``."""
    parts = variant.strip().split("-", 2)
    if len(parts) != 3 or parts[0] not in MODES or parts[1] not in COMPILE_WORDS or parts[2] not in PRECISION_ALIASES:
        raise ComparisonError(f"bad variant {variant!r}; write MODE-COMPILE-PRECISION, e.g. infer-compiled-bf16 "
                          f"(modes {', '.join(MODES)}; compile {', '.join(COMPILE_WORDS)}; "
                          "precisions fp32, fp16, bf16)")
    mode, compile_word, precision = parts
    return Cell(model, mode, compile_word, PRECISION_ALIASES[precision], batch_size, 1, image_size)


def eager_twin_variant(variant: str) -> str:
    """The eager variant with the same mode and precision as a compiled one (``infer-compiled-bf16`` ->
    ``infer-eager-bf16``)."""
    return variant.replace("-compiled-", "-eager-")


@dataclass
class VariantRun:
    """One variant's setup and its timed blocks (one block per round), as the file holds it."""

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
    model_runtime_notes: dict[str, Any] | None = None


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
    def paired(cls, variant: VariantRun, baseline: VariantRun) -> Ratio | None:
        """The round-by-round ratio of two variants timed in one worker; None when no round has both."""
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
    host_canary_ms: list[float]
    status: str = "ok"
    reason: str | None = None
    environment: dict[str, Any] | None = None
    torch: str = ""
    cells: list[dict[str, Any]] = field(default_factory=list)  # v2: every variant's CellResult.to_dict()
    schema: str = SCHEMA_NAME
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelComparison:
        """One entry of the file's ``models`` list, with the file's ``schema`` and ``schema_version``."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA_NAME:
            raise ComparisonError(f"not a {SCHEMA_NAME} result")
        if data.get("schema_version") not in SCHEMA_VERSIONS:
            raise ComparisonError(f"{SCHEMA_NAME} schema_version {data.get('schema_version')!r} is not supported "
                              f"(this detbench reads {SCHEMA_VERSIONS[0]}..{SCHEMA_VERSIONS[-1]})")
        variants = [VariantRun(**{**v, "latency": LatencyStats(**v["latency"]) if v.get("latency") else None})
                    for v in data["variants"]]
        ratios = [Ratio(**r) for r in data["ratios"]]
        return cls(**{**data, "variants": variants, "ratios": ratios})

    def cell_results(self) -> list[CellResult]:
        """The variants as cell results: kept as such since version 2, rebuilt for version 1 (one worker timed
        every variant in rounds, so each carries its paired ratio to the first variant)."""
        if self.cells:
            return [CellResult.from_dict(c, source=f"{self.model} cells[{i}]") for i, c in enumerate(self.cells)]
        size = (int(self.image_size[0]), int(self.image_size[1])) if self.image_size else None
        ratios = {r.variant: r for r in self.ratios}
        first = variant_cell(self.variants[0].variant, self.model, self.batch_size, size)
        out = []
        for run in self.variants:
            cell = variant_cell(run.variant, self.model, self.batch_size, size)
            blocks = [BlockRecord(round=i, median_ms=ms, iterations=run.iterations_per_block or 0, host_canary_ms=None,
                                  start_offset_s=0.0) for i, ms in enumerate(run.block_median_ms)]
            measured = Measurement(timer=self.timer, iterations=len(run.times_ms), isolation="model",
                                   rounds=len(blocks), timed_s=sum(run.times_ms) / 1000.0, block_s=self.block_s,
                                   blocks=blocks)
            ratio = ratios.get(run.variant)
            out.append(CellResult(
                cell, status=run.status, reason=run.reason, times_ms=list(run.times_ms), latency=run.latency,
                throughput_ips=run.throughput_ips, timer=self.timer or None, first_call_s=run.first_call_s,
                compile_s=run.compile_s, warmup_iterations=run.warmup_iterations, warmup_s=run.warmup_s,
                graph_breaks=run.graph_breaks, break_even_iterations=run.break_even_iterations,
                postprocess=run.postprocess, model_runtime_notes=run.model_runtime_notes or {}, device=self.device,
                measurement=measured if blocks else None, environment=self.environment,
                ratio=(PairedRatio(first.id, ratio.median, ratio.q1, ratio.q3, list(ratio.per_round))
                       if ratio else None)))
        return out


def killed_model_results(data: dict[str, Any]) -> list[CellResult]:
    """A version-1 record of a model whose process was killed or crashed (no ratios, only the variants it
    had set up): each variant becomes a cell with the model's status and reason."""
    out = []
    for run in data.get("variants") or []:
        match = re.search(r"-bs(\d+)-gpu1(?:-(\d+)x(\d+))?$", str(run.get("cell_id", "")))
        batch = int(match.group(1)) if match else 1
        size = (int(match.group(2)), int(match.group(3))) if match and match.group(2) else None
        cell = variant_cell(run["variant"], str(data["model"]), batch, size)
        out.append(CellResult(cell, status=data.get("status", "error"), first_call_s=run.get("first_call_s"),
                              compile_s=run.get("compile_s"),
                              reason=f"{data.get('reason')} (variant set up: {run.get('status')}, not timed)"))
    return out


def model_results(data: dict[str, Any], schema_version: Any) -> list[CellResult]:
    """One entry of a file's ``models`` list as cell results: a killed model's record (no ``ratios``) or a
    comparison. Raises :class:`ComparisonError`, ``SchemaError``, ``KeyError`` or ``TypeError`` on a malformed one."""
    if "ratios" not in data:
        return killed_model_results(data)
    return ModelComparison.from_dict({"schema": SCHEMA_NAME, "schema_version": schema_version, **data}).cell_results()


def fill_break_even(runs: list[VariantRun]) -> None:
    """Break-even of each compiled variant against its eager twin, for version-1 files written before the
    field existed (new results carry it, from the same formula: detbench.bench.core.ratios.break_even_iterations)."""
    medians = {r.variant: r.latency.median_ms for r in runs if r.status == "ok" and r.latency is not None}
    for run in runs:
        if run.compile_s is None or run.variant not in medians:
            continue
        run.break_even_iterations = break_even_iterations(run.compile_s, medians.get(eager_twin_variant(run.variant)),
                                                          medians[run.variant])
