#!/usr/bin/env bash
# eval --recipe / --format and search --verify measured on the CUDA engine (README "Streaming"): on qwen3-tiny,
# the MoE fixture and the hybrid qwen3_5-tiny fixture, a recipe mixing w4a8 and fp8 (search --scores's) measured
#   - on the GPU, resident, against the CPU engine: KL within 5% relative (test_gpu_refine.sh's tolerance: the
#     GPU's unquantized GEMMs take bf16 hi + lo inputs), NLL within 0.5%;
#   - streamed under --gpu-memory against resident: KL and NLL within 1e-9 relative (the same arithmetic per
#     window at the same engine batch): one byte under the resident plan (the default engine batch, some
#     layers resident), and with one window per engine batch (AUTOQ_MEASURE_BATCH=1) at the smallest plan's
#     size (no layer resident) and, two engine batches per streamed batch, a third of the way to the resident
#     plan; the engine's own allocations within each cap;
#   - search --verify the same way (cpu, cuda, cuda under a cap);
#   - qwen3-tiny's GPTQ recipe (GPTQ's GPU pipeline, then its deployed weights measured on the GPU): on the
#     CUDA engine, within 5% (KL) of the CPU engine's measurement of the same --device cpu run's GPTQ.
# Before the GPU part, on any machine: the exit-2 paths of --gpu-memory and --device with eval and search
# --verify and --refine. Skipped, visibly, without a GPU.
set -u
SUITE=gpu_measure
. "$(dirname "$0")/lib.sh"
M=${AUTOQ_TINY:-../shared/models/qwen3-tiny}
F=tests/fixtures
E=$F/qwen3-moe-tiny
EI=$F/qwen3_moe_tiny_ids.npy
expect "eval: a malformed --gpu-memory" "a size such as" \
    $AQ eval $E --data $EI --num-samples 1 --format w4a8 --gpu-memory 4X
expect "eval --device cpu --gpu-memory: it caps nothing" "no CUDA device in use" \
    $AQ eval $E --data $EI --num-samples 1 --format w4a8 --device cpu --gpu-memory 1GiB
expect "eval --gpu-memory without --recipe or --format" "caps the measurement of --recipe or --format" \
    $AQ eval $E --data $EI --num-samples 1 --gpu-memory 1GiB
$AQ score $E --data $EI --num-samples 2 --method kl --format w4a8,fp8 --device cpu --out "$tmp/probe.h5" \
    >/dev/null 2>&1 || fail "score the MoE fixture on the CPU"
expect "search --scores --gpu-memory without --verify" "not used with --scores" \
    $AQ search --scores "$tmp/probe.h5" --budget 6 --gpu-memory 1GiB
expect "search --verify --device cpu --gpu-memory: it caps nothing" "no CUDA device in use" \
    $AQ search --scores "$tmp/probe.h5" --data $EI --budget 6 --verify --device cpu --gpu-memory 1GiB
expect "search --refine --device cpu --gpu-memory: it caps nothing" "search --refine: --gpu-memory: no CUDA device in use" \
    $AQ search --scores "$tmp/probe.h5" --data $EI --budget 6 --refine --refine-windows 1 --device cpu \
    --gpu-memory 1GiB
if ! $AQ eval $E --data $EI --num-samples 1 --format w4a8 --device cuda >/dev/null 2>&1; then # no GPU here
    expect "search --refine --device cuda without a GPU" "search --refine --device cuda: no CUDA device found" \
        $AQ search --scores "$tmp/probe.h5" --data $EI --budget 6 --refine --refine-windows 1 --device cuda
fi
skip_without_gpu "eval and search --verify" $AQ eval $E --data $EI --num-samples 1 --format w4a8 --device cuda \
    --json "$tmp/probe.json"

