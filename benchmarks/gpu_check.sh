#!/usr/bin/env bash
# One-shot check for a GPU machine (issue "Fast stream learning"): the CUDA tests, then one AugMem job at 224x224
# with and without the caches, in fp32 and in bf16 + channels_last, reporting images/s and peak GPU memory per path.
# About 5 minutes on one H100. Results go under $OUT (default results/gpu_check).
#
#   bash benchmarks/gpu_check.sh            (from the repository root, environment installed)
set -euo pipefail
OUT=${OUT:-results/gpu_check}
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
N_TRAIN=${N_TRAIN:-500}
WORKERS=${WORKERS:-8}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
"$PY" -m pytest -q -p no:cacheprovider tests/train/test_cuda.py 2>&1 | tee "$OUT/test_cuda.txt"
for mode in fp32 amp; do
  extra=()
  [ "$mode" = amp ] && extra=(--amp --channels-last)
  "$PY" -m benchmarks.bench_augmem_features --device cuda --n-train "$N_TRAIN" --workers "$WORKERS" "${extra[@]}" \
    --out "$OUT/augmem_features_224_$mode.json" 2>&1 | tee "$OUT/bench_$mode.txt"
done
echo "wrote $OUT"
