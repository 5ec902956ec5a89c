# The hybrid families (Qwen3.5, Qwen3.5-MoE, Qwen3-Next: Gated DeltaNet layers, gated attention, shared
# experts) on the CUDA engine through the command line: kl and gradient scores of every committed fixture
# against the CPU engine per group within 1% (tests/test_gpu.c's tolerance for bf16x2, these models' default
# for both methods); every format on the dense fixture (2% for 4-bit formats, 15% for 8-bit ones, whose small
# scores move with summation order: measured on one H100, 1.4% and 10.5%); --gpus 1 (the data-parallel path) against one batch
# of both windows; --shard-layers (a pipeline of one stage on one GPU through --nccl-init with one rank, of two
# stages on 2 GPUs) equal to the one-GPU run; eval --device cuda; the fp16 GEMM mode (kl) refused on a generated
# model with heads of 64, and its accuracy there under a test hook (a known limitation). Skipped, visibly, without a GPU (or a second one).
SUITE=gpu-hybrid
source tests/lib.sh
F=tests/fixtures
skip_without_gpu "hybrid models" "$AQ" score $F/qwen3_5-tiny --data $F/qwen3_5_tiny_ids.npy --num-samples 1 \
    --method kl --device cuda --json "$tmp/probe.json"

ngpu=$(nvidia-smi -L 2>/dev/null | grep -c "^GPU")

# compare A B TOL: every group's score within TOL (relative) of B's, all finite
compare() {
    python3 - "$1" "$2" "$3" <<'PY'
import json, math, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
s = [(x["score"], y["score"]) for x, y in zip(a["groups"], b["groups"]) if x["score"] is not None]
w = max(abs(x - y) / max(abs(y), 1e-30) for x, y in s)
ok = len(s) > 0 and all(math.isfinite(x) for x, _ in s) and w <= float(sys.argv[3])
print(f"worst relative difference {w:.3g} over {len(s)} groups")
sys.exit(0 if ok else 1)
PY
}

for m in qwen3_5-tiny:qwen3_5_tiny qwen3_5-moe-tiny:qwen3_5_moe_tiny qwen3-next-tiny:qwen3_next_tiny; do
    IFS=: read -r d s <<<"$m"
    for method in kl gradient; do
        tol=0.01
        "$AQ" score $F/$d --data $F/${s}_ids.npy --method $method --format w4a8 --device cpu \
            --json "$tmp/cpu.json" >/dev/null 2>&1 || fail "$d $method on the CPU"
        if "$AQ" score $F/$d --data $F/${s}_ids.npy --method $method --format w4a8 --device cuda \
            --json "$tmp/gpu.json" >/dev/null 2>"$tmp/err" && r=$(compare "$tmp/gpu.json" "$tmp/cpu.json" $tol); then
            pass "$d $method on the GPU within $tol of the CPU per group: $r"
        else
            fail "$d $method on the GPU: ${r:-} $(tail -3 "$tmp/err")"
        fi
        # --shard-layers: the pipeline's stage code on one GPU (one rank, one stage), the same batch
        if "$AQ" score $F/$d --data $F/${s}_ids.npy --method $method --format w4a8 --device cuda --shard-layers \
            --nccl-init file:"$tmp/nccl_${s}_$method" --rank 0 --world-size 1 --json "$tmp/sh1.json" >/dev/null 2>"$tmp/err" &&
            grep -q "stage 0, windows 0..1" "$tmp/err" && r=$(compare "$tmp/sh1.json" "$tmp/gpu.json" 1e-9); then
            pass "$d $method --shard-layers, one stage on one GPU (--nccl-init, 1 rank) = one GPU (1e-9): $r"
        else
            fail "$d $method --shard-layers one stage: ${r:-} $(tail -3 "$tmp/err")"
        fi
        # the data-parallel path (one thread per GPU, NCCL all-reduce) with one window per batch
        if "$AQ" score $F/$d --data $F/${s}_ids.npy --method $method --format w4a8 --device cuda --gpus 1 \
            --batch-size 1 --json "$tmp/dp.json" >/dev/null 2>"$tmp/err" &&
            r=$(compare "$tmp/dp.json" "$tmp/gpu.json" 1e-4); then
            pass "$d $method --gpus 1 --batch-size 1 = one batch of both windows (1e-4): $r"
        else
            fail "$d $method --gpus 1 --batch-size 1: ${r:-} $(tail -3 "$tmp/err")"
        fi
        # two stages on two GPUs, a window per batch (two micro-batches in the pipeline), against --gpus 1
        if [ "$ngpu" -lt 2 ]; then
            echo "SKIP $SUITE: $d $method --gpus 2 --shard-layers (one CUDA device; tests/test_gpu.c cuts these models into two stages on one GPU)"
        elif "$AQ" score $F/$d --data $F/${s}_ids.npy --method $method --format w4a8 --device cuda --gpus 2 \
            --shard-layers --batch-size 1 --json "$tmp/sh2.json" >/dev/null 2>"$tmp/err" &&
            grep -q "GPU 1: layers" "$tmp/err" && r=$(compare "$tmp/sh2.json" "$tmp/dp.json" 1e-9); then
            pass "$d $method --gpus 2 --shard-layers = one GPU (1e-9): $r"
        else
            fail "$d $method --gpus 2 --shard-layers: ${r:-} $(tail -3 "$tmp/err")"
        fi
    done
