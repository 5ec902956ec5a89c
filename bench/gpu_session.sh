#!/usr/bin/env bash
# What of this tree has not run on a GPU yet (README "Not done yet"), in one call of under 10 minutes on one
# H100 or H200: phase 1 runs the new GPU tests in parallel lanes while the full-size checkpoints are generated;
# phase 2 runs the timings alone on the GPU. Each step is cut to the time left (BUDGET seconds, default 560),
# so the call always returns its logs.
#   Phase 1: tests/test_gpu_stream.sh's hybrid, MoE and qwen3-tiny sections (streaming the Gated DeltaNet
#            families in slots laid out by the resident upload; the gradient's buffers sized before its first
#            streamed pass), build/tests/test_gpu's kept-activation part (AUTOQ_GPU_TEST_KEEP=1:
#            AUTOQ_GRAD_KEEP=1 bit-identical to the recompute) and tests/test_gpu_keep.sh (the command line),
#            build/tests/test_gpu_ops and tests/test_gpu_hybrid.sh (the refactored Gated DeltaNet prep and
#            loss kernels).
#   Phase 2: bench/stream_bench.sh on the Qwen3-8B shape under 4GiB (issue 27), bench/grad_keep_bench.sh on it
#            (issue 29), GPTQ quantize of it under 6GiB against the resident run (the same checkpoint); then the
#            Qwen3-30B-A3B shape under 16GiB and its MoE kl with engine batches of 16 windows.
#   AQ=build/autoq bash bench/gpu_session.sh OUTDIR      (the build's CPPFLAGS / LDFLAGS / BLAS_DIR set)
# Environment: TESTS=0 skips phase 1's test lanes (the checkpoint is generated alone, faster); PARTS selects
# phase 2's shapes ("8b 30b", default both; "30b" alone for a second call when one call cannot hold both);
# KEEP=0 skips the kept-activation bench (its time goes to the streaming runs).
set -u
out=${1:?usage: bash bench/gpu_session.sh OUTDIR}
budget=${BUDGET:-560}
W=${WORK:-/dev/shm/autoq-session}
L=$out/logs
mkdir -p "$L" "$W" || exit 2
# two threads a process beside the test lanes; every core for gen alone (it fills the weights in parallel)
threads=2
[ "${TESTS:-1}" = 1 ] || threads=$(nproc)
export AQ=${AQ:-build/autoq} OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads}
t0=$(date +%s)
el() { echo "[$(($(date +%s) - t0)) s]"; }
left() { echo $((${1:-$budget} - ($(date +%s) - t0))); } # seconds to the mark ${1} from the start
cnt() { echo "$1: rc $2, $(grep -c ^PASS "$L/$1.log") pass, $(grep -c ^FAIL "$L/$1.log") fail, $(grep -c ^SKIP "$L/$1.log") skip $(el)"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1
make -s -j"$(nproc)" autoq build/tests/test_gpu build/tests/test_gpu_ops >"$L/build.log" 2>&1 ||
    { tail -30 "$L/build.log"; exit 1; }
echo "build $(el)"

p1=$(($(date +%s) - t0 + ${PHASE1:-100})) # phase 1 ends here (seconds from the start)
parts=${PARTS:-8b 30b}
has() { case " $parts " in *" $1 "*) return 0 ;; esac; return 1; }
tests=${TESTS:-1}
has 8b && ( # the 30B-A3B checkpoint comes after the 8B is deleted: both at once may not fit a /dev/shm of half the RAM
    "$AQ" gen "$W/8b" --preset 8b --ids "$W/8b.npy" --num-samples 128 --seq-len 512 --quiet --force
    echo "8B checkpoint generated $(el)"
) >"$L/gen.txt" 2>&1 &
[ "$tests" = 1 ] && (
    STREAM_ONLY=hybrid timeout "$(left "$p1")" bash tests/test_gpu_stream.sh >"$L/stream_hybrid.log" 2>&1
    cnt stream_hybrid $?
    if [ "$(left "$p1")" -gt 20 ]; then # the 0.6B shape's case (head_dim 128), cut by time in earlier runs
        STREAM_ONLY=gen06 timeout "$(left "$p1")" bash tests/test_gpu_stream.sh >"$L/stream_gen06.log" 2>&1
        cnt stream_gen06 $?
    fi
) >"$L/lane1.txt" 2>&1 &
[ "$tests" = 1 ] && (
    AUTOQ_GPU_TEST_KEEP=1 timeout 70 build/tests/test_gpu >"$L/test_gpu_keep.log" 2>&1
    cnt test_gpu_keep $?
    if [ "$(left "$p1")" -gt 20 ]; then
        STREAM_ONLY=moe timeout "$(left "$p1")" bash tests/test_gpu_stream.sh >"$L/stream_moe.log" 2>&1
        cnt stream_moe $?
    fi
) >"$L/lane2.txt" 2>&1 &
[ "$tests" = 1 ] && (
    timeout 80 build/tests/test_gpu_ops >"$L/test_gpu_ops.log" 2>&1
    cnt test_gpu_ops $?
    timeout "$(left "$p1")" bash tests/test_gpu_hybrid.sh >"$L/test_gpu_hybrid.log" 2>&1
    cnt test_gpu_hybrid $?
) >"$L/lane3.txt" 2>&1 &
[ "$tests" = 1 ] && (
    timeout "$(left "$p1")" bash tests/test_gpu_keep.sh >"$L/test_gpu_keep_sh.log" 2>&1
    cnt test_gpu_keep_sh $?
    if [ "$(left "$p1")" -gt 20 ]; then
        STREAM_ONLY=tiny timeout "$(left "$p1")" bash tests/test_gpu_stream.sh >"$L/stream_tiny.log" 2>&1
        cnt stream_tiny $?
    fi
) >"$L/lane4.txt" 2>&1 &
wait
cat "$L/gen.txt" "$L"/lane*.txt 2>/dev/null
echo "phase 1 $(el)"
grep -h "^FAIL\|^KNOWN" "$L"/*.log 2>/dev/null | cut -c1-400 | head -30

stream() { # SHAPE:CAP UNTIL: bench/stream_bench.sh on one shape, cut at UNTIL seconds from the start
    echo "== full-size streaming, $1 (bench/stream_bench.sh)"
    SHAPES=$1 WORK=$W timeout "$(left "$2")" bash bench/stream_bench.sh "$out/stream" 2>&1 | tee -a "$out/stream.txt"
}
if has 8b; then
    e8=$((budget - 170)) # the 8B part ends here, or near the end when the 30B-A3B does not follow
    has 30b || e8=$((budget - 10))
    stream 8b:4GiB $((e8 - ${KEEP:-1} * 80 - 160))
    if [ "${KEEP:-1}" = 1 ]; then
        echo "== the gradient's kept activations (bench/grad_keep_bench.sh) $(el)"
        MODEL=$W/8b IDS=$W/8b.npy PROFILE_N=32 timeout "$(left $((e8 - 20)))" bash bench/grad_keep_bench.sh "$out/keep" 128 4 \
            2>&1 | tee "$out/keep.txt" | cut -c1-400
    fi
    E=$W/8b
    if [ "$(left "$e8")" -gt 60 ]; then
        echo "== GPTQ quantize of the 8B shape under --gpu-memory 6GiB against the resident run $(el)"
        "$AQ" search "$E" --data "$E.npy" --num-samples 2 --method kl --budget 6 --device cuda --out "$out/r8.json" \
            >"$L/search8.log" 2>&1 || tail -3 "$L/search8.log"
        for c in res cap; do
            a=()
            [ $c = cap ] && a=(--gpu-memory 6GiB)
            timeout "$(left "$e8")" "$AQ" quantize "$E" --recipe "$out/r8.json" --data "$E.npy" --num-samples 16 \
                --quantizer gptq --device cuda "${a[@]}" --out "$W/q8_$c" --force >"$L/q8_$c.log" 2>&1
            echo "quantize $c rc $? $(el): $(grep -h 'gptq:\|peak GPU\|pool\|walk' "$L/q8_$c.log" | tr '\n' ' ' | cut -c1-600)"
        done
        same=1
        for f in "$W"/q8_res/*; do cmp -s "$f" "$W/q8_cap/$(basename "$f")" || { same=0; echo "differs: $(basename "$f")"; }; done
        echo "GPTQ of the 8B under 6GiB, the same checkpoint as resident: $same"
        rm -rf "$W/q8_res" "$W/q8_cap"
    fi
    rm -rf "$W/8b" "$W/8b.npy"
fi
has 30b || { echo "end $(el)"; exit 0; }
"$AQ" gen "$W/30b-a3b" --preset 30b-a3b --ids "$W/30b-a3b.npy" --num-samples 128 --seq-len 512 --quiet --force
echo "30B-A3B checkpoint generated $(el)"
stream 30b-a3b:16GiB $((budget - 20))
if [ "$(left)" -gt 45 ]; then
    M=$W/30b-a3b
    timeout "$(left)" "$AQ" score "$M" --data "$M.npy" --num-samples 16 --method kl --device cuda --batch-size 16 \
        >/dev/null 2>"$L/moe_b16.log"
    echo "MoE kl, engine batches of 16 windows, rc $?: $(grep -h 'tokens/s\|TFLOP/s\|peak GPU' "$L/moe_b16.log" |
        sed 's/autoq: score: //' | tr '\n' ' ' | cut -c1-300)"
fi
rm -f "$out"/stream/*.json "$out"/keep/*.json
echo "end $(el)"