# near A B TOL_KL TOL_NLL: eval --json (or a recipe's "measured") results A and B agree within the tolerances
near() {
    python3 - "$@" <<'PY'
import json, sys
def get(p):
    j = json.load(open(p))
    j = j.get("measured", j)
    return j["kl"], j["nll_ref"], j["nll_quantized"]
a, b = get(sys.argv[1]), get(sys.argv[2])
tk, tn = float(sys.argv[3]), float(sys.argv[4])
rel = [abs(x - y) / max(abs(y), 1e-300) for x, y in zip(a, b)]
print(f"  kl {a[0]:.9g} vs {b[0]:.9g}, nll_ref {a[1]:.9g} vs {b[1]:.9g}, nll_q {a[2]:.9g} vs {b[2]:.9g}: "
      f"relative {rel[0]:.3g} {rel[1]:.3g} {rel[2]:.3g}")
sys.exit(0 if rel[0] <= tk and rel[1] <= tn and rel[2] <= tn else 1)
PY
}
# bytes LOG PATTERN: the first "(N bytes" figure of the line matching PATTERN; bytes2: the second
bytes() { grep -F "$2" "$1" | sed -n 's/[^(]*(\([0-9]*\) bytes.*/\1/p' | head -1; }
bytes2() { grep -F "$2" "$1" | sed -n 's/.*(\([0-9]*\) bytes.*(\([0-9]*\) bytes.*/\2/p' | head -1; }
# device JSON DEV STREAMED: eval --json's device and streamed
device() {
    python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); sys.exit(not (j["device"] == sys.argv[2] and str(j["streamed"]).lower() == sys.argv[3]))' "$@"
}
# capped NAME LOG CAP: the engine's own allocations within CAP
capped() {
    local al
    al=$(bytes "$2" "allocated by the engine")
    [ -n "$al" ] && [ "$al" -le "$3" ] && pass "$1: the engine's allocations $al within --gpu-memory $3" ||
        fail "$1: the engine's allocations '$al' over $3: $(tail -n 2 "$2")"
}

models=("qwen3-moe-tiny $E $EI 64 3" "qwen3_5-tiny $F/qwen3_5-tiny $F/qwen3_5_tiny_ids.npy 24 2")
if [ -f "$M/config.json" ]; then
    models=("qwen3-tiny $M $F/qwen3_tiny_ids.npy 256 4" "${models[@]}")
else
    echo "SKIP $SUITE: qwen3-tiny: $M missing"
