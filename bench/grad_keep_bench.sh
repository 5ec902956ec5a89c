#!/usr/bin/env bash
# The gradient's kept activations (AUTOQ_GRAD_KEEP=1) against the recompute (=0), README "The GPU engine":
# the Qwen3-8B shape (random bf16 weights from `autoq gen`), N windows of 512 tokens in batches of B, one GPU.
# Prints per mode the time, both TFLOP/s counts (the work required, and executed with the recompute), the peak
# GPU memory, and whether the two modes' scores are bit-identical; AUTOQ_GPU_PROFILE=1 on PROFILE_N windows
# with the keep (0: none).
#   bash bench/grad_keep_bench.sh OUTDIR [N] [B]     (MODEL=dir IDS=file.npy; AQ=./autoq)
set -u
out=${1:-bench/out}
n=${2:-128}
b=${3:-4}
AQ=${AQ:-./autoq}
m=${MODEL:-/dev/shm/g8}
ids=${IDS:-/dev/shm/g8.npy}
mkdir -p "$out"
[ -f "$m/config.json" ] || $AQ gen "$m" --preset 8b --ids "$ids" --num-samples "$n" --seq-len 512 --quiet ||
    exit 1
for k in 0 1; do
    AUTOQ_GRAD_KEEP=$k $AQ score "$m" --data "$ids" --num-samples "$n" --method gradient --device cuda \
        --batch-size "$b" --json "$out/keep$k.json" >/dev/null 2>"$out/keep$k.log"
    echo "AUTOQ_GRAD_KEEP=$k rc $?"
    grep -E "keeps|tokens/s|GPU mem|TFLOP|rror" "$out/keep$k.log" | sed "s/^/  /"
done
python3 - "$out/keep0.json" "$out/keep1.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
sa = [g["score"] for g in a["groups"]]
sb = [g["score"] for g in b["groups"]]
print(f"scores keep=1 vs keep=0: {'bit-identical' if sa == sb else 'DIFFER'} ({len(sa)} groups)")
PY
pn=${PROFILE_N:-32}
if [ "$pn" -gt 0 ]; then
    AUTOQ_GPU_PROFILE=1 AUTOQ_GRAD_KEEP=1 $AQ score "$m" --data "$ids" --num-samples "$pn" --method gradient \
        --device cuda --batch-size "$b" --json "$out/prof_keep.json" >/dev/null 2>"$out/prof_keep.log"
    echo "profile, keep, $pn windows: rc $?"
    grep -E "profile|tokens/s|TFLOP" "$out/prof_keep.log" | sed "s/^/  /"
fi
