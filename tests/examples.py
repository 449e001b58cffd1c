"""The lab files under docs/examples that tests read, each by name: a new lab file joins no test by being committed.

Test-made fixtures live in tests/data; these are the committed measurements the docs quote, read to prove that
every one still loads and that the docs quote them figure for figure.
"""

from __future__ import annotations

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"

# the interleaved H100 comparisons docs/results-h100.md quotes (detbench.reports.ratios regenerates its tables)
RATIO_RUNS = ("h100-ratios-1.json", "h100-ratios-2.json", "h100-ratios-3.json", "h100-ratios-deformable-detr.json",
              "h100-ratios-detr.json", "h100-ratios-keypoint.json", "h100-ratios-rtdetr.json", "h100-ratios-yolo.json",
              "h100-ratios-yolo11n-train.json", "h100-ratios-yolo11n.json", "h100-ratios-yolov8s-train.json")

# every committed run file (what detbench.reports.load.load_run reads: run JSON, journal, interleaved or A/B side files)
RUNS = (
    "cpu-deploy.json",
    *(f"gate-h200/{side}-{k}.json" for side in ("baseline", "candidate") for k in range(3)),
    *(f"gate-h200-lease2/{part}/{side}-{k}.json" for part in ("p2", "s2") for side in ("baseline", "candidate")
      for k in range(3)),
    "h100-all-cells-failed.json", "h100-detr.journal.jsonl", "h100-killed-at-timeout.json", "h100-matrix-extras.json",
    "h100-quick-run1.journal.jsonl", "h100-quick-v2-part1.journal.jsonl", "h100-quick-v2-part2.json",
    "h100-quick.journal.jsonl", "h100-quick.json", *RATIO_RUNS, "h100-repeat-ratios-3.json",
    "h100-repeat-ratios-detr-notes.json", "h100-repeat-ratios-yolo11n.json", "h100-yolo.json",
    "multi-gpu/h100x4-multi-gpu.json",
    # the serving study's runs on the CPU (docs/serving.md): serving cells of schema version 5
    "serving/ssdlite320-224-cpu.json", "serving/ssdlite320-224-cpu-eager-1thread.json",
    "serving/fasterrcnn-mobilenet-224-cpu.json", "serving/fasterrcnn-mobilenet-160-cpu-quiet.json",
)


def example(name: str) -> Path:
    """The committed lab file ``name`` (a path under docs/examples)."""
    return EXAMPLES / name
