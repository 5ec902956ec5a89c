#!/usr/bin/env bash
# search --refine end to end (README §7, §8; issue 28): on the VL and MoE fixtures and qwen3-tiny, formats
# w4a8,nvfp4,mxfp4,fp8,w4a16, budgets 4.25, 4.5, 4.8 and 5.5 bits, the refined recipe's measured KL on
# held-out windows is never worse than the plain recipe's; the gain at each budget is printed. Scores from 2
# windows of 32 tokens, the held-out windows are other rows of the same ids file (small, for CI time).
set -u
SUITE=refine
. "$(dirname "$0")/lib.sh"
FMT=w4a8,nvfp4,mxfp4,fp8,w4a16
models=("qwen3-vl-tiny tests/fixtures/qwen3-vl-tiny tests/fixtures/qwen3_vl_tiny_ids.npy"
    "qwen3-moe-tiny tests/fixtures/qwen3-moe-tiny tests/fixtures/qwen3_moe_tiny_ids.npy")
if [ -d ../shared/models/qwen3-tiny ]; then
    models+=("qwen3-tiny ../shared/models/qwen3-tiny tests/fixtures/qwen3_tiny_ids.npy")
else
    echo "SKIP refine: qwen3-tiny: ../shared/models/qwen3-tiny missing"
fi
for m in "${models[@]}"; do
    read -r name dir ids <<<"$m"
    python3 -c "import numpy as np, sys; a = np.load(sys.argv[1]); np.save(sys.argv[2], a[2:3])" "$ids" \
        "$tmp/$name.held.npy" || fail "$name: held-out rows"
    $AQ score "$dir" --data "$ids" --num-samples 2 --seq-len 32 --method kl --format $FMT --device cpu \
        --out "$tmp/$name.h5" >/dev/null 2>"$tmp/err" || { fail "$name: score: $(tail -3 "$tmp/err")"; continue; }
    for b in 4.25 4.5 4.8 5.5; do
        $AQ search --scores "$tmp/$name.h5" --budget $b --refine --data "$tmp/$name.held.npy" --seq-len 32 \
            --refine-rounds 2 --refine-candidates 3 --out "$tmp/$name.$b.json" --h5 "$tmp/$name.$b.h5" \
            >"$tmp/out" 2>"$tmp/err" || { fail "$name $b: search --refine: $(tail -3 "$tmp/err")"; continue; }
        python3 - "$tmp/$name.$b.json" "$tmp/$name.$b.h5" "$name" "$b" <<'PY' || fail "$name $b: refined recipe"
import json, sys
import h5py, numpy as np
r = json.load(open(sys.argv[1]))
f = r["refine"]
t, best = f["tries"], f["best"]
assert f["refined_measured_kl"] <= f["plain_measured_kl"], f
assert t[0]["kind"] == "plain" and t[0]["measured_kl"] == f["plain_measured_kl"]
assert t[best]["in_budget"] and t[best]["measured_kl"] == min(x["measured_kl"] for x in t if x["in_budget"])
assert r["effective_bits"]["candidates"] <= float(sys.argv[4]) + 1e-9
plain = {g["name"]: g["choice"] for g in r["groups"]}
for g, c in t[best]["changes"].items():
    assert plain[g] == c  # the recipe written is the best measured one
with h5py.File(sys.argv[2]) as h:
    g = h["refine"]
    assert g["selected"].shape == (len(t), len(r["groups"])) and g.attrs["best"] == best
    assert np.allclose(g["measured_kl"][:], [x["measured_kl"] for x in t], rtol=0, atol=0)
    assert list(h["search/selected"][:]) == list(g["selected"][best])
p, q = f["plain_measured_kl"], f["refined_measured_kl"]
print(f"  {sys.argv[3]:15s} budget {sys.argv[4]:5s} plain {p:10.6g} refined {q:10.6g} gain {100 * (p - q) / p:6.3f}%"
      f"  ({len(t)} recipes, {f['rounds']} rounds, {f['seconds']:.2f} s measuring)")
PY
    done
    pass "$name: refined measured KL <= plain at 4.25, 4.5, 4.8, 5.5 bits"
