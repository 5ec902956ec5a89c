#!/usr/bin/env bash
# The hybrid families on the GPU engine at the Qwen3.5-35B-A3B shape (bench/make_hybrid_shape.py: LAYERS of
# its 40 layers, default 4 = 3 Gated DeltaNet + 1 full attention, every layer sparse), random weights and
# token ids: gradient and kl scores (W4A8, their default GEMM inputs bf16x2), time, tokens/s, peak GPU memory
# and where the gradient's GPU time went (AUTOQ_GPU_PROFILE=1). Bounded to about 110 s on one H100.
#   bash bench/hybrid_shape.sh [WORKDIR]      (N_GRAD, N_KL: windows of 512 tokens, default 64 and 16)
set -u
AQ=${AQ:-./autoq}
work=${1:-/tmp/autoq-hybrid-bench}
m=$work/q35a3b-${LAYERS:-4}l
ng=${N_GRAD:-64}
nk=${N_KL:-16}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
t0=$(date +%s)
if [ ! -f "$m/model.safetensors" ]; then
    N=$ng T=512 timeout 50 python3 "$(dirname "$0")/make_hybrid_shape.py" "$m" "${LAYERS:-4}" | tail -1 ||
        { echo "hybrid_shape: making the checkpoint failed"; exit 1; }
fi
echo "checkpoint ready in $(($(date +%s) - t0)) s"
row() { # method windows secs file
    local l
    l=$(grep -E "tokens in" "$4" | tail -1)
    printf "%-9s %3s x 512  %-9s %-16s %s\n" "$1" "$2" "$(sed -E 's/.* in ([0-9.]+s).*/\1/' <<<"$l")" \
        "$(sed -E 's/.*\(([0-9]+ tokens\/s)\).*/\1/' <<<"$l")" "$(grep -oE 'peak GPU memory [0-9.]+ GiB' "$4" | tail -1)"
}
AUTOQ_GPU_PROFILE=1 timeout 35 "$AQ" score "$m" --data "$m/ids.npy" --num-samples "$ng" --method gradient \
    --device cuda --batch-size 4 --json "$work/grad.json" >/dev/null 2>"$work/grad.txt" ||
    echo "gradient: exit $? (timed out or failed): $(tail -2 "$work/grad.txt")"
timeout 30 "$AQ" score "$m" --data "$m/ids.npy" --num-samples "$nk" --method kl --device cuda --batch-size 4 \
    --json "$work/kl.json" >/dev/null 2>"$work/kl.txt" || echo "kl: exit $? (timed out or failed): $(tail -2 "$work/kl.txt")"
echo "== Qwen3.5-35B-A3B shape, ${LAYERS:-4} of 40 layers, W4A8, one GPU"
echo "method    windows    time      throughput       memory"
row gradient "$ng" x "$work/grad.txt"
row kl "$nk" x "$work/kl.txt"
grep "gpu profile" "$work/grad.txt"
echo "total $(($(date +%s) - t0)) s"
