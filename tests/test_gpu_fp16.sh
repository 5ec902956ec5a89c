# kl's default GEMM inputs on the GPU, fp16 (README "GPU scoring"), through the command line: the option's
# bad uses; on a GPU, the default run against the CPU engine, and a model whose activations overflow
# fp16, which must be scored again with bf16 hi + lo (a warning, the same scores as --gpu-gemm bf16x2).
# Skipped, visibly, without a GPU.
SUITE=gpu-fp16
source tests/lib.sh
M=${AUTOQ_TINY:-../shared/models/qwen3-tiny}
D=tests/fixtures/qwen3_tiny_ids.npy
moe=tests/fixtures/qwen3-moe-tiny
expect "--gpu-gemm takes fp16, bf16x2 or bf16" "must be fp16, bf16x2 or bf16" \
    "$AQ" score $moe --data tests/fixtures/qwen3_moe_tiny_ids.npy --method kl --gpu-gemm fp32
expect "--gpu-gemm fp16 is for kl" "is for --method kl" \
    "$AQ" score $moe --data tests/fixtures/qwen3_moe_tiny_ids.npy --method gradient --gpu-gemm fp16
skip_without_model "$M"
skip_without_gpu "fp16 kl" "$AQ" score $M --data $D --num-samples 1 --method kl --device cuda --json "$tmp/probe.json"
expect "--gpu-gemm fp16 with head_dim 16 (the MoE fixture)" "head_dim 64 or 128" \
    "$AQ" score $moe --data tests/fixtures/qwen3_moe_tiny_ids.npy --method kl --device cuda --gpu-gemm fp16

# compare A B TOL: every group of at least 1% of the largest score within TOL (relative), every score finite
compare() {
    python3 - "$1" "$2" "$3" <<'PY'
import json, math, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
s = [(x["score"], y["score"]) for x, y in zip(a["groups"], b["groups"]) if x["score"] is not None]
top = max(y for _, y in s)
w = max(abs(x - y) / y for x, y in s if y >= 0.01 * top)
ok = all(math.isfinite(x) for x, _ in s) and w <= float(sys.argv[3])
print(f"worst relative difference {w:.3g} on {sum(y >= 0.01 * top for _, y in s)} groups")
sys.exit(0 if ok else 1)
PY
}

"$AQ" score $M --data $D --num-samples 4 --method kl --device cpu --json "$tmp/cpu.json" >/dev/null 2>&1 ||
    fail "kl on the CPU"
"$AQ" score $M --data $D --num-samples 4 --method kl --device cuda --json "$tmp/gpu.json" 2>"$tmp/err" >/dev/null ||
    fail "kl on the GPU: $(tail -3 "$tmp/err")"
grep -q "GEMM inputs fp16" "$tmp/err" && pass "kl's default GEMM inputs on the GPU are fp16" ||
    fail "kl's default GEMM inputs: $(grep 'GEMM inputs' "$tmp/err")"
out=$(compare "$tmp/gpu.json" "$tmp/cpu.json" 0.01) && pass "fp16 kl within 1% of the CPU on groups >= 1% of the largest ($out)" ||
    fail "fp16 kl against the CPU: $out"

# a mixture-of-experts model fp16 can run (2 layers of the Qwen3-30B-A3B shape: head_dim 128, 128 experts,
# top-8): the GPU's default kl against the CPU engine
"$AQ" gen "$tmp/moe" --preset 30b-a3b --layers 2 --seed 3 --ids "$tmp/moe_ids.npy" --num-samples 2 --seq-len 128 \
    >/dev/null 2>&1 || fail "gen 30b-a3b --layers 2"
"$AQ" score "$tmp/moe" --data "$tmp/moe_ids.npy" --method kl --device cpu --json "$tmp/moe_cpu.json" >/dev/null 2>&1 ||
    fail "MoE kl on the CPU"
"$AQ" score "$tmp/moe" --data "$tmp/moe_ids.npy" --method kl --device cuda --json "$tmp/moe_gpu.json" 2>"$tmp/err" \
    >/dev/null || fail "MoE kl on the GPU: $(tail -3 "$tmp/err")"
grep -q "GEMM inputs fp16" "$tmp/err" && pass "MoE kl's default GEMM inputs on the GPU are fp16" ||
    fail "MoE kl's default GEMM inputs: $(grep 'GEMM inputs' "$tmp/err")"
out=$(compare "$tmp/moe_gpu.json" "$tmp/moe_cpu.json" 0.01) &&
    pass "MoE fp16 kl within 1% of the CPU on groups >= 1% of the largest ($out)" || fail "MoE fp16 kl against the CPU: $out"
rm -rf "$tmp/moe"

# layer 0's post-attention norm weight x 20000: the MLP's activations reach 1e8, beyond fp16 (not fp32)
cp -r "$M" "$tmp/big"
python3 - "$tmp/big" <<'PY' || fail "patching the checkpoint"
import json, struct, sys, glob
name = "model.layers.0.post_attention_layernorm.weight"
for f in glob.glob(sys.argv[1] + "/*.safetensors"):
    with open(f, "r+b") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        h = json.loads(fh.read(n))
        if name not in h:
            continue
        t = h[name]
        a, b = t["data_offsets"]
        fmt = {"BF16": (2, lambda v: struct.pack("<H", struct.unpack("<I", struct.pack("<f", v))[0] >> 16)),
               "F32": (4, lambda v: struct.pack("<f", v))}[t["dtype"]]
        fh.seek(8 + n + a)
        fh.write(b"".join(fmt[1](20000.0) for _ in range((b - a) // fmt[0])))
PY
"$AQ" score "$tmp/big" --data $D --num-samples 2 --method kl --device cuda --json "$tmp/big16.json" 2>"$tmp/err" >/dev/null &&
    grep -q "overflowed" "$tmp/err" && pass "fp16 overflow: scored again with bf16x2, with a warning" ||
    fail "fp16 overflow: $(tail -3 "$tmp/err")"
"$AQ" score "$tmp/big" --data $D --num-samples 2 --method kl --device cuda --gpu-gemm bf16x2 --json "$tmp/big2.json" \
    >/dev/null 2>&1 || fail "bf16x2 on the patched model"
out=$(compare "$tmp/big16.json" "$tmp/big2.json" 1e-6) && pass "fp16 overflow: the scores of --gpu-gemm bf16x2 ($out)" ||
    fail "fp16 overflow against bf16x2: $out"