done

# every format on the dense fixture (emulated ones included), gradient, against the CPU
all=w4a8,w8a8,fp8,nvfp4,mxfp4,w4a16,w4a8_fp8
"$AQ" score $F/qwen3_5-tiny --data $F/qwen3_5_tiny_ids.npy --method gradient --format $all --device cpu \
    --json "$tmp/cpu.json" >/dev/null 2>&1
if "$AQ" score $F/qwen3_5-tiny --data $F/qwen3_5_tiny_ids.npy --method gradient --format $all --device cuda \
    --json "$tmp/gpu.json" >/dev/null 2>"$tmp/err" && python3 - "$tmp/gpu.json" "$tmp/cpu.json" <<'PY'; then
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
bits = {f["name"]: f["bits"] for f in b["formats"]}
bad = []  # per group and format; tolerances as tests/test_gpu.c's for this fixture: 4-bit 2%, 8-bit 15%
for k in b["groups"][0]["scores"]:
    tol = 0.15 if bits[k] >= 8 else 0.02
    w = max(abs(x["scores"][k] - y["scores"][k]) / max(abs(y["scores"][k]), 1e-30)
            for x, y in zip(a["groups"], b["groups"]) if y["scores"][k] is not None)
    print(f"{k} worst {w:.3g} (tolerance {tol})")
    if not w <= tol:
        bad.append(k)
sys.exit(1 if bad else 0)
PY
    pass "qwen3_5-tiny gradient, all seven formats on the GPU within 2% (4-bit) and 15% (8-bit) of the CPU per group"
else
    fail "qwen3_5-tiny all formats on the GPU: $(tail -3 "$tmp/err")"
fi

# eval --device cuda: RTN's measuring passes on the CUDA engine (README "Streaming") near the CPU engine's: KL within
# 5%, NLL within 0.5% (tests/test_gpu_measure.sh's tolerances)
"$AQ" eval $F/qwen3_5-tiny --data $F/qwen3_5_tiny_ids.npy --format w4a8 --device cpu --json >"$tmp/c.json" 2>/dev/null
if "$AQ" eval $F/qwen3_5-tiny --data $F/qwen3_5_tiny_ids.npy --format w4a8 --device cuda --json \
    >"$tmp/g.json" 2>"$tmp/err" && python3 -c "
import json
c, g = json.load(open('$tmp/c.json')), json.load(open('$tmp/g.json'))
assert g['device'] == 'cuda' and abs(g['kl'] - c['kl']) <= 0.05 * c['kl'], (c, g)
assert abs(g['nll_quantized'] - c['nll_quantized']) <= 0.005 * c['nll_quantized'], (c, g)"; then
    pass "eval --device cuda on qwen3_5-tiny (the CUDA engine, near the CPU's)"
else
    fail "eval --device cuda: $(tail -3 "$tmp/err")"
