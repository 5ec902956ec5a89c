# Streamed layers (README "Streaming"): --gpu-memory's bad uses everywhere; on a GPU, kl and gradient
# under a cap small enough to stream the layers (some resident, every state on the GPU) and one that spills
# in-flight states to host memory, against the resident run: kl scores bit-identical (the same arithmetic
# per pass), gradient within 1e-6 relative (the fp64 sums of a streamed batch's windows add in another
# order), the peak GPU memory under the cap; on qwen3-tiny, the MoE fixture and a generated model of the
# Qwen3-0.6B shape (head_dim 128: the fused attention, fp16 kl). Skipped, visibly, without a GPU.
SUITE=gpu-stream
source tests/lib.sh
M=${AUTOQ_TINY:-../shared/models/qwen3-tiny}
D=tests/fixtures/qwen3_tiny_ids.npy
moe=tests/fixtures/qwen3-moe-tiny
moe_ids=tests/fixtures/qwen3_moe_tiny_ids.npy
expect "--gpu-memory needs a size" "a size such as" "$AQ" score $moe --data $moe_ids --method kl --gpu-memory 4X
expect "--gpu-memory needs a GPU" "no CUDA device in use" \
    "$AQ" score $moe --data $moe_ids --method kl --device cpu --gpu-memory 1GiB
expect "search --verify refuses --gpu-memory" "does not stream" \
    "$AQ" search $moe --data $moe_ids --method kl --budget 5 --verify --device cpu --gpu-memory 1GiB
if [ ! -f "$M/config.json" ]; then
    echo "SKIP $SUITE: $M missing"
    exit 0
fi
if ! "$AQ" score $moe --data $moe_ids --num-samples 1 --method kl --device cuda --json "$tmp/probe.json" \
    >/dev/null 2>&1; then
    echo "SKIP $SUITE: streamed layers on the GPU (no CUDA device, or built without nvcc)"
    exit 0
fi
expect "GPTQ refuses --gpu-memory" "GPTQ does not stream" \
    "$AQ" score $moe --data $moe_ids --method kl --device cuda --quantizer gptq --gpu-memory 1GiB

# same A B TOL: every score of A within TOL (relative) of B's, every score finite; TOL 0: bit-identical
same() {
    python3 - "$1" "$2" "$3" <<'PY'
import json, math, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
s = [(x["score"], y["score"]) for x, y in zip(a["groups"], b["groups"]) if x["score"] is not None]
w = max(abs(x - y) / max(abs(y), 1e-300) for x, y in s)
ok = len(s) > 0 and all(math.isfinite(x) for x, _ in s) and w <= float(sys.argv[3])
print(f"worst relative difference {w:.3g} over {len(s)} scores")
sys.exit(0 if ok else 1)
PY
}

# bytes LOG PATTERN: the "(N bytes" figure of the line matching PATTERN
bytes() { grep -F "$2" "$1" | sed -n 's/.*(\([0-9]*\) bytes.*/\1/p' | head -1; }
peak_ok() { # LOG CAP: the reported peak GPU memory below CAP bytes
    local p
    p=$(sed -n 's/.*peak GPU memory \([0-9.]*\) GiB.*/\1/p' "$1" | tail -1)
    python3 -c "import sys; sys.exit(0 if float('$p') * 2**30 < $2 else 1)"
}

# check NAME MODEL IDS METHOD TOL ARGS...: the resident run, then under a cap between the smallest
# streamed plan and the resident one (streams, states on the GPU), then just above the smallest (spills)
check() {
    local name=$1 model=$2 ids=$3 method=$4 tol=$5
    shift 5
    local a=("$AQ" score "$model" --data "$ids" --method "$method" --device cuda "$@")
    if ! "${a[@]}" --json "$tmp/$name.res.json" >"$tmp/$name.res.out" 2>"$tmp/$name.res.log"; then
        fail "$name: the resident run: $(tail -2 "$tmp/$name.res.log")"
        return
    fi
    "${a[@]}" --gpu-memory 1 >/dev/null 2>"$tmp/$name.min.log"
    "${a[@]}" --gpu-memory 1TiB >/dev/null 2>"$tmp/$name.all.log"
    local lo hi
    lo=$(bytes "$tmp/$name.min.log" "needs at least")
    hi=$(bytes "$tmp/$name.all.log" "the model fits")
    if [ -z "$lo" ] || [ -z "$hi" ] || [ "$lo" -ge "$hi" ]; then
        fail "$name: plan sizes: smallest streamed '$lo', resident '$hi'"
        return
    fi
    local mid=$((lo + (hi - lo) / 3)) low=$((lo + lo / 1000)) cap kind
    for kind in mid low; do
        cap=${!kind}
        # mid: two engine batches share each layer's crossing
        if ! AUTOQ_STREAM_BATCHES=$([ $kind = mid ] && echo 2 || echo 0) "${a[@]}" --gpu-memory "$cap" --json "$tmp/$name.$kind.json" >/dev/null 2>"$tmp/$name.$kind.log" ||
            ! grep -q "streaming layers from host memory" "$tmp/$name.$kind.log"; then
            fail "$name: --gpu-memory $cap did not stream: $(tail -2 "$tmp/$name.$kind.log")"
            continue
        fi
        grep -h "streaming layers\|streamed layers\|peak GPU" "$tmp/$name.$kind.log" | sed "s/^/# $name $kind: /"
        local r
        r=$(same "$tmp/$name.$kind.json" "$tmp/$name.res.json" "$tol") && pass "$name, $kind cap: $r" ||
            fail "$name, $kind cap: $r"
        peak_ok "$tmp/$name.$kind.log" "$cap" && pass "$name, $kind cap: peak GPU memory under $cap bytes" ||
            fail "$name, $kind cap: peak over $cap bytes: $(grep 'peak GPU' "$tmp/$name.$kind.log")"
    done
}

# one window per engine batch, so the streamed run's engine batch (the smallest cap's) is the resident one's;
# three windows: a streamed batch of two and one of one
check tiny-kl "$M" $D kl 0 --num-samples 3 --batch-size 1
check tiny-gradient "$M" $D gradient 1e-6 --num-samples 3 --batch-size 1
check tiny-kl-bf16x2 "$M" $D kl 0 --num-samples 3 --batch-size 1 --gpu-gemm bf16x2 --format w4a8,nvfp4
check moe-kl $moe $moe_ids kl 0 --batch-size 1
check moe-gradient $moe $moe_ids gradient 1e-6 --batch-size 1
g=$tmp/g06
if "$AQ" gen "$g" --preset 0.6b --layers 3 --ids "$tmp/g06.npy" --num-samples 3 --seq-len 128 --quiet; then
    check gen06-kl "$g" "$tmp/g06.npy" kl 0 --batch-size 1
    check gen06-gradient "$g" "$tmp/g06.npy" gradient 1e-6 --batch-size 1
else
    fail "gen --preset 0.6b --layers 3"
fi
