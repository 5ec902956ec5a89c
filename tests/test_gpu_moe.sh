# Mixture-of-experts models on the GPU through the command line (README "Several GPUs"): one GPU
# against the CPU, data parallel and layer-sharded runs against one GPU, and --shard-layers with
# --nccl-init: four processes as two "hosts" of two GPUs (a pipeline per host, data parallel
# across hosts) against one GPU. Expert coverage counts must agree everywhere. Skipped, visibly,
# without the GPUs each part needs.
SUITE=gpu-moe
source tests/lib.sh
moe=tests/fixtures/qwen3-moe-tiny
ids=tests/fixtures/qwen3_moe_tiny_ids.npy
expect "--stages without --shard-layers and --nccl-init" "--stages goes with" \
    "$AQ" score $moe --data $ids --method kl --device cuda --stages 2
expect "--stages must divide --world-size" "must divide --world-size" \
    "$AQ" score $moe --data $ids --method kl --device cuda --shard-layers --stages 3 --nccl-init tcp:127.0.0.1:1 --rank 0 --world-size 4
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c "^GPU")
skip_without_gpu "MoE scoring" "$AQ" score $moe --data $ids --method kl --device cuda --json "$tmp/probe.json"

# compare A B TOL [coverage]: every group's score within TOL (relative); with coverage, the same
# tokens per expert.
compare() {
    python3 - "$1" "$2" "$3" "${4:-}" <<'PY'
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
tol = float(sys.argv[3])
w = max(abs(x["score"] - y["score"]) / max(abs(x["score"]), abs(y["score"]), 1e-300)
        for x, y in zip(a["groups"], b["groups"]) if x["score"] is not None)
ok = w <= tol and [g["name"] for g in a["groups"]] == [g["name"] for g in b["groups"]]
if sys.argv[4]:
    ok = ok and {k: v["tokens"] for k, v in a["coverage"].items()} == {k: v["tokens"] for k, v in b["coverage"].items()}
print(f"worst relative difference {w:.3g} (tolerance {tol})")
sys.exit(0 if ok else 1)
PY
}

check() { # NAME A B TOL [coverage]
    local name=$1
    shift
    local out
    if out=$(compare "$@"); then pass "$name: $out"; else fail "$name: $out"; fi
}

for m in kl gradient; do
    "$AQ" score $moe --data $ids --method $m --device cpu --json "$tmp/cpu_$m.json" 2>/dev/null
    "$AQ" score $moe --data $ids --method $m --device cuda --gpus 1 --batch-size 2 --json "$tmp/one_$m.json" \
        2>"$tmp/one_$m.log"
    # kl: window 0 holds a near-tied routing decision that the GPU resolves the other way in one
    # group's pass (tests/test_gpu.c), 2.7% on that group; every other group is within 0.1%.
    # gradient: plain bf16 by default (tests/test_gpu.c: up to 1.3% on these fixtures).
    tol=0.02
    [ $m = kl ] && tol=0.03
    # coverage: plain bf16 moves m by ~1e-3 before the later routers, enough to flip a near tie
    cov=cov
    [ $m = gradient ] && cov=
    check "$m: one GPU within $tol (relative) of the CPU per group${cov:+, same expert coverage}" "$tmp/cpu_$m.json" "$tmp/one_$m.json" $tol $cov
    if grep -q "tokens per expert" "$tmp/one_$m.log"; then pass "$m: expert coverage reported on stderr"; else fail "$m: no expert coverage on stderr"; fi
    if [ "$ngpu" -lt 2 ]; then
        echo "SKIP $SUITE: $m on 2 GPUs (one CUDA device)"
        continue
    fi
    "$AQ" score $moe --data $ids --method $m --device cuda --gpus 2 --batch-size 1 --json "$tmp/dp_$m.json" 2>/dev/null
    check "$m: data parallel over 2 GPUs = one GPU" "$tmp/one_$m.json" "$tmp/dp_$m.json" 1e-9 cov
    "$AQ" score $moe --data $ids --method $m --device cuda --gpus 2 --shard-layers --batch-size 2 \
        --json "$tmp/sh_$m.json" 2>/dev/null
    check "$m: layers sharded over 2 GPUs = one GPU" "$tmp/one_$m.json" "$tmp/sh_$m.json" 1e-9 cov
    if [ "$ngpu" -lt 4 ]; then
        echo "SKIP $SUITE: $m with --shard-layers --nccl-init on 2 hosts x 2 GPUs (fewer than 4 CUDA devices)"
        continue
    fi
    port=$((29600 + RANDOM % 300))
    for r in 0 1 2 3; do
        "$AQ" score $moe --data $ids --method $m --device cuda --shard-layers --stages 2 --batch-size 1 \
            --nccl-init tcp:127.0.0.1:$port --rank $r --world-size 4 --json "$tmp/r${r}_$m.json" \
            2>"$tmp/r${r}_$m.log" &
    done
    wait
    check "$m: 4 processes, a 2-GPU pipeline per host, 2 hosts = one GPU" "$tmp/one_$m.json" "$tmp/r0_$m.json" 1e-9 cov
    n=$(cat "$tmp"/r?_$m.log | grep -c "pipeline [01], stage [01]")
    if [ "$n" -eq 4 ]; then pass "$m: 4 ranks ran as 2 pipelines of 2 stages"; else fail "$m: $n of 4 ranks reported their stage"; fi
done
