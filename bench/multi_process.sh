#!/usr/bin/env bash
# Two processes on one host, one GPU each, meeting through --nccl-init (file: and tcp:), against
# one process on one GPU: scores equal up to summation order, times side by side.
#   bash bench/multi_process.sh OUT MODEL IDS.npy [METHOD]
set -u
out=$1 model=$2 ids=$3 method=${4:-gradient}
AQ=${AQ:-./autoq}
mkdir -p "$out"
$AQ score "$model" --data "$ids" --method "$method" --device cuda --gpus 1 --json "$out/mp_single.json" 2>&1 | grep -E "tokens/s"
for init in "file:/tmp/autoq-rdv-$$" "tcp:127.0.0.1:29517"; do
    for r in 0 1; do
        CUDA_VISIBLE_DEVICES=$r $AQ score "$model" --data "$ids" --method "$method" --device cuda \
            --nccl-init "$init" --rank $r --world-size 2 --json "$out/mp_rank$r.json" 2>&1 | grep -E "rank|tokens/s" | sed "s|^|   [$init] |" &
    done
    wait
    python3 - "$out/mp_single.json" "$out/mp_rank0.json" "$init" <<'PY'
import json, sys
a = [g["score"] or 0 for g in json.load(open(sys.argv[1]))["groups"]]
b = [g["score"] or 0 for g in json.load(open(sys.argv[2]))["groups"]]
w = max(abs(x - y) / max(abs(x), abs(y), 1e-300) for x, y in zip(a, b))
print(f"   [{sys.argv[3]}] worst relative difference, 1 process vs 2 ranks: {w:.2e} over {len(a)} groups")
PY
    rm -f "$out/mp_rank0.json"
done
