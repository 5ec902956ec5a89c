#!/usr/bin/env bash
# On a machine with several GPUs: 1 GPU against all GPUs, data parallel (NCCL fp64 all-reduce) and
# with the layers sharded over them (--shard-layers, ncclSend/ncclRecv between stages): scores
# equal to the one-GPU run, wall times, per-GPU peak memory and busy fraction.
#   [GEMM=bf16|bf16x2] bash bench/multi_gpu.sh OUT [TINY_MODEL]
set -u
out=${1:-bench/out}
tiny=${2:-../shared/models/qwen3-tiny}
AQ=${AQ:-./autoq}
work=${WORK:-/tmp/autoq-bench}
mkdir -p "$out" "$work"
n=$(nvidia-smi -L | wc -l)
nvidia-smi --query-gpu=name --format=csv,noheader | head -1
cmp_scores() { python3 - "$1" "$2" <<'PY'
import json, sys
a = [g["score"] or 0 for g in json.load(open(sys.argv[1]))["groups"]]
b = [g["score"] or 0 for g in json.load(open(sys.argv[2]))["groups"]]
w = max(abs(x - y) / max(abs(x), abs(y), 1e-300) for x, y in zip(a, b))
print(f"   worst relative difference 1 vs N GPUs: {w:.2e} over {len(a)} groups " + ("(<= 1e-6: ok)" if w <= 1e-6 else "(> 1e-6: FAIL)"))
PY
}
gemm=${GEMM:+--gpu-gemm $GEMM}
run() { # label model ids method batch
    for mode in 1 "$n" shard; do
        local g=$mode flag=""
        [ "$mode" = shard ] && g=$n flag=--shard-layers
        $AQ score "$2" --data "$3" --method "$4" --device cuda --gpus "$g" --batch-size "$5" $gemm $flag \
            --json "$out/multi_$1_$4_$mode.json" 2>&1 | grep -E "tokens/s|GPU [0-9]|peak GPU" |
            sed "s/^/   $g GPU(s) $flag: /"
    done
    echo "   data parallel:"
    cmp_scores "$out/multi_$1_$4_1.json" "$out/multi_$1_$4_$n.json"
    echo "   layers sharded:"
    cmp_scores "$out/multi_$1_$4_1.json" "$out/multi_$1_$4_shard.json"
}
if [ -f "$tiny/config.json" ]; then
    echo "== qwen3-tiny, 8 x 256"
    for m in kl gradient; do run tiny "$tiny" tests/fixtures/qwen3_tiny_ids.npy $m 2; done
fi
m8=$work/8b
[ -f "$m8/model.safetensors" ] || $AQ gen "$m8" --preset 8b --seed 1
python3 -c "import numpy as np; np.save('$m8/ids.npy', np.random.default_rng(1).integers(0, 151936, (128, 512), dtype=np.int32))"
python3 -c "import numpy as np; np.save('$m8/ids16.npy', np.load('$m8/ids.npy')[:16])"
echo "== Qwen3-8B shape, gradient, 128 x 512, batch 4"
run 8b "$m8" "$m8/ids.npy" gradient 4
echo "== Qwen3-8B shape, kl, 16 x 512, batch 4"
run 8b "$m8" "$m8/ids16.npy" kl 4
