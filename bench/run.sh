#!/usr/bin/env bash
# make bench: CPU forward throughput (qwen3-tiny and a generated Qwen3-0.6B-shaped
# checkpoint), scoring wall time and memory, tokenizer throughput.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
mkdir -p bench/out
make -s "$BUILD/bench/bench_forward" "$BUILD/bench/bench_gated_delta"
echo "== CPU: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')"
if [ -f ../shared/models/qwen3-tiny/config.json ]; then
    "$BUILD/bench/bench_forward" ../shared/models/qwen3-tiny 256 8
    for m in kl gradient; do
        /usr/bin/time -f "  score $m: %e s wall, %M KB peak RSS" ./autoq score ../shared/models/qwen3-tiny \
            --data tests/fixtures/qwen3_tiny_ids.npy --method $m --quiet >/dev/null
    done
fi
[ -f bench/out/qwen3-0.6b/model.safetensors ] || ./autoq gen bench/out/qwen3-0.6b --preset 0.6b --seed 1
"$BUILD/bench/bench_forward" bench/out/qwen3-0.6b 256 2
"$BUILD/bench/bench_gated_delta" 512 2 # the Gated DeltaNet core, a Qwen3.5-35B-A3B-like layer
bash bench/tokenize_bench.sh
