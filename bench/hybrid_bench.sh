#!/usr/bin/env bash
# Hybrid-family scoring (issue 26) on one GPU, in one call of at most 10 minutes:
#  1. accuracy: autoq's GPU scores (both --gpu-gemm modes) against float32 PyTorch (TF32 off) per group on
#     a 4-layer model of the Qwen3.5-35B-A3B shape (3 Gated DeltaNet layers, 1 gated full attention, every
#     layer 256 experts + a shared expert);
#  2. speed: the Qwen3.5-35B-A3B shape (`autoq gen --preset qwen3.5-35b-a3b`: 40 layers, 67 GiB of bf16,
#     written into /dev/shm), autoq (gradient over N windows of 512 tokens, kl over KL_N and over KL_N2
#     windows) against plain PyTorch + transformers 5.17 (bench/torch_hybrid_scores.py, bf16:
#     flash-linear-attention's kernels when fla imports, grouped_mm experts, SDPA, kl with prefix reuse at
#     its fastest batch on PT_KL_GROUPS groups (0: all) x PT_KL_N windows, extrapolated to all groups x
#     KL_N, gradient at its largest batch that fits).
# Then one table and the accuracy summary (bench/moe_report.py), each step's time and peak memory.
#   AQ=path/to/autoq PY=python3 FLA_WHL=path/to/fla_core-0.6.0-py3-none-any.whl bash bench/hybrid_bench.sh OUTDIR
# Environment: FLA_WHL, the fla-core wheel (and einops', space-separated), installed with pip --no-deps when
# fla does not import (fla needs einops and triton); BUDGET seconds for the whole run (570); WORK checkpoint folder (/dev/shm/autoq-hybrid
# when it has room for 70 GiB, else /tmp/autoq-hybrid); N (128), KL_N (16), KL_N2 (128; 0 skips it), PT_KL_N (KL_N),
# PT_KL_GROUPS (0: all), ACC_N (8) windows; ACCURACY=0 or SPEED=0 skips that part; KEEP=1 keeps the generated model and reuses one already there; TORCH=0 skips PyTorch; PT_BATCH largest PyTorch gradient batch tried (4; 8 on cards
# over 100 GB); LAYERS (the preset's) to bench fewer layers; for a dry run on a machine without a GPU:
# DEVICE=cpu PRESET=qwen3.5-moe-small.
set -u
out=${1:?usage: AQ=path/to/autoq PY=python3 bash bench/hybrid_bench.sh OUTDIR}
AQ=${AQ:?set AQ to the autoq binary}
PY=${PY:-python3}
budget=${BUDGET:-570}
n=${N:-128}
kl_n=${KL_N:-16}
pt_kl_n=${PT_KL_N:-$kl_n}
pt_kl_groups=${PT_KL_GROUPS:-0}
acc_n=${ACC_N:-8}
dev=${DEVICE:-cuda}
kl_n2=${KL_N2:-128}
preset=${PRESET:-qwen3.5-35b-a3b}
layers=${LAYERS:+--layers $LAYERS}
bench=$(cd "$(dirname "$0")" && pwd)
t_start=$(date +%s)
mkdir -p "$out" || exit 2
# flash-linear-attention's kernels for the PyTorch baseline (transformers uses them when fla imports)
if ! $PY -c "import fla" >/dev/null 2>&1 && [ -n "${FLA_WHL:-}" ]; then
    # shellcheck disable=SC2086  # FLA_WHL may list several wheels (fla-core and einops, which fla imports)
    $PY -m pip install --no-deps -q $FLA_WHL >"$out/fla_install.log" 2>&1 || tail -2 "$out/fla_install.log"
fi
echo "== fla: $($PY -c 'import fla; print("fla", fla.__version__, "imports")' 2>&1 | tail -1)"
. "$(dirname "$0")/steps.sh"
bench_begin qwen3.5-35b-a3b hybrid 70 torch_gradient kl_autoq_all

# 1. Accuracy: a 4-layer model of the same shape, autoq on the GPU against float32 PyTorch (transformers' own
# Gated DeltaNet: GATED_DELTA=torch)
GATED_DELTA=torch bench_accuracy torch_hybrid_scores.py

# 2. Speed: the full shape.
[ "${SPEED:-1}" = 0 ] && { echo "== report"; $PY "$bench/moe_report.py" "$out"; exit 0; }
m=$work/$preset
echo "== speed: $preset shape, windows of 512 tokens, gradient $n windows, kl $kl_n windows"
if [ "${KEEP:-0}" = 1 ] && [ -f "$m/config.json" ] && [ -f "$work/ids.npy" ]; then
    echo "   gen: kept from an earlier run in $m"
else
    step gen 150 "$AQ" gen "$m" --preset "$preset" $layers --seed 1 --ids "$work/ids.npy" --num-samples "$n" --seq-len 512 &&
        grep -h "gen: wrote $m " "$out/gen.log" | sed 's/^/   /'
fi
aq_score gradient_autoq 180 "$m" "$work/ids.npy" gradient --gpu-gemm bf16
aq_score kl_autoq 150 "$m" "$work/ids.npy" kl --num-samples "$kl_n"
[ "$kl_n2" -gt 0 ] && aq_score kl_autoq_all 300 "$m" "$work/ids.npy" kl --num-samples "$kl_n2"
grep -h "tokens/s\|GPU memory" "$out/gradient_autoq.log" "$out/kl_autoq.log" "$out/kl_autoq_all.log" 2>/dev/null | sed 's/^/   /'
# PyTorch: kl first (prefix reuse, its fastest batch), then the gradient until the budget ends; each with its
# own deadline before the time-out, so that it writes what it measured.
# The gradient with transformers' own chunked Gated DeltaNet (GATED_DELTA=torch): fla 0.6.0's backward refuses
# Triton < 3.7.1 on Hopper (torch 2.11 brings 3.5), fla issue #640; kl (forward only) with fla's kernels.
if [ "${TORCH:-1}" != 0 ]; then
    tl=$(( ($(left) - 60) / 2 ))
    [ "$tl" -lt 1 ] && tl=1
    step torch 100000 "$PY" "$bench/torch_hybrid_scores.py" "$m" "$work/ids.npy" --method kl --dtype bfloat16 \
        --device "$dev" --num-samples "$pt_kl_n" --max-groups "$pt_kl_groups" --extrapolate-windows "$kl_n" \
        --time-limit "$tl" --out "$out/kl_torch.json"
    tl=$(($(left) - 45))
    [ "$tl" -lt 1 ] && tl=1
    GATED_DELTA=torch step torch_gradient 100000 "$PY" "$bench/torch_hybrid_scores.py" "$m" "$work/ids.npy" \
        --method gradient --dtype bfloat16 --device "$dev" --batch-size "$pt_batch" --num-samples "$n" \
        --time-limit "$tl" --out "$out/gradient_torch.json"
    grep -h "^(b)" "$out/torch.log" "$out/torch_gradient.log" | cut -c1-400 | sed 's/^/   /'
fi
[ "${KEEP:-0}" = 1 ] || rm -rf "$m" "$work/ids.npy"

echo "== report"
$PY "$bench/moe_report.py" "$out"
echo "== total $(( $(date +%s) - t_start )) s"
