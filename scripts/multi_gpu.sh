#!/usr/bin/env bash
# The multi-GPU check on a 2- or 4-GPU machine (<= 9 minutes): NCCL sweep, DDP training and data-parallel
# inference of RetinaNet and Faster R-CNN (bf16, 8 images/GPU) on 1, 2, 4 GPUs with scaling efficiency,
# and the plain DDP fidelity reference. JSON under $OUT (environment.json, nccl_sweep.json, cells.json, plain_ddp.json).
set -euo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python -m bench.distributed.multi_gpu --out "${OUT:-multi_gpu_out}" "$@"