fi
for m in "${models[@]}"; do
    read -r name dir ids T n <<<"$m"
    d=(--data "$ids" --seq-len "$T" --num-samples "$n")
    # a recipe mixing w4a8 and fp8 (and bf16): search --scores's, measured on the CPU there
    if ! $AQ score "$dir" "${d[@]}" --method kl --format w4a8,fp8 --device cuda --out "$tmp/$name.h5" \
        >/dev/null 2>"$tmp/$name.log" ||
        ! $AQ search --scores "$tmp/$name.h5" "${d[@]}" --budget 6 --verify --device cpu \
            --out "$tmp/$name.v.cpu.json" >/dev/null 2>"$tmp/$name.log"; then
        fail "$name: score and search: $(tail -n 2 "$tmp/$name.log")"
        continue
    fi
    e=("$AQ" eval "$dir" "${d[@]}" --recipe "$tmp/$name.v.cpu.json" --json)
    "${e[@]}" --device cpu >"$tmp/$name.cpu.json" 2>"$tmp/$name.cpu.log" &&
        "${e[@]}" --device cuda >"$tmp/$name.res.json" 2>"$tmp/$name.res.log" ||
        { fail "$name: eval --recipe: $(tail -n 2 "$tmp/$name.cpu.log" "$tmp/$name.res.log")"; continue; }
    device "$tmp/$name.cpu.json" cpu false && device "$tmp/$name.res.json" cuda false &&
        near "$tmp/$name.res.json" "$tmp/$name.cpu.json" 0.05 0.005 &&
        pass "$name: eval --recipe on the GPU (resident) equals the CPU engine's within 5% (KL), 0.5% (NLL)" ||
        fail "$name: eval --recipe on the GPU against the CPU"
    # the plan sizes: the smallest streamed plan (one window per engine batch) and the resident one
    "${e[@]}" --device cuda --gpu-memory 1 >/dev/null 2>"$tmp/$name.min.log"
    lo=$(bytes "$tmp/$name.min.log" "needs at least")
    hi=$(bytes2 "$tmp/$name.min.log" "needs at least")
    if [ -z "$lo" ] || [ -z "$hi" ] || [ "$lo" -ge "$hi" ]; then
        fail "$name: plan sizes: smallest streamed '$lo', resident '$hi': $(tail -n 1 "$tmp/$name.min.log")"
        continue
    fi
    pass "$name: a cap below the smallest plan is exit 2 naming it ($lo bytes; resident $hi)"
    # run TAG CAP [ENV...]: eval under --gpu-memory CAP, streamed, within 1e-9 of the resident REF (res or res1)
    run() {
        local tag=$1 cap=$2 ref=$3
        shift 3
        if env "$@" "${e[@]}" --device cuda --gpu-memory "$cap" >"$tmp/$name.$tag.json" 2>"$tmp/$name.$tag.log"; then
            device "$tmp/$name.$tag.json" cuda true && near "$tmp/$name.$tag.json" "$tmp/$name.$ref.json" 1e-9 1e-9 &&
                pass "$name: eval streamed ($tag, --gpu-memory $cap $*) equals the resident measurement within 1e-9" ||
                fail "$name: eval streamed ($tag) against resident: $(grep -h "streaming\|measured on" "$tmp/$name.$tag.log")"
            grep -h "streaming layers\|streamed layers\|measured on" "$tmp/$name.$tag.log" | sed "s/^/# $name $tag: /"
            capped "$name $tag" "$tmp/$name.$tag.log" "$cap"
        else
            fail "$name: eval --gpu-memory $cap ($tag): $(tail -n 2 "$tmp/$name.$tag.log")"
        fi
    }
    run high $((hi - 1)) res
    AUTOQ_MEASURE_BATCH=1 "${e[@]}" --device cuda >"$tmp/$name.res1.json" 2>/dev/null ||
        fail "$name: eval resident, one window per engine batch"
    run min "$lo" res1 AUTOQ_MEASURE_BATCH=1 AUTOQ_STREAM=1
    grep -q " 0 of [0-9]* layers resident" "$tmp/$name.min.log" &&
        pass "$name: the smallest plan streams every layer" || fail "$name: the smallest plan keeps layers resident"
    run mid $((lo + (hi - lo) / 3)) res1 AUTOQ_MEASURE_BATCH=1 AUTOQ_STREAM_BATCHES=2 AUTOQ_STREAM=1
    grep -q "batches of 2 x 1 windows" "$tmp/$name.mid.log" &&
        pass "$name: two engine batches per streamed batch" || fail "$name: the mid cap's streamed batch"
    # search --verify: the same recipe measured on the GPU, resident and streamed
    s=("$AQ" search --scores "$tmp/$name.h5" "${d[@]}" --budget 6 --verify --device cuda)
    if "${s[@]}" --out "$tmp/$name.v.res.json" >/dev/null 2>"$tmp/$name.vres.log" &&
        "${s[@]}" --gpu-memory $((hi - 1)) --out "$tmp/$name.v.str.json" >/dev/null 2>"$tmp/$name.vstr.log"; then
        grep -q "measured on the CUDA engine" "$tmp/$name.vres.log" &&
            near "$tmp/$name.v.res.json" "$tmp/$name.v.cpu.json" 0.05 0.005 &&
            pass "$name: search --verify on the GPU equals the CPU engine's within 5% (KL), 0.5% (NLL)" ||
            fail "$name: search --verify on the GPU against the CPU"
        grep -q "streaming layers from host memory" "$tmp/$name.vstr.log" &&
            near "$tmp/$name.v.str.json" "$tmp/$name.v.res.json" 1e-9 1e-9 &&
            pass "$name: search --verify streamed equals resident within 1e-9" ||
            fail "$name: search --verify streamed against resident"
        capped "$name search --verify" "$tmp/$name.vstr.log" $((hi - 1))
    else
        fail "$name: search --verify --device cuda: $(tail -n 2 "$tmp/$name.vres.log" "$tmp/$name.vstr.log")"
    fi
done

# GPTQ: the deployed weights of the GPU pipeline measured on the GPU (its codes may differ from the CPU's GPTQ
# by the Hessians' rounding, so the looser tolerance of the two engines and the two GPTQ runs: 10%)
if [ -f "$M/config.json" ]; then
    g=("$AQ" eval "$M" --data $F/qwen3_tiny_ids.npy --seq-len 256 --num-samples 2 --format w4a8 --quantizer gptq --json)
    if "${g[@]}" --device cuda >"$tmp/gq.cuda.json" 2>"$tmp/gq.log" && "${g[@]}" --device cpu >"$tmp/gq.cpu.json" 2>>"$tmp/gq.log"; then
        device "$tmp/gq.cuda.json" cuda false && near "$tmp/gq.cuda.json" "$tmp/gq.cpu.json" 0.1 0.005 &&
            pass "qwen3-tiny: eval --quantizer gptq measured on the GPU, within 10% of the CPU's" ||
            fail "qwen3-tiny: eval --quantizer gptq on the GPU against the CPU"
    else
        fail "qwen3-tiny: eval --quantizer gptq: $(tail -n 2 "$tmp/gq.log")"
    fi
fi
