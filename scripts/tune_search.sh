#!/usr/bin/env bash
# The `tune` profile (the configuration search: compile modes, channels_last, the largest batch) on one GPU
# machine, one model per word, then a profiler trace of RetinaNet's best configuration, then the advice table
# (printed last).
#
# Usage (from anywhere; OUTDIR is taken as given):
#   bash scripts/tune_search.sh [--budget SECONDS] [--goal MODEL=IMG_PER_S]... OUTDIR [WORD...]
#   bash scripts/tune_search.sh OUTDIR retinanet_resnet50_fpn          # one model (~7-9 min on one H100)
#   bash scripts/tune_search.sh --budget 560 OUTDIR fcos_resnet50_fpn  # cut at 560 s; the next call resumes it
#   bash scripts/tune_search.sh OUTDIR trace                           # profiler trace of RetinaNet's best
#   bash scripts/tune_search.sh OUTDIR table                           # only the table over what OUTDIR holds
# WORD: a model, `trace` or `table`. With none it runs retinanet_resnet50_fpn, fasterrcnn_resnet50_fpn,
# fcos_resnet50_fpn, detr_resnet50, then trace.
#   --budget SECONDS   wall-clock limit of each model's search and of the trace (timeout(1); default 0, no limit)
#   --goal MODEL=IMG_PER_S   the advisor says how close MODEL's best 1-GPU inference came (repeatable; default none)
# A model that finished (OUTDIR/tune-MODEL.done) is not run again; one whose call was cut short resumes from its
# journal (--detbench-resume: finished cells are kept), so parts of a run add up across calls.
# Writes: OUTDIR/gpu.txt, tune-MODEL.{json,journal.jsonl,log}, trace-retinanet.{json,txt}, combined.journal.jsonl,
# advice.json, report/ (detbench-report, as python -m detbench.reports, over the combined journal).
set -uo pipefail
usage() {
  echo "usage: bash scripts/tune_search.sh [--budget SECONDS] [--goal MODEL=IMG_PER_S]... OUTDIR [MODEL... | trace | table]" >&2
  exit 2
}
budget=0
goals=()
while [ $# -gt 0 ]; do
  case "$1" in
    --budget) [ $# -ge 2 ] || usage; budget=$2; shift 2 ;;
    --budget=*) budget=${1#--budget=}; shift ;;
    --goal) [ $# -ge 2 ] || usage; goals+=(--goal "$2"); shift 2 ;;
    --goal=*) goals+=(--goal "${1#--goal=}"); shift ;;
    --) shift; break ;;
    -*) usage ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || usage
[[ $budget =~ ^[0-9]+$ ]] || { echo "tune_search.sh: --budget takes whole seconds (0: no limit), not '$budget'" >&2; exit 2; }
out=$(realpath -m "$1")
shift
words=("$@")
[ ${#words[@]} -eq 0 ] && words=(retinanet_resnet50_fpn fasterrcnn_resnet50_fpn fcos_resnet50_fpn detr_resnet50 trace)
cd "$(dirname "$0")/.." || exit 2
# NVLink multicast stays off on shared machines (every process started from here inherits these)
export PYTHONUNBUFFERED=1 PYTHONPATH=. NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
mkdir -p "$out"
[ -s "$out/gpu.txt" ] || nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu \
    --format=csv > "$out/gpu.txt" 2>&1

for word in "${words[@]}"; do
  case "$word" in
    table) ;;
    trace)
      retina="$out/tune-retinanet_resnet50_fpn.journal.jsonl"
      if [ ! -s "$retina" ]; then echo "trace: run retinanet_resnet50_fpn first ($retina missing)"; continue; fi
      # the best 1-GPU inference configuration the search found for RetinaNet, as detbench.bench.tools.trace arguments
      if args=$(python3 -m detbench.reports.advisor "$retina" --trace-args retinanet_resnet50_fpn); then
        # shellcheck disable=SC2086  # the advisor prints plain words (model, mode, compile, precision, sizes)
        timeout --kill-after=20 "$budget" python3 -m detbench.bench.tools.trace $args --steps 20 \
            --json "$out/trace-retinanet.json" > "$out/trace-retinanet.txt" 2>&1
        tail -30 "$out/trace-retinanet.txt"
      fi ;;
    *)
      json="$out/tune-$word.json"
      journal="$out/tune-$word.journal.jsonl"
      if [ -e "$out/tune-$word.done" ]; then echo "$word: done in an earlier call, not run again"; continue; fi
      resume=()  # a call cut short left a journal: its finished cells are taken, the rest measured
      [ -s "$journal" ] && resume=(--detbench-resume "$journal")
      if [ "$budget" -gt 0 ]; then echo "== tune $word (budget ${budget}s) =="; else echo "== tune $word =="; fi
      timeout --kill-after=20 "$budget" python3 -m pytest bench/ -p no:cacheprovider -q --profile tune --models "$word" \
          "${resume[@]}" --benchmark-json="$json" --detbench-journal="$journal" > "$out/tune-$word.log" 2>&1
      rc=$?
      [ "$rc" -eq 0 ] && touch "$out/tune-$word.done"  # a cut run (timeout: exit 2 or 124) resumes next call
      echo "exit $rc ($(grep -c '' "$journal" 2>/dev/null || echo 0) journal lines)"
      grep -E "^(■|▶)" "$out/tune-$word.log" | tail -20 ;;
  esac
done

# the table last: every model measured so far, from the journals (they hold every finished cell, even of a
# cut run), joined into one run so the report and the advisor see one sitting's results
mapfile -t journals < <(ls "$out"/tune-*.journal.jsonl 2>/dev/null)
if [ ${#journals[@]} -gt 0 ]; then
  cat "${journals[@]}" > "$out/combined.journal.jsonl"
  python3 -m detbench.reports "$out/combined.journal.jsonl" --out "$out/report" --title "detbench tune" > "$out/report.log" 2>&1 \
      || echo "python -m detbench.reports failed: $(tail -1 "$out/report.log")"
  if [ -s "$out/trace-retinanet.json" ]; then
    python3 -m detbench.bench.tools.trace --summary "$out/trace-retinanet.json"
  fi
  python3 -m detbench.reports.advisor "$out/combined.journal.jsonl" --json "$out/advice.json" --short "${goals[@]}"
fi
