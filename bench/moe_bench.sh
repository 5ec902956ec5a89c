#!/usr/bin/env bash
# Mixture-of-experts scoring on one GPU, in one call of at most 10 minutes:
#  1. accuracy: autoq's GPU scores (both --gpu-gemm modes) against float32 PyTorch (TF32 off) on a
#     4-layer model of the Qwen3-30B-A3B shape;
#  2. speed: the Qwen3-30B-A3B shape (48 layers, 128 experts, top-8; 57 GiB of bf16, written by
#     `autoq gen --preset 30b-a3b` into /dev/shm), autoq against plain PyTorch + transformers
#     (bench/torch_moe_scores.py, bf16): gradient over N windows of 512 tokens, kl over KL_N windows
#     (autoq's default kl, fp16 GEMMs; PyTorch kl with prefix reuse at its fastest batch, on
#     PT_KL_GROUPS groups (0: all) x PT_KL_N windows, extrapolated to all groups x KL_N by each pass's
#     cost in decoder layers).
# Then one table and the accuracy summary (bench/moe_report.py). Outputs (JSON, logs) stay small.
#   AQ=path/to/autoq PY=python3 bash bench/moe_bench.sh OUTDIR
# Environment: BUDGET seconds for the whole run (570); WORK checkpoint folder (/dev/shm/autoq-moe when
# it has room for 60 GiB, else /tmp/autoq-moe); N (128), KL_N (16), PT_KL_N (KL_N), PT_KL_GROUPS (0: all),
# ACC_N (8) windows; PT_BATCH largest PyTorch gradient batch tried (4; 8 on cards over 100 GB; it halves
# on running out of memory); for a dry run on a machine without a GPU: DEVICE=cpu PRESET=moe-small.
set -u
out=${1:?usage: AQ=path/to/autoq PY=python3 bash bench/moe_bench.sh OUTDIR}
AQ=${AQ:?set AQ to the autoq binary}
PY=${PY:-python3}
budget=${BUDGET:-570}
n=${N:-128}
kl_n=${KL_N:-16}
pt_kl_n=${PT_KL_N:-$kl_n}
pt_kl_groups=${PT_KL_GROUPS:-0}
acc_n=${ACC_N:-8}
dev=${DEVICE:-cuda}
preset=${PRESET:-30b-a3b}
bench=$(cd "$(dirname "$0")" && pwd)
t_start=$(date +%s)
mkdir -p "$out" || exit 2
. "$(dirname "$0")/steps.sh"
bench_begin 30b-a3b moe 60

# 1. Accuracy: a 4-layer model of the same shape, autoq on the GPU against float32 PyTorch
bench_accuracy torch_moe_scores.py

# 2. Speed: the full shape.
m=$work/$preset
echo "== speed: $preset shape, windows of 512 tokens, gradient $n windows, kl $kl_n windows"
step gen 150 "$AQ" gen "$m" --preset "$preset" --seed 1 --ids "$work/ids.npy" --num-samples "$n" --seq-len 512 &&
    grep -h "gen: wrote $m " "$out/gen.log" | sed 's/^/   /'
aq_score gradient_autoq 180 "$m" "$work/ids.npy" gradient --gpu-gemm bf16
aq_score kl_autoq 150 "$m" "$work/ids.npy" kl --num-samples "$kl_n"
grep -h "tokens/s\|GPU memory" "$out/gradient_autoq.log" "$out/kl_autoq.log" 2>/dev/null | sed 's/^/   /'
# PyTorch: one load for both methods; kl first (prefix reuse, its fastest batch), then the gradient until
# the budget ends.
tl=$(($(left) - 45)) # its own deadline, before the time-out: it writes what it measured
[ "$tl" -lt 1 ] && tl=1
step torch 100000 "$PY" "$bench/torch_moe_scores.py" "$m" "$work/ids.npy" --method kl,gradient --dtype bfloat16 \
    --device "$dev" --batch-size "$pt_batch" --num-samples "$n" --kl-num-samples "$pt_kl_n" \
    --max-groups "$pt_kl_groups" --extrapolate-windows "$kl_n" --time-limit "$tl" --out "$out/{method}_torch.json"
grep -h "^(b)" "$out/torch.log" | cut -c1-400 | sed 's/^/   /'
rm -rf "$m" "$work/ids.npy"

echo "== report"
$PY "$bench/moe_report.py" "$out"
echo "== total $(( $(date +%s) - t_start )) s"
