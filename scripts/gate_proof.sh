#!/usr/bin/env bash
# Device proof of the A/B gate's sides mode: detbench-ab on the 8 gate cells (RetinaNet, FCOS, Faster R-CNN,
# SSDlite; eager FP32 and AMP bf16; batch 8), the same software on both sides, with or without planted slowdowns
# in the candidate (DETBENCH_TEST_SLOWDOWN). Each run writes OUTDIR/NAME/ (ab.json, summary.md, the sides' runs);
# a short table of every run under OUTDIR comes last (scripts/gate_table.py).
#
#   bash scripts/gate_proof.sh OUTDIR same NAME       the same software on both sides
#   bash scripts/gate_proof.sh OUTDIR planted NAME    5 % planted in RetinaNet FP32, 10 % in FCOS bf16
#   bash scripts/gate_proof.sh OUTDIR table           only the table
# Env: PYTHON (python3), AB_ARGS (extra detbench-ab options, e.g. "--pairs 4 --rounds 4"), CELLS (the matrix
# options), PLANT (the planted run's DETBENCH_TEST_SLOWDOWN). Exit: detbench-ab's (0, 3 regression), 2 bad usage.
set -uo pipefail
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" >&2; exit 2; }
(( $# >= 2 )) || usage
OUT=$1 PART=$2
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)" || exit 2
cd "$(dirname "$0")/.." || exit 2
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
FIVE=retinanet_resnet50_fpn-infer-eager-fp32-bs8
TEN=fcos_resnet50_fpn-infer-eager-bf16-bs8
PLANT=${PLANT:-$FIVE:0.05,$TEN:0.10}
read -r -a CELLS_ARGS <<< "${CELLS:---profile quick --models retinanet_resnet50_fpn,fcos_resnet50_fpn,fasterrcnn_resnet50_fpn,ssdlite320_mobilenet_v3_large --modes infer --compile eager --precisions fp32,amp-bf16 --batch-sizes 8}"
read -r -a EXTRA <<< "${AB_ARGS:-}"
rc=0
case $PART in
    same|planted)
        (( $# == 3 )) || usage
        name=$3
        plant=()
        [[ $PART == planted ]] && plant=(--candidate-env "DETBENCH_TEST_SLOWDOWN=$PLANT")
        echo "== $name ($PART): detbench-ab ${EXTRA[*]} ${plant[*]}"
        # a TERM to this script (timeout) goes on to detbench-ab, which ends its sides and keeps its rounds
        "$PY" -m detbench.bench.tools.ab --out "$OUT/$name" "${plant[@]}" "${EXTRA[@]}" -- "${CELLS_ARGS[@]}" \
            > "$OUT/$name.log" 2>&1 &
        child=$!
        trap 'kill -TERM "$child" 2>/dev/null' TERM INT
        wait "$child" || rc=$?
        wait "$child" 2>/dev/null || true
        tail -n 14 "$OUT/$name.log"
        ;;
    table) ;;
    *) usage ;;
esac
"$PY" scripts/gate_table.py "$OUT"
exit "$rc"
