#!/usr/bin/env bash
# Device run: the `quick` profile on one GPU, as committed under docs/examples/. Writes everything under $OUT.
# Usage (on the GPU machine, repo root): OUT=/tmp/out bash scripts/h100_quick.sh [SECONDS]
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=. NCCL_NVLS_ENABLE=0
budget=${1:-560}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv > "$OUT/gpu.txt" 2>&1
timeout "$budget" python3 -m pytest bench/ -p no:cacheprovider --profile quick \
    --benchmark-json="$OUT/h100-quick.json" --detbench-journal="$OUT/h100-quick.journal.jsonl" 2>&1 | tee "$OUT/quick.log" | tail -40
