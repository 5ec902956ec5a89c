#!/usr/bin/env bash
# On the GPU machine, in one run: (a) autoq, (b) plain PyTorch with the same semantics
# (bench/torch_scores.py), (c) ModelOpt auto_quantize (bench/modelopt_scores.py), on generated
# Qwen3-0.6B- and Qwen3-8B-shaped checkpoints (random bf16 weights, real safetensors).
#   METHOD=kl|gradient [SHAPES="0.6b 8b"] [MODELOPT="0.6b 8b", empty for none] [TORCH_BATCH=auto|B] [TORCH_COMPILE=1]
#   [MODES="fp16 bf16x2 bf16": autoq's GEMM inputs for kl] [NO_TORCH=1]
#   bash bench/gpu_bench.sh OUTDIR [N_06B] [N_8B]
# (windows of 512 tokens; MODELOPT lists the shapes that also run (c))
set -u
out=${1:-bench/out}
n06=${2:-128}
n8=${3:-16}
method=${METHOD:-kl}
shapes=${SHAPES:-0.6b 8b}
mo_shapes=${MODELOPT-0.6b 8b} # empty: none
mo_method=$([ "$method" = kl ] && echo kl_div || echo gradient)
AQ=${AQ:-./autoq}
mkdir -p "$out"
work=${WORK:-/tmp/autoq-bench}
mkdir -p "$work"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
run() { # shape n batch
    local shape=$1 n=$2 b=$3 m=$work/$1
    [ -f "$m/model.safetensors" ] || $AQ gen "$m" --preset "$shape" --seed 1
    python3 -c "import numpy as np; np.save('$m/ids.npy', np.random.default_rng(1).integers(0, 151936, ($n, 512), dtype=np.int32))"
    echo "== $shape: $n x 512 tokens, batch $b, $method"
    for g in $([ "$method" = kl ] && echo "${MODES:-fp16 bf16x2 bf16}" || echo "bf16x2 bf16"); do
        t0=$(date +%s.%N)
        $AQ score "$m" --data "$m/ids.npy" --method "$method" --device cuda --batch-size "$b" --gpu-gemm "$g" \
            --json "$out/${shape}_${method}_autoq_$g.json" 2>&1 | grep -E "tokens/s|GPU mem|TFLOP" | sed "s/^/(a) $g /"
        echo "(a) $g wall $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s including load"
    done
    # (b) at its own fastest batch size (TORCH_BATCH=auto, the default) and, with TORCH_COMPILE=1, compiled
    [ -n "${NO_TORCH:-}" ] || python3 bench/torch_scores.py "$m" "$m/ids.npy" --method "$method" \
        --batch-size "${TORCH_BATCH:-auto}" ${TORCH_COMPILE:+--compile} --out "$out/${shape}_${method}_torch.json" \
        2>&1 | grep -E "^\(b\)|Error"
    case " $mo_shapes " in *" $shape "*) ;; *) echo "(c) modelopt: not run for $shape"; python3 bench/compare_scores.py "$out" "${shape}_${method}"; return ;; esac
    python3 bench/modelopt_scores.py "$m" "$m/ids.npy" --method "$mo_method" --batch-size "$b" --out "$out/${shape}_${method}_modelopt.json" 2>&1 | grep -E "^\(c\)|Error"
    python3 bench/compare_scores.py "$out" "${shape}_${method}"
}
for s in $shapes; do
    if [ "$s" = 0.6b ]; then run 0.6b "$n06" 8; else run 8b "$n8" 4; fi
done
