#!/usr/bin/env bash
# The `quick` profile on one GPU machine, as committed under docs/examples/: the GPU's clocks and limits, then
# the matrix with its journal (a cut run keeps every finished cell there). Run from anywhere; results go to
# $OUT (default ./quick-results): gpu.txt, quick.json, quick.journal.jsonl, quick.log.
#
#   bash scripts/quick_matrix.sh                    # no time limit (the profile takes ~16 min on one H100)
#   bash scripts/quick_matrix.sh --budget 560       # stop after 560 s, e.g. inside a time-limited call
#   OUT=/tmp/out bash scripts/quick_matrix.sh -- --models retinanet_resnet50_fpn   # after --: pytest options
#
# --budget SECONDS: wall-clock limit of the matrix (timeout(1); default 0, no limit). Exit: pytest's, or 124
# when the budget ran out.
set -uo pipefail
usage() { echo "usage: [OUT=DIR] bash scripts/quick_matrix.sh [--budget SECONDS] [-- PYTEST_OPTIONS...]" >&2; exit 2; }
budget=0
while [ $# -gt 0 ]; do
  case "$1" in
    --budget) [ $# -ge 2 ] || usage; budget=$2; shift 2 ;;
    --budget=*) budget=${1#--budget=}; shift ;;
    --) shift; break ;;
    *) usage ;;
  esac
done
[[ $budget =~ ^[0-9]+$ ]] || { echo "quick_matrix.sh: --budget takes whole seconds (0: no limit), not '$budget'" >&2; exit 2; }
out=$(realpath -m "${OUT:-quick-results}")  # relative to where it was called from
cd "$(dirname "$0")/.." || exit 2
mkdir -p "$out"
# NVLink multicast stays off on shared machines
export PYTHONUNBUFFERED=1 PYTHONPATH=. NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv \
    > "$out/gpu.txt" 2>&1
timeout --kill-after=20 "$budget" python3 -m pytest bench/ -p no:cacheprovider --profile quick "$@" \
    --benchmark-json="$out/quick.json" --detbench-journal="$out/quick.journal.jsonl" 2>&1 | tee "$out/quick.log" | tail -40
