#!/usr/bin/env bash
# The multi-GPU check on a machine with 2+ GPUs, in two parts that each fit a 10-minute call:
#   scripts/multi_gpu_check.sh nccl    envcheck's NCCL sweep on all GPUs and on 2; the plain DDP loop (the
#                                      fidelity reference) on 2 and all GPUs
#   scripts/multi_gpu_check.sh cells   the DDP training and data-parallel inference cells of RetinaNet and
#                                      Faster R-CNN (bf16, 8 images per GPU) on 1, 2, 4 GPUs through pytest
#                                      bench/, then the plain DDP loop on all GPUs again (same sitting)
# Results go to $OUT (default multi-gpu-results/): at most 8 files.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
out=${OUT:-multi-gpu-results}
mkdir -p "$out"
# NVLink multicast stays off on shared machines (every process started from here inherits these)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
gpus=$(python3 -c 'import torch; print(torch.cuda.device_count())')
counts=1
for c in 2 4 8; do (( c <= gpus )) && counts+=",$c"; done

plain_ddp() {  # the plainest DDP loop on $1 GPUs, appended to plain-ddp.jsonl with a label
    local tmp
    tmp=$(mktemp)
    python3 -m detbench.bench.tools.plain_ddp --model retinanet_resnet50_fpn --gpus "$1" --batch 8 --precision bf16 \
        --json "$tmp" && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d["label"]=sys.argv[2]; print(json.dumps(d))' \
        "$tmp" "$2" >>"$out/plain-ddp.jsonl"
    rm -f "$tmp"
}

case "${1:-}" in
nccl)
    envcheck --only nccl --require-nccl --timeout 300 --json-out "$out/envcheck-nccl-${gpus}gpu.json"
    CUDA_VISIBLE_DEVICES=0,1 envcheck --only nccl --require-nccl --timeout 300 --json-out "$out/envcheck-nccl-2gpu.json"
    plain_ddp 2 before
    (( gpus > 2 )) && plain_ddp "$gpus" before
    ;;
cells)
    python3 -m pytest bench/ -p no:cacheprovider -q --models retinanet_resnet50_fpn,fasterrcnn_resnet50_fpn \
        --modes train,infer --compile eager --precisions amp-bf16 --batch-sizes 8 --gpus "$counts" \
        --benchmark-json="$out/multi-gpu.json" --detbench-journal="$out/multi-gpu.journal.jsonl" 2>&1 | tail -40
    plain_ddp "$gpus" after
    ;;
*)
    echo "usage: scripts/multi_gpu_check.sh nccl|cells" >&2
    exit 2
    ;;
esac
