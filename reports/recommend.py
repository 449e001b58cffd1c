""" "What should I use?": per detector, the fastest configuration that ran ok, and what it gains."""

from __future__ import annotations

import pandas as pd

COLUMNS = [
    "run",
    "model",
    "mode",
    "gpus",
    "cell_id",
    "variant",
    "batch_size",
    "throughput_ips",
    "peak_memory_bytes",
    "baseline_cell_id",
    "baseline_throughput_ips",
    "gain_over_eager_fp32",
    "break_even_iterations",
    "note",
]


def recommend(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, model, mode, gpus): the ok cell with the highest throughput.

    The gain is measured against eager FP32 at the same batch size, image size and GPU count; for a
    compiled pick, ``break_even_iterations`` says after how many iterations compiling has paid for itself.
    """
    ok = frame[(frame["status"] == "ok") & frame["throughput_ips"].notna()]
    rows = []
    for (run, model, mode, gpus), group in ok.groupby(["run", "model", "mode", "gpus"], sort=True):
        best = group.loc[group["throughput_ips"].idxmax()]
        same = frame[
            (frame["run"] == run)
            & (frame["model"] == model)
            & (frame["mode"] == mode)
            & (frame["gpus"] == gpus)
            & (frame["batch_size"] == best["batch_size"])
            & (frame["image_size"] == best["image_size"])
            & (frame["compile"] == "eager")
            & (frame["precision"] == "fp32")
        ]
        base_id, base_ips, gain, note = None, None, None, ""
        if same.empty:
            note = "eager fp32 not measured at this batch size"
        else:
            base = same.iloc[0]
            base_id = base["cell_id"]
            if base["status"] == "ok" and pd.notna(base["throughput_ips"]) and base["throughput_ips"] > 0:
                base_ips = float(base["throughput_ips"])
                gain = float(best["throughput_ips"]) / base_ips
            else:
                note = f"eager fp32 at this batch size: {base['status']}"
        rows.append(
            {
                "run": run,
                "model": model,
                "mode": mode,
                "gpus": int(gpus),
                "cell_id": best["cell_id"],
                "variant": best["variant"],
                "batch_size": int(best["batch_size"]),
                "throughput_ips": float(best["throughput_ips"]),
                "peak_memory_bytes": best["peak_memory_bytes"],
                "baseline_cell_id": base_id,
                "baseline_throughput_ips": base_ips,
                "gain_over_eager_fp32": gain,
                "break_even_iterations": best["break_even_iterations"] if best["compile"] == "compiled" else None,
                "note": note,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def with_speedup(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus ``speedup_vs_eager_fp32``: throughput over eager FP32 of the same run, detector, mode,
    batch size, GPU count and image size (NaN where either side is not ok)."""
    keys = ["run", "model", "mode", "batch_size", "gpus", "image_size"]
    base = frame[(frame["compile"] == "eager") & (frame["precision"] == "fp32") & (frame["status"] == "ok")]
    base = base[keys + ["throughput_ips"]].rename(columns={"throughput_ips": "_eager_fp32_ips"})
    merged = frame.merge(base.drop_duplicates(keys), on=keys, how="left")
    ok = merged["status"] == "ok"
    merged["speedup_vs_eager_fp32"] = (merged["throughput_ips"] / merged["_eager_fp32_ips"]).where(ok)
    return merged.drop(columns="_eager_fp32_ips")
