#!/usr/bin/env bash
# Accuracy on the GPU machine: autoq's GPU scores (each GEMM input precision) against plain
# PyTorch in float32 (TF32 off), the reference that bf16 rounding does not blur, on a few windows
# of a generated checkpoint (bench/gpu_bench.sh's). Usage:
#   [METHODS="kl gradient"] [MODES="fp16 bf16x2 bf16"] bash bench/gpu_accuracy.sh OUTDIR SHAPE N
set -u
out=${1:-bench/out}
shape=${2:-8b}
n=${3:-2}
AQ=${AQ:-./autoq}
m=${WORK:-/tmp/autoq-bench}/$shape
mkdir -p "$out" "$(dirname "$m")"
[ -f "$m/model.safetensors" ] || $AQ gen "$m" --preset "$shape" --seed 1
python3 -c "import numpy as np; np.save('$m/acc_ids.npy', np.random.default_rng(2).integers(0, 151936, ($n, 512), dtype=np.int32))"
for method in ${METHODS:-kl gradient}; do
    echo "== $shape: $n x 512 tokens, $method, against PyTorch float32"
    for g in $([ $method = kl ] && echo "${MODES:-fp16 bf16x2 bf16}" || echo "bf16x2 bf16"); do
        $AQ score "$m" --data "$m/acc_ids.npy" --method $method --device cuda --batch-size "$n" --gpu-gemm $g \
            --json "$out/acc_${shape}_${method}_autoq_$g.json" 2>&1 | grep -E "error" 
    done
    python3 bench/torch_scores.py "$m" "$m/acc_ids.npy" --method $method --batch-size "$n" --dtype float32 \
        --out "$out/acc_${shape}_${method}_torch.json" 2>&1 | grep -E "^\(b\)|Error"
    python3 bench/compare_scores.py "$out" "acc_${shape}_${method}"
done
