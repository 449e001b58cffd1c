"""The support-and-parity table of a `deploy` profile run (docs/runtimes.md quotes it).

    python scripts/deploy_table.py docs/examples/cpu-deploy-full.json

One row per detector and runtime: status, parity against eager FP32 (matched / eager detections, the smallest box
IoU, the largest score difference, the smallest mask IoU), p50 / p99 latency, the paired ratio to eager with its IQR,
export seconds, artifact MiB, cold start seconds and the fresh serving process's peak memory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detbench.reports.load import load_run  # noqa: E402


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _parity(deploy) -> str:
    parity = deploy.parity if deploy is not None else None
    if parity is None:
        return "–"
    figures = [f"{parity.matched}/{parity.reference_detections}", f"{parity.min_box_iou:.5f}"
               if parity.min_box_iou is not None else "–", f"{parity.max_score_diff:.1e}"
               if parity.max_score_diff is not None else "–"]
    if parity.min_mask_iou is not None:
        figures.append(f"{parity.min_mask_iou:.4f}")
    return f"{parity.verdict}: {'; '.join(figures)}"


def rows(path: Path) -> list[str]:
    out = []
    results = sorted(load_run(path).results, key=lambda r: (r.cell.model, r.cell.runtime != "eager", r.cell.runtime))
    for r in results:
        deploy = r.deploy
        latency = r.latency
        ratio = "1" if r.cell.runtime == "eager" else (
            f"{r.ratio.median:.2f}× ({r.ratio.q1:.2f}–{r.ratio.q3:.2f})" if r.ratio is not None else "–")
        status = r.status if r.status == "ok" else f"{r.status}: {(r.reason or '')[:80]}"
        out.append("| " + " | ".join([
            r.cell.model if r.cell.runtime == "eager" else "", r.cell.runtime, status,
            "(baseline)" if r.cell.runtime == "eager" else _parity(deploy),
            f"{latency.median_ms:,.0f} / {latency.p99_ms:,.0f}" if latency is not None else "–", ratio,
            _num(deploy.export_s if deploy else None), _num(deploy.artifact_bytes / 2**20 if deploy and
                                                           deploy.artifact_bytes else None, 0),
            _num(deploy.cold_start_s if deploy else None),
            _num(deploy.serving_peak_rss_bytes / 2**30 if deploy and deploy.serving_peak_rss_bytes else None, 2),
        ]) + " |")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    args = parser.parse_args(argv)
    print("| detector | runtime | status | parity vs eager FP32 | p50 / p99 ms | vs eager (paired, IQR) | export s "
          "| artifact MiB | cold start s | serving GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows(args.run)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