done

# search MODEL --refine scores the first windows and holds out the last --refine-windows ones
V=tests/fixtures/qwen3-vl-tiny
$AQ search $V --data tests/fixtures/qwen3_vl_tiny_ids.npy --num-samples 2 --seq-len 32 --method kl --format w4a8,fp8 \
    --device cpu --budget 5 --refine --refine-windows 1 --refine-rounds 1 --h5 "$tmp/split.h5" >/dev/null 2>&1 ||
    fail "search MODEL --refine"
python3 - "$tmp/split.h5" <<'PY' && pass "search MODEL --refine: 2 windows scored, the next one held out" ||
import sys
import h5py
with h5py.File(sys.argv[1]) as f:
    assert f.attrs["num_samples"] == 2 and f["refine"].attrs["windows"] == 1, dict(f.attrs)
PY
    fail "scored and held-out windows"
expect "held out everything" "leaves none to score" $AQ search $V --data tests/fixtures/qwen3_vl_tiny_ids.npy \
    --seq-len 32 --method kl --device cpu --budget 5 --refine --refine-windows 3
expect "--refine-rounds without --refine" "--refine-rounds" $AQ search --scores "$tmp/qwen3-vl-tiny.h5" --budget 5 \
    --refine-rounds 2
expect "--bootstrap-seed without --bootstrap" "--bootstrap-seed" $AQ search --scores "$tmp/qwen3-vl-tiny.h5" --budget 5 \
    --bootstrap-seed 2
expect "--refine with --scores needs --data" "needs --data" $AQ search --scores "$tmp/qwen3-vl-tiny.h5" --budget 5 \
    --refine

# --objective max (README §7): each domain's held-out windows measured apart, one fitted model per domain, the
# largest domain's measured KL per window minimised; never above the plain recipe's
domain_scores "$V"
$AQ search --scores "$tmp/dom.h5" --budget 5 --objective max --refine --data code="$tmp/ha.npy" \
    --data prose="$tmp/hb.npy" --refine-rounds 2 --refine-candidates 2 --device cpu --out "$tmp/max.json" \
    --h5 "$tmp/max.h5" >"$tmp/out" 2>&1 || fail "--refine --objective max: $(tail -3 "$tmp/out")"
python3 - "$tmp/max.json" "$tmp/max.h5" <<'PY' && pass "--refine --objective max: the worst domain's measured KL never rises" ||
import json, sys
import h5py, numpy as np
r = json.load(open(sys.argv[1]))
f = r["refine"]
t, best = f["tries"], f["best"]
assert f["objective"] == "max" and f["refined_measured_objective"] <= f["plain_measured_objective"], f
for x in t:
    assert set(x["measured_kl_per_window"]) == {"code", "prose"}
    assert x["measured_objective"] == max(x["measured_kl_per_window"].values())
    assert abs(sum(v * 2 for v in x["measured_kl_per_window"].values()) - x["measured_kl"]) < 1e-9 * x["measured_kl"]
assert t[best]["measured_objective"] == min(x["measured_objective"] for x in t if x["in_budget"])
with h5py.File(sys.argv[2]) as h:
    assert h["refine/measured_domain_kl"].shape == (len(t), 2)
print(f"  plain {f['plain_measured_objective']:.6g} refined {f['refined_measured_objective']:.6g} ({len(t)} recipes)")
PY
    fail "--refine --objective max results"
expect "--refine --objective max needs every domain's held-out windows" "give domain prose's held-out windows" \
    $AQ search --scores "$tmp/dom.h5" --budget 5 --objective max --refine --data code="$tmp/ha.npy" --device cpu

