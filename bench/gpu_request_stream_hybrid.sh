#!/bin/bash
# One GPU call for issue 27's streaming of the hybrid families, which has not run on a GPU yet (README "Not
# done yet"): `OUT=DIR bash bench/gpu_request_stream_hybrid.sh` from any folder, on one NVIDIA GPU with nvcc,
# cuBLAS, h5py and AUTOQ_TINY (qwen3-tiny) set; about 3 minutes with the build. It builds autoq, then runs
# tests/test_gpu_stream.sh's hybrid section (generated qwen3.5-small, qwen3.5-moe-small, qwen3-next-small: kl
# and gradient under caps that stream, with and without spilled states, against the resident run; the
# engine's allocations under each cap and within the planner's count), then, with the time left, its MoE and
# qwen3-tiny sections (their slots unchanged; the planner's slot alignment and the gradient's buffers sized
# before the first layer are new there). Summary on stdout, every output under $OUT.
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/streamhyb-out}
mkdir -p "$OUT/logs"
t0=$(date +%s)
make -s -j16 autoq >"$OUT/build.txt" 2>&1 || { tail -40 "$OUT/build.txt"; exit 1; }
echo "build $(($(date +%s) - t0)) s"
nvidia-smi -L | head -2
STREAM_ONLY=hybrid KEEP_LOGS="$OUT/logs" AQ=build/autoq timeout 110 bash tests/test_gpu_stream.sh \
    >"$OUT/hybrid.txt" 2>&1
echo "hybrid rc $?: $(grep -c ^PASS "$OUT/hybrid.txt") PASS, $(grep -c ^FAIL "$OUT/hybrid.txt") FAIL"
grep -E "^(FAIL|SKIP|KNOWN)" "$OUT/hybrid.txt" | cut -c1-400
grep "^PASS" "$OUT/hybrid.txt" | grep -v "gpu-memory" | cut -c1-150 | head -45
grep "streaming layers" "$OUT/hybrid.txt" | sed 's/autoq: score: streaming layers from host memory://' | cut -c1-230 | head -12
echo "t $(($(date +%s) - t0)) s"
for sec in moe tiny; do # the new slots on the older models: the MoE fixture's dense layer among sparse ones first
    left=$((175 - ($(date +%s) - t0)))
    [ $left -gt 15 ] || break
    STREAM_ONLY=$sec AQ=build/autoq timeout $left bash tests/test_gpu_stream.sh >"$OUT/$sec.txt" 2>&1
    echo "$sec rc $?: $(grep -c ^PASS "$OUT/$sec.txt") PASS, $(grep -c ^FAIL "$OUT/$sec.txt") FAIL"
    grep -E "^(FAIL|SKIP)" "$OUT/$sec.txt" | cut -c1-300
done
echo "t $(($(date +%s) - t0)) s"
