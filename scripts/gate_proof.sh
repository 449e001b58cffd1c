#!/usr/bin/env bash
# Device proof of the regression gate (issue 15), on one GPU: the same software twice, a 10% and a 2% planted
# slowdown (DETBENCH_TEST_SLOWDOWN) in two cells, judged by the report (one repeat, and --repeats 3) in both file
# orders and by detbench-ab. Keeps going when a step fails; prints a table of the comparisons last.
#
#   bash scripts/gate_proof.sh OUTDIR [PART ...]      (repo root; every file lands under OUTDIR)
#
# PARTS (default: all of them, in this order; each fits a 10-minute command on an H100):
#   a            pytest bench/ --profile quick                          -> a.json
#   b            the same with both plants                              -> b.json
#   ra | rb      --repeats 3 on the gate cells, plain | planted         -> ra.json | rb.json
#   reports      compare a/b and ra/rb, both orders, where the files exist
#   compare A B  only the two comparisons (A vs B, B vs A) of existing files
#   ab           detbench-ab, 5 alternating rounds, the gate cells, candidate with both plants -> ab/ab.json
#   table        only the table
# Env: PYTHON (python3), AB_ROUNDS (5), REPEATS (3), GATE_ARGS (the --repeats runs' cells: the two planted ones and
# an unplanted one), AB_ARGS (detbench-ab's cells: the two planted ones), PLANT (the DETBENCH_TEST_SLOWDOWN value).
# ab.json is rewritten after every round: a part cut short by a time limit keeps its rounds (then run `table`).
# Exit 0 once the parts ran (each step's exit code is in OUTDIR/<step>.rc and named last when not 0; 3 is a
# regression verdict, 4 nothing comparable), 2 on bad usage.
set -uo pipefail
if (( $# < 1 )); then
    awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" >&2  # the header above
    exit 2
fi
OUT=$1
shift
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)" || exit 2
HERE=$PWD
cd "$(dirname "$0")/.." || exit 2
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" NCCL_NVLS_ENABLE=0
PY=${PYTHON:-python3}
TEN=retinanet_resnet50_fpn-infer-eager-fp32-bs8
TWO=fcos_resnet50_fpn-infer-eager-fp32-bs8
PLANT=${PLANT:-$TEN:0.10,$TWO:0.02}
read -r -a GATE <<< "${GATE_ARGS:---profile quick --models retinanet_resnet50_fpn,fcos_resnet50_fpn,ssdlite320_mobilenet_v3_large --compile eager --precisions fp32 --batch-sizes 8}"
read -r -a AB_CELLS <<< "${AB_ARGS:---profile quick --models retinanet_resnet50_fpn,fcos_resnet50_fpn --compile eager --precisions fp32 --batch-sizes 8}"
FAILED=()

step() {  # step NAME COMMAND...: run, log to OUTDIR/NAME.log, remember a failure, go on
    local name=$1 rc=0
    shift
    echo "== $name: $*"
    "$@" > "$OUT/$name.log" 2>&1 || rc=$?
    tail -n 3 "$OUT/$name.log"
    echo "$rc" > "$OUT/$name.rc"
    if (( rc != 0 )); then FAILED+=("$name (exit $rc)"); fi
}

bench_run() {  # bench_run NAME [pytest args...]
    local name=$1
    shift
    step "run-$name" "$PY" -m pytest bench/ -p no:cacheprovider -q "--benchmark-json=$OUT/$name.json" \
        "--detbench-journal=$OUT/$name.journal.jsonl" "$@"
}

compare() {  # compare A.json B.json: the report both ways, --fail-on-regression (exit 3 and 4 are verdicts)
    local a=$1 b=$2 x y
    for pair in "$a $b" "$b $a"; do
        read -r x y <<< "$pair"
        if [[ ! -f "$x" || ! -f "$y" ]]; then
            echo "== skip $(basename "$x") vs $(basename "$y"): missing file"
            continue
        fi
        local name
        name="compare-$(basename "$y" .json)-vs-$(basename "$x" .json)"
        step "$name" "$PY" -m reports "$x" "$y" --baseline "$x" --fail-on-regression --title "$name" \
            --out "$OUT/$name"
    done
}

resolve() {  # a result file as given (absolute, or relative to where the script was started), else in OUTDIR
    if [[ $1 == /* ]]; then echo "$1"
    elif [[ -f "$HERE/$1" || ! -f "$OUT/$1" ]]; then echo "$HERE/$1"
    else echo "$OUT/$1"
    fi
}

ab() {
    step ab "$PY" -m bench.tools.ab --candidate-env "DETBENCH_TEST_SLOWDOWN=$PLANT" --rounds "${AB_ROUNDS:-5}" \
        --out "$OUT/ab" -- "${AB_CELLS[@]}"
}

table() {  # one row per comparison found under OUTDIR
    "$PY" - "$OUT" "$TEN" "$TWO" <<'PYEOF'
import json, sys
from pathlib import Path

out, ten, two = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
def short(ids):
    return ",".join(i.split("-infer")[0].split("_resnet50")[0] + ("*10%" if ten in i else "*2%" if two in i else "")
                    for i in ids) or "-"
rows = []
for path in sorted(out.glob("compare-*/comparison.json")):
    data = json.loads(path.read_text())
    for c in data["comparisons"]:
        rows.append((path.parent.name.removeprefix("compare-"), f"{c['repeats']['baseline']}/{c['repeats']['candidate']}",
                     short(c["regressions"]), short(c["improvements"]), str(len(c["inconclusive"])),
                     data["gate"]))
ab = out / "ab" / "ab.json"
if ab.exists():
    data = json.loads(ab.read_text())
    v = data["verdicts"]
    pick = lambda kind: [k for k, x in v.items() if x["verdict"] == kind]
    rows.append((f"detbench-ab ({len(data['rounds'])} rounds)", "paired", short(pick("regression")),
                 short(pick("improvement")), str(len(pick("inconclusive"))),
                 "fail" if pick("regression") else "pass" if v else "nothing comparable"))
head = ("comparison (cand-vs-base)", "repeats", "regressions", "improvements", "inconclusive", "gate")
widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
print("\ngate proof (*10% / *2%: the planted cells; expected: plant flagged as a regression when planted is the"
      " candidate, an improvement the other way; 2% and the plain pair not flagged)")
for row in [head, *rows]:
    print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
if not rows:
    print("(no comparison yet)")
PYEOF
}

parts=("$@")
if (( ${#parts[@]} == 0 )); then parts=(a b ra rb reports ab); fi
i=0
while (( i < ${#parts[@]} )); do
    part=${parts[$i]}
    case "$part" in
        a) bench_run a --profile quick ;;
        b) DETBENCH_TEST_SLOWDOWN=$PLANT bench_run b --profile quick ;;
        ra) bench_run ra --repeats "${REPEATS:-3}" "${GATE[@]}" ;;
        rb) DETBENCH_TEST_SLOWDOWN=$PLANT bench_run rb --repeats "${REPEATS:-3}" "${GATE[@]}" ;;
        reports) compare "$OUT/a.json" "$OUT/b.json"; compare "$OUT/ra.json" "$OUT/rb.json" ;;
        compare)
            if [[ -z "${parts[$((i + 1))]:-}" || -z "${parts[$((i + 2))]:-}" ]]; then
                echo "compare needs two result files: compare A.json B.json" >&2
                exit 2
            fi
            compare "$(resolve "${parts[$((i + 1))]}")" "$(resolve "${parts[$((i + 2))]}")"
            i=$((i + 2)) ;;
        ab) ab ;;
        table) ;;
        *) echo "unknown part '$part'; valid: a, b, ra, rb, reports, compare A B, ab, table" >&2; exit 2 ;;
    esac
    i=$((i + 1))
done
table
if (( ${#FAILED[@]} )); then
    echo "steps that exited non-zero (3 = a regression, 4 = nothing comparable; logs under $OUT): ${FAILED[*]}"
fi