# Where the measurements run (README §7): --device cpu the CPU engine, written in the recipe; --device cuda
# without a CUDA device is exit 2 (tests/test_gpu_refine.sh runs the CUDA engine against the CPU's).
$AQ search --scores "$tmp/qwen3-vl-tiny.h5" --budget 5 --refine --data "$tmp/qwen3-vl-tiny.held.npy" --seq-len 32 \
    --refine-rounds 1 --refine-candidates 1 --device cpu --out "$tmp/dev.json" >"$tmp/out" 2>&1 &&
    python3 -c "import json, sys; assert json.load(open(sys.argv[1]))['refine']['device'] == 'cpu'" "$tmp/dev.json" &&
    grep -q "s each, CPU engine" "$tmp/out" && pass "--refine --device cpu: measured on the CPU engine, so reported" ||
    fail "--refine --device cpu: $(tail -3 "$tmp/out")"
if ! $AQ score tests/fixtures/qwen3-vl-tiny --data tests/fixtures/qwen3_vl_tiny_ids.npy --num-samples 1 --method kl \
    --device cuda --json "$tmp/probe.json" >/dev/null 2>&1; then
    expect "--refine --device cuda without a device" "no CUDA device" $AQ search --scores "$tmp/qwen3-vl-tiny.h5" \
        --budget 5 --refine --data "$tmp/qwen3-vl-tiny.held.npy" --seq-len 32 --device cuda
fi

# KV-cache groups (README §7, "KV cache and memory budgets"): the measured recipes carry each layer's KV-cache
# choice (verify deploys it), neighbours move KV caches too, and with --kv-uniform every KV cache moves together.
T=../shared/models/qwen3-tiny
if [ -d $T ]; then
    $AQ score $T --data tests/fixtures/qwen3_tiny_ids.npy --num-samples 2 --seq-len 32 --method kl \
        --format w4a8,fp8,kv_fp8,kv_nvfp4 --device cpu --out "$tmp/kv.h5" >/dev/null 2>"$tmp/err" ||
        fail "kv scores: $(tail -3 "$tmp/err")"
    KVB=(--scores "$tmp/kv.h5" --memory-budget 8MiB --context 512 --batch 1 --overhead 0 --data "$tmp/qwen3-tiny.held.npy" --seq-len 32)
    $AQ search "${KVB[@]}" --refine --refine-rounds 1 --refine-candidates 4 --out "$tmp/kvr.json" >"$tmp/out" 2>&1 &&
        $AQ search "${KVB[@]}" --kv-uniform --refine --refine-rounds 1 --refine-candidates 3 --out "$tmp/kvu.json" \
            >"$tmp/outu" 2>&1 && $AQ search "${KVB[@]}" --verify --out "$tmp/kvv.json" >/dev/null 2>&1 ||
        fail "search --refine with KV-cache groups: $(tail -3 "$tmp/out" "$tmp/outu")"
    python3 - "$tmp" <<'PY' && pass "--refine with kv_fp8/kv_nvfp4: KV choices measured (plain = --verify's KL), moved, written; --kv-uniform moves them together; refined KL <= plain" ||
import json, sys
d = sys.argv[1]
for name, uniform in (("kvr", False), ("kvu", True)):
    r = json.load(open(f"{d}/{name}.json"))
    f = r["refine"]
    assert f["refined_measured_kl"] <= f["plain_measured_kl"], f
    groups = {g["name"]: g["choice"] for g in r["groups"]}
    kv = {n: c for n, c in groups.items() if n.endswith(".self_attn.kv_cache")}
    assert len(kv) == 8 and all(c.startswith("kv_") for c in kv.values()), kv
    moved = 0
    for t in f["tries"]:
        ch = [n for n in t["changes"] if n.endswith(".self_attn.kv_cache")]
        moved += bool(ch)
        if uniform:
            assert len(ch) in (0, 8), t["changes"]  # every KV cache or none
            assert len({t["changes"][n] for n in ch}) <= 1, t["changes"]
    if uniform:
        assert len(set(kv.values())) == 1, kv
    else:
        assert moved > 0, "no neighbour moved a KV cache"
v = json.load(open(f"{d}/kvv.json"))
p = json.load(open(f"{d}/kvr.json"))["refine"]["plain_measured_kl"]
kl = v["measured"]["kl"]
assert abs(kl - p) <= 1e-6 * p, (kl, p)
PY
        fail "--refine with KV-cache groups: $(grep -m1 -i error "$tmp/out" "$tmp/outu")"
fi
