#!/bin/bash
# The GPU check of the gradient's kept activations (issue 29), in one call of about 3.5 minutes on one H100
# (not run yet: make AUTOQ_GRAD_KEEP's default GRAD_KEEP_AUTO in engine/gpu_backward.cu once it passes).
# OUT=dir bash bench/grad_keep_gpu_check.sh: (1) bit-identity AUTOQ_GRAD_KEEP=1 vs =0 on qwen3-tiny, qwen3-vl-tiny,
# qwen3-moe-tiny (1 dense layer kept of 3) and qwen3_5-tiny (hybrid: none kept), bf16 and bf16x2,
# peaks printed (build/tests/test_gpu, AUTOQ_GPU_TEST_KEEP=1); (2) the Qwen3-8B shape gradient 128 x 512 with
# AUTOQ_GRAD_KEEP=0 and =1: time, TFLOP/s (required and executed), peak GPU memory, scores compared; the
# profile of 32 windows with the keep; (3) the command-line test tests/test_gpu_keep.sh if time is left.
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/grad8b-out}
mkdir -p "$OUT"
t0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
make -s -j16 autoq build/tests/test_gpu >"$OUT/build.txt" 2>&1 || { tail -40 "$OUT/build.txt"; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
AUTOQ_GPU_TEST_KEEP=1 timeout 60 build/tests/test_gpu >"$OUT/test_gpu_keep.txt" 2>&1
echo "test_gpu (keep part) rc $?: $(grep -c ^PASS "$OUT/test_gpu_keep.txt") PASS, $(grep -c ^FAIL "$OUT/test_gpu_keep.txt") FAIL"
cut -c1-300 "$OUT/test_gpu_keep.txt"
echo "t $(( $(date +%s) - t0 )) s"
timeout 90 build/autoq gen /dev/shm/g8 --preset 8b --ids /dev/shm/g8.npy --num-samples 128 --seq-len 512 --quiet \
    >"$OUT/gen.txt" 2>&1
echo "gen rc $? t $(( $(date +%s) - t0 )) s"
AQ=build/autoq MODEL=/dev/shm/g8 IDS=/dev/shm/g8.npy PROFILE_N=32 timeout 110 bash bench/grad_keep_bench.sh "$OUT/bench" 128 4 \
    2>&1 | tee "$OUT/bench.txt" | cut -c1-400
echo "t $(( $(date +%s) - t0 )) s"
left=$(( 205 - ($(date +%s) - t0) ))
if [ "$left" -gt 15 ]; then
    AQ=build/autoq timeout "$left" bash tests/test_gpu_keep.sh >"$OUT/test_gpu_keep_sh.txt" 2>&1
    echo "test_gpu_keep.sh rc $?"
    cut -c1-300 "$OUT/test_gpu_keep_sh.txt"
else
    echo "test_gpu_keep.sh: not run ($left s left)"
fi
echo "t $(( $(date +%s) - t0 )) s"
