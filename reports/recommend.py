""" "What should I use?": per detector, mode and GPU count, the configuration to pick, ranked by paired ratios
when the cells carry them, and what was not tried."""

from __future__ import annotations

from typing import Any

import pandas as pd

from reports.columns import fmt_num, fmt_ratio_spread, is_missing

NOT_PAIRED = "(not paired: cells timed apart)"
BASELINE_VARIANT = "eager/fp32"

COLUMNS = [
    "run",
    "model",
    "mode",
    "gpus",
    "cell_id",
    "variant",
    "batch_size",
    "throughput_ips",
    "paired",
    "ratio",
    "ratio_q1",
    "ratio_q3",
    "peak_memory_bytes",
    "baseline_cell_id",
    "baseline_throughput_ips",
    "gain_over_eager_fp32",
    "break_even_iterations",
    "runner_up",
    "not_tried",
    "note",
]


def has_paired_ratios(frame: pd.DataFrame) -> bool:
    """Whether the tidy frame carries paired ratios to eager FP32 (columns ``ratio``, ``ratio_q1``, ``ratio_q3``)."""
    return {"ratio", "ratio_q1", "ratio_q3"} <= set(frame.columns)


def recommend(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, detector, mode, GPU count).

    The batch size is the one of the fastest ok cell. At that batch size the ok variants are ranked by their
    paired ratio to eager FP32 (median over interleaved rounds, with its IQR) when the cells carry one, else
    by throughput, and the row says so (:data:`NOT_PAIRED`). The gain is against eager FP32 at the same
    batch, image size and GPU count; a compiled pick carries its compile break-even. ``runner_up`` names the
    next variant and whether its spread overlaps the pick's; ``not_tried`` lists the variants other cells of
    these runs used (same mode) that this group did not run ok at this batch size. A group where nothing ran
    ok still gets a row that says what failed.
    """
    paired_frame = has_paired_ratios(frame)
    universe = {mode: sorted(g["variant"].unique()) for mode, g in frame.groupby("mode")}
    ok_mask = (frame["status"] == "ok") & frame["throughput_ips"].notna()
    rows = []
    for (run, model, mode, gpus), group in frame.groupby(["run", "model", "mode", "gpus"], sort=True):
        ok = group[ok_mask.loc[group.index]]
        if ok.empty:
            rows.append(_nothing_ok(run, model, mode, int(gpus), group))
            continue
        fastest = ok.loc[ok["throughput_ips"].idxmax()]
        batch, image = fastest["batch_size"], fastest["image_size"]
        at_batch = group[(group["batch_size"] == batch) & (group["image_size"] == image)]
        candidates = _ranked(at_batch[ok_mask.loc[at_batch.index]], paired_frame)
        best, paired = candidates[0]
        runner = candidates[1] if len(candidates) > 1 else None
        rows.append(
            {
                "run": run,
                "model": model,
                "mode": mode,
                "gpus": int(gpus),
                "cell_id": best["cell_id"],
                "variant": best["variant"],
                "batch_size": int(batch),
                "throughput_ips": float(best["throughput_ips"]),
                "paired": paired,
                "ratio": best.get("_ratio") if paired else None,
                "ratio_q1": best.get("_q1") if paired else None,
                "ratio_q3": best.get("_q3") if paired else None,
                "peak_memory_bytes": best["peak_memory_bytes"],
                "break_even_iterations": best["break_even_iterations"] if best["compile"] == "compiled" else None,
                "runner_up": _runner_up(best, runner, paired),
                "not_tried": _not_tried(at_batch, universe.get(mode, [])),
                **_against_baseline(best, at_batch, paired),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def _ranked(ok: pd.DataFrame, paired_frame: bool) -> list[tuple[dict[str, Any], bool]]:
    """Ok cells of one batch size, best first, each with whether its rank comes from a paired ratio."""
    rows = ok.to_dict("records")
    for row in rows:
        ratio = row.get("ratio") if paired_frame else None
        if is_missing(ratio) and row["variant"] == BASELINE_VARIANT and paired_frame:
            ratio = 1.0  # the baseline is its own reference: ratio 1 with no spread
            row["ratio_q1"] = row["ratio_q3"] = 1.0
        row["_ratio"] = None if ratio is None or is_missing(ratio) else float(ratio)
        row["_q1"] = None if is_missing(row.get("ratio_q1")) else float(row["ratio_q1"])
        row["_q3"] = None if is_missing(row.get("ratio_q3")) else float(row["ratio_q3"])
    # pairing only ranks when every candidate has a ratio; a mixture would compare ratios with throughputs
    paired = paired_frame and len(rows) > 0 and all(r["_ratio"] is not None for r in rows) and any(
        r["variant"] != BASELINE_VARIANT for r in rows
    )
    key = (lambda r: r["_ratio"]) if paired else (lambda r: r["throughput_ips"])
    return [(r, paired) for r in sorted(rows, key=key, reverse=True)]


def _runner_up(best: dict[str, Any], runner: tuple[dict[str, Any], bool] | None, paired: bool) -> str:
    if runner is None:
        return ""
    row = runner[0]
    if not paired:
        return f"{row['variant']}: {fmt_num(row['throughput_ips'])} images/s"
    text = f"{row['variant']}: {fmt_ratio_spread(row['_ratio'], row['_q1'], row['_q3'])}"
    if row["_q3"] is not None and best["_q1"] is not None and row["_q3"] >= best["_q1"]:
        text += " (ranges overlap: a tie within the noise)"
    return text


def _not_tried(at_batch: pd.DataFrame, universe: list[str]) -> str:
    """Variants of the same mode seen elsewhere in these runs that did not run ok here, and why."""
    statuses = dict(zip(at_batch["variant"], at_batch["status"]))
    parts = [f"{v} ({statuses[v]})" for v in universe if v in statuses and statuses[v] != "ok"]
    parts += [f"{v} (not tried)" for v in universe if v not in statuses]
    return ", ".join(parts)


def _against_baseline(best: dict[str, Any], at_batch: pd.DataFrame, paired: bool) -> dict[str, Any]:
    """Baseline cell id and throughput, the gain over it, and the note explaining a missing gain."""
    same = at_batch[(at_batch["compile"] == "eager") & (at_batch["precision"] == "fp32")]
    out: dict[str, Any] = {"baseline_cell_id": None, "baseline_throughput_ips": None, "gain_over_eager_fp32": None}
    notes = []
    if same.empty:
        notes.append("eager fp32 not measured at this batch size")
    else:
        base = same.iloc[0]
        out["baseline_cell_id"] = base["cell_id"]
        if base["status"] == "ok" and pd.notna(base["throughput_ips"]) and base["throughput_ips"] > 0:
            out["baseline_throughput_ips"] = float(base["throughput_ips"])
            if not paired:
                out["gain_over_eager_fp32"] = float(best["throughput_ips"]) / float(base["throughput_ips"])
        else:
            notes.append(f"eager fp32 at this batch size: {base['status']}")
    if paired:
        out["gain_over_eager_fp32"] = best["_ratio"]
    else:
        notes.append(NOT_PAIRED)
    out["note"] = "; ".join(notes)
    return out


def _nothing_ok(run: str, model: str, mode: str, gpus: int, group: pd.DataFrame) -> dict[str, Any]:
    cells = group.sort_values("batch_size").to_dict("records")
    failed = ", ".join(f"{r['variant']} bs{r['batch_size']} ({r['status']})" for r in cells)
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(run=run, model=model, mode=mode, gpus=gpus, variant="", paired=False, runner_up="", not_tried=failed)
    row["note"] = "no variant ran ok"
    return row


def with_speedup(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus ``speedup_vs_eager_fp32``: throughput over eager FP32 of the same run, detector, mode,
    batch size, GPU count and image size (NaN where either side is not ok)."""
    keys = ["run", "model", "mode", "batch_size", "gpus", "image_size"]
    base = frame[(frame["compile"] == "eager") & (frame["precision"] == "fp32") & (frame["status"] == "ok")]
    base = base[[*keys, "throughput_ips"]].rename(columns={"throughput_ips": "_eager_fp32_ips"})
    merged = frame.merge(base.drop_duplicates(keys), on=keys, how="left")
    ok = merged["status"] == "ok"
    merged["speedup_vs_eager_fp32"] = (merged["throughput_ips"] / merged["_eager_fp32_ips"]).where(ok)
    return merged.drop(columns="_eager_fp32_ips")
