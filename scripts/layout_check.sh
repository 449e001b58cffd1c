#!/usr/bin/env bash
# Before/after check of a redesign on one GPU: the smoke profile and one model of quick, run by the tree under
# test and by an older tree (unpacked beside it, e.g. `git archive OLD | tar -x -C .old`), then the cell ids and
# throughputs side by side (scripts/layout_compare.py).
#   bash scripts/layout_check.sh OUTDIR OLD_TREE [MODEL]     (MODEL default ssdlite320_mobilenet_v3_large)
set -uo pipefail
(( $# >= 2 )) || { awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" >&2; exit 2; }
OUT=$1 OLD=$2 MODEL=${3:-ssdlite320_mobilenet_v3_large}
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)" || exit 2
OLD="$(cd "$OLD" && pwd)" || exit 2
cd "$(dirname "$0")/.." || exit 2
NEW=$PWD
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
for which in old new; do
    if [[ $which == old ]]; then tree=$OLD plugin=(); else tree=$NEW plugin=(-p detbench.bench.plugin.plugin); fi
    for run in smoke quick; do
        args=(--profile smoke)
        [[ $run == quick ]] && args=(--profile quick --models "$MODEL")
        echo "== $which $run"
        (cd "$tree" && PYTHONPATH="$tree" "$PY" -m pytest "${plugin[@]}" bench/ -q -p no:cacheprovider "${args[@]}" \
            "--benchmark-json=$OUT/$which-$run.json" > "$OUT/$which-$run.log" 2>&1) || echo "   exit $?"
        tail -n 2 "$OUT/$which-$run.log"
    done
done
"$PY" "$NEW/scripts/layout_compare.py" "$OUT"
