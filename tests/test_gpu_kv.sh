#!/usr/bin/env bash
# KV-cache scores on the CUDA engine (README "KV cache and memory budgets", §6): kv_fp8 and kv_nvfp4 groups
# scored with --device cuda against the CPU engine (kl within 1%, gradient within 2%, on groups of at least 1%
# of the largest score of their format) on qwen3-tiny, the MoE, VL and hybrid (Qwen3.5, gated attention)
# fixtures; a linear group has no KV-cache score and a KV-cache group no linear one; --device auto keeps the CPU
# for them until this test has passed on a GPU; --gpu-gemm fp16 refuses them. Skipped, visibly, without a GPU.
set -u
SUITE=gpu-kv
. "$(dirname "$0")/lib.sh"
T=${AUTOQ_TINY:-../shared/models/qwen3-tiny}
skip_without_model "$T"
python3 -c "import numpy as np; np.save('$tmp/tiny_ids.npy', np.load('tests/fixtures/qwen3_tiny_ids.npy')[:4, :128])"
if "$AQ" score "$T" --data "$tmp/tiny_ids.npy" --num-samples 1 --method kl --format kv_fp8 --device cuda \
    --json "$tmp/probe.json" 2>&1 >/dev/null | grep -q "no CUDA device"; then
    echo "SKIP $SUITE: KV-cache scores on the CUDA engine: no CUDA device (or built without nvcc)"
    exit 0
fi

# compare GPU CPU TOL: every KV-cache group's score per format, those >= 1% of the format's largest within TOL
# (relative); the KV-cache groups score KV-cache formats only, the linear groups never them.
compare() {
    python3 - "$1" "$2" "$3" <<'PY'
import json, math, sys
a, b, tol = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), float(sys.argv[3])
kvf = {"kv_fp8", "kv_nvfp4"}
worst, n = 0.0, 0
for x, y in zip(a["groups"], b["groups"]):
    assert x["name"] == y["name"], (x["name"], y["name"])
    kv = x["name"].endswith(".self_attn.kv_cache")
    assert (set(x.get("scores", {})) <= kvf) if kv else not (set(x.get("scores", {})) & kvf), x["name"]
fmts = {f for g in b["groups"] for f in g.get("scores", {}) if f in kvf}
for f in fmts:
    pairs = [(x["scores"][f], y["scores"][f]) for x, y in zip(a["groups"], b["groups"]) if f in y.get("scores", {})]
    assert all(math.isfinite(p) and p >= 0 for p, _ in pairs), f
    top = max(q for _, q in pairs)
    for p, q in pairs:
        if q >= 0.01 * top:
            n += 1
            worst = max(worst, abs(p - q) / q)
print(f"worst relative difference {worst:.3g} on {n} KV-cache groups")
sys.exit(0 if n >= 2 and worst <= tol else 1)
PY
}

for c in "qwen3-tiny:$T:$tmp/tiny_ids.npy:w4a8,kv_fp8,kv_nvfp4" \
    "qwen3-moe-tiny:tests/fixtures/qwen3-moe-tiny:tests/fixtures/qwen3_moe_tiny_ids.npy:w4a8,kv_fp8,kv_nvfp4" \
    "qwen3-vl-tiny:tests/fixtures/qwen3-vl-tiny:tests/fixtures/qwen3_vl_tiny_ids.npy:kv_fp8,kv_nvfp4" \
    "qwen3_5-tiny:tests/fixtures/qwen3_5-tiny:tests/fixtures/qwen3_5_tiny_ids.npy:kv_fp8,kv_nvfp4"; do
    IFS=: read -r name model ids fmts <<<"$c"
    for m in kl:0.01 gradient:0.02; do
        IFS=: read -r method tol <<<"$m"
        "$AQ" score "$model" --data "$ids" --method $method --format $fmts --device cpu --json "$tmp/c.json" \
            >/dev/null 2>"$tmp/err" || {
            fail "$name $method on the CPU: $(tail -2 "$tmp/err")"
            continue
        }
        "$AQ" score "$model" --data "$ids" --method $method --format $fmts --device cuda --json "$tmp/g.json" \
            >/dev/null 2>"$tmp/err" || {
            fail "$name $method on the GPU: $(tail -2 "$tmp/err")"
            continue
        }
        out=$(compare "$tmp/g.json" "$tmp/c.json" $tol 2>&1) &&
            pass "$name: $method KV-cache scores on the GPU within $tol of the CPU ($fmts; $out)" ||
            fail "$name $method KV-cache scores against the CPU: $out"
    done
done

# --device auto scores KV-cache formats on the GPU, as the linears (this test passed on an H100)
"$AQ" score "$T" --data "$tmp/tiny_ids.npy" --num-samples 2 --method gradient --format kv_fp8 --device auto \
    --json "$tmp/a.json" >/dev/null 2>"$tmp/err"
rc=$?
[ $rc -eq 0 ] && grep -q "score: CUDA device" "$tmp/err" && ! grep -q "scoring on the CPU" "$tmp/err" &&
    pass "--device auto scores KV-cache formats on the GPU" ||
    fail "--device auto with kv_fp8: exit $rc: $(grep -E 'CUDA|CPU' "$tmp/err" | head -3)"
expect "KV-cache formats in the fp16 GEMM mode" "not fp16" \
    "$AQ" score "$T" --data "$tmp/tiny_ids.npy" --num-samples 1 --method kl --format kv_fp8 --device cuda --gpu-gemm fp16