fi
# --gpu-gemm fp16 (kl): the fixtures' heads of 16 are refused as for Qwen3; on a generated Qwen3.5-MoE with heads of
# 64 it is refused too (exit 2), as a known limitation: fp16's 11-bit GEMM inputs put these models' kl on a noise
# floor. One H100 with the test hook AUTOQ_HYBRID_FP16=1 (Gated DeltaNet, gated attention through the fused
# kernel, experts, shared expert): 6.2% from bf16 hi + lo on the groups of at least 1% of the largest score, 10%
# on all, where Qwen3's fp16 bar is 1%. The GPU path is not at fault: the CPU engine with every linear's input
# rounded to fp16 (a local experiment) moves the same model's kl by 6.0% and 10.2%, the dense qwen3.5-small
# preset's by 6-24% (Qwen3 tiny: 0.5%); rounding only the Gated DeltaNet layers' linears moves it 2-60%, only
# the others 3.5-15% (five generated hybrid models); it grows with the input's rounding (bf16x2 0.2%, fp16 6%, plain
# bf16 up to 66% on the fixtures). One H200: the hook's scores equal that CPU emulation's within 0.6% on 20 of
# the 23 groups (median 0.14%, worst 6.8%), and its tokens per expert equal the emulation's in every layer (both
# move 2 of the CPU's expert assignments in layer 2 and 1 in layer 3).
# The hook's run is checked loosely (finite, within 15% of bf16 hi + lo on those groups: 2.5x the CPU's fp16
# noise), so that the path cannot silently break, and its accuracy printed as a KNOWN line.
expect "--gpu-gemm fp16 with head_dim 16 (a hybrid fixture)" "head_dim 64 or 128" \
    "$AQ" score $F/qwen3_5-tiny --data $F/qwen3_5_tiny_ids.npy --method kl --device cuda --gpu-gemm fp16
# compare16 A B TOL: every group of at least 1% of the largest score within TOL (relative), every score finite
compare16() {
    python3 - "$1" "$2" "$3" <<'PY'
import json, math, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
s = [(x["score"], y["score"]) for x, y in zip(a["groups"], b["groups"]) if x["score"] is not None]
top = max(y for _, y in s)
w = max(abs(x - y) / y for x, y in s if y >= 0.01 * top)
wa = max(abs(x - y) / max(abs(y), 1e-30) for x, y in s)
ok = all(math.isfinite(x) for x, _ in s) and w <= float(sys.argv[3])
print(f"worst relative difference {w:.3g} on {sum(y >= 0.01 * top for _, y in s)} groups, {wa:.3g} on all {len(s)}")
sys.exit(0 if ok else 1)
PY
}
h64=$tmp/h64
"$AQ" gen $h64 --preset qwen3.5-moe-hd64 --seed 3 --ids $h64.npy --num-samples 2 --seq-len 128 >/dev/null 2>&1 ||
    fail "gen qwen3.5-moe-hd64"
"$AQ" score $h64 --data $h64.npy --method kl --device cpu --json "$tmp/h64_cpu.json" >/dev/null 2>&1 ||
    fail "qwen3.5-moe-hd64 kl on the CPU"
"$AQ" score $h64 --data $h64.npy --method kl --device cuda --json "$tmp/h64_x2.json" >/dev/null 2>"$tmp/err" &&
    grep -q "GEMM inputs bf16 hi+lo" "$tmp/err" && pass "hybrid kl's default GEMM inputs stay bf16 hi+lo" ||
    fail "qwen3.5-moe-hd64 kl bf16x2: $(tail -3 "$tmp/err")"
expect "--gpu-gemm fp16 on a hybrid model refused (its noise floor there)" "fp16 GEMM inputs move kl" \
    "$AQ" score $h64 --data $h64.npy --method kl --device cuda --gpu-gemm fp16
r=$(compare16 "$tmp/h64_x2.json" "$tmp/h64_cpu.json" 0.01) && pass "qwen3.5-moe-hd64 bf16x2 kl = CPU kl within 1%: $r" ||
    fail "qwen3.5-moe-hd64 bf16x2 kl against the CPU: $r"
if AUTOQ_HYBRID_FP16=1 "$AQ" score $h64 --data $h64.npy --method kl --device cuda --gpu-gemm fp16 --json "$tmp/h64_16.json" \
    >/dev/null 2>"$tmp/err" && grep -q "GEMM inputs fp16" "$tmp/err" && ! grep -q "overflowed" "$tmp/err"; then
    r=$(compare16 "$tmp/h64_16.json" "$tmp/h64_x2.json" 0.15) &&
        pass "qwen3.5-moe-hd64 fp16 kl (AUTOQ_HYBRID_FP16=1) runs, finite, within 15% of bf16x2: $r" ||
        fail "qwen3.5-moe-hd64 fp16 kl (AUTOQ_HYBRID_FP16=1) against bf16x2: $r"
    echo "KNOWN $SUITE: fp16 GEMM inputs on the hybrid families (why --gpu-gemm fp16 is exit 2 on them): qwen3.5-moe-hd64 kl against bf16x2 $r; against the CPU $(compare16 "$tmp/h64_16.json" "$tmp/h64_cpu.json" 1)"
else
    fail "qwen3.5-moe-hd64 --gpu-gemm fp16: $(tail -3 "$tmp/err")"
fi
