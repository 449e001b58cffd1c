#!/usr/bin/env bash
# Device run for issue 18: the `tune` profile on one GPU, one model per command, then a profiler trace of
# RetinaNet's best configuration, then the advice table (printed last).
#
# Usage (repo root, on the GPU machine; each call stays under ~9 minutes of wall time):
#   bash scripts/tune_h100.sh OUTDIR retinanet_resnet50_fpn      # one model per call (~7-9 min each)
#   bash scripts/tune_h100.sh OUTDIR fasterrcnn_resnet50_fpn
#   bash scripts/tune_h100.sh OUTDIR fcos_resnet50_fpn
#   bash scripts/tune_h100.sh OUTDIR detr_resnet50
#   bash scripts/tune_h100.sh OUTDIR trace                       # profiler trace of RetinaNet's best (~2-3 min)
#   bash scripts/tune_h100.sh OUTDIR table                       # only the table over what OUTDIR holds
# With no word after OUTDIR it does all of the above in order (longer than one 10-minute command).
# A model that finished (OUTDIR/tune-MODEL.done) is not run again; one whose call was cut short resumes from its
# journal (--detbench-resume: finished cells are kept), so parts of a run add up across calls.
# Writes: OUTDIR/gpu.txt, tune-MODEL.{json,journal.jsonl,log}, trace-retinanet.{json,txt}, combined.journal.jsonl,
# advice.json, report/ (detbench-report, as python -m reports, over the combined journal).
set -uo pipefail
out=${1:?usage: bash scripts/tune_h100.sh OUTDIR [MODEL... | trace | table]}
shift
words=("$@")
[ ${#words[@]} -eq 0 ] && words=(retinanet_resnet50_fpn fasterrcnn_resnet50_fpn fcos_resnet50_fpn detr_resnet50 trace)
export PYTHONUNBUFFERED=1 PYTHONPATH=. NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
budget=${TUNE_BUDGET_S:-560}  # per model: the profile is sized for ~9 minutes (docs/bench.md)
mkdir -p "$out"
[ -s "$out/gpu.txt" ] || nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu \
    --format=csv > "$out/gpu.txt" 2>&1

for word in "${words[@]}"; do
  case "$word" in
    table) ;;
    trace)
      retina="$out/tune-retinanet_resnet50_fpn.journal.jsonl"
      if [ ! -s "$retina" ]; then echo "trace: run retinanet_resnet50_fpn first ($retina missing)"; continue; fi
      # the best 1-GPU inference configuration the search found for RetinaNet, as bench.trace arguments
      if args=$(python3 -m reports.advisor "$retina" --trace-args retinanet_resnet50_fpn); then
        # shellcheck disable=SC2086  # the advisor prints plain words (model, mode, compile, precision, sizes)
        timeout 420 python3 -m bench.trace $args --steps 20 --json "$out/trace-retinanet.json" \
            > "$out/trace-retinanet.txt" 2>&1
        tail -30 "$out/trace-retinanet.txt"
      fi ;;
    *)
      json="$out/tune-$word.json"
      journal="$out/tune-$word.journal.jsonl"
      if [ -e "$out/tune-$word.done" ]; then echo "$word: done in an earlier call, not run again"; continue; fi
      resume=()  # a call cut short left a journal: its finished cells are taken, the rest measured
      [ -s "$journal" ] && resume=(--detbench-resume "$journal")
      echo "== tune $word (budget ${budget}s) =="
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
  python3 -m reports "$out/combined.journal.jsonl" --out "$out/report" --title "detbench tune (issue 18)" > "$out/report.log" 2>&1 \
      || echo "python -m reports failed: $(tail -1 "$out/report.log")"
  if [ -s "$out/trace-retinanet.json" ]; then
    python3 -m bench.trace --summary "$out/trace-retinanet.json"
  fi
  python3 -m reports.advisor "$out/combined.journal.jsonl" --json "$out/advice.json" --short \
      --goal retinanet_resnet50_fpn=310
fi
