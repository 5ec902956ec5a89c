#!/usr/bin/env bash
# On the GPU machine, in one run: (a) autoq, (b) plain PyTorch with the same semantics
# (bench/torch_scores.py), (c) ModelOpt auto_quantize (bench/modelopt_scores.py), on generated
# Qwen3-0.6B- and Qwen3-8B-shaped checkpoints (random bf16 weights, real safetensors), kl method.
#   bash bench/gpu_bench.sh OUTDIR [N_06B] [N_8B]     (windows of 512 tokens; defaults 128 and 16)
set -u
out=${1:-bench/out}
n06=${2:-128}
n8=${3:-16}
AQ=${AQ:-./autoq}
mkdir -p "$out"
work=${WORK:-/tmp/autoq-bench}
mkdir -p "$work"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
run() { # shape n batch
    local shape=$1 n=$2 b=$3 m=$work/$1
    [ -f "$m/model.safetensors" ] || $AQ gen "$m" --preset "$shape" --seed 1 --ids "$m/ids.npy" --num-samples "$n" --seq-len 512
    echo "== $shape: $n x 512 tokens, batch $b"
    for g in bf16x2 bf16; do
        t0=$(date +%s.%N)
        $AQ score "$m" --data "$m/ids.npy" --method kl --device cuda --batch-size "$b" --gpu-gemm "$g" \
            --json "$out/${shape}_autoq_$g.json" 2>&1 | grep -E "tokens/s|GPU mem" | sed "s/^/(a) $g /"
        echo "(a) $g wall $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s including load"
    done
    python3 bench/torch_scores.py "$m" "$m/ids.npy" --method kl --batch-size "$b" --out "$out/${shape}_torch.json" 2>&1 | grep "^(b)"
    python3 bench/modelopt_scores.py "$m" "$m/ids.npy" --method kl_div --batch-size "$b" --out "$out/${shape}_modelopt.json" 2>&1 | grep "^(c)"
    python3 bench/compare_scores.py "$out" "$shape"
}
run 0.6b "$n06" 8
run 8b "$n8" 4
