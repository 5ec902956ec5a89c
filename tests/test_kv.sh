#!/usr/bin/env bash
# KV-cache precision and byte budgets (README §4-§8, "KV cache and memory budgets"): KV-cache KL scores against
# transformers on qwen3-tiny and the VL and MoE fixtures, gradient scores, the byte budget's totals against an
# independent sum over a --memory-budget sweep, exports, quantize's k_scale / v_scale, info, and bad input.
set -u
SUITE=kv
. "$(dirname "$0")/lib.sh"
T=${AUTOQ_TINY:-../shared/models/qwen3-tiny}
VL=tests/fixtures/qwen3-vl-tiny
MOE=tests/fixtures/qwen3-moe-tiny
REF=tests/fixtures/kv_cache_ref.json
python3 -c "import numpy as np; np.save('$tmp/tiny_ids.npy', np.load('tests/fixtures/qwen3_tiny_ids.npy')[:2, :64])"

# 1. KL scores against transformers (tests/ref/kv_cache_ref.py): within 1% on groups >= 1% of the largest.
for c in "qwen3-tiny:$T:$tmp/tiny_ids.npy" "qwen3-vl-tiny:$VL:tests/fixtures/qwen3_vl_tiny_ids.npy" \
    "qwen3-moe-tiny:$MOE:tests/fixtures/qwen3_moe_tiny_ids.npy"; do
    IFS=: read -r name model ids <<<"$c"
    if [ ! -d "$model" ]; then
        echo "SKIP $SUITE: $name KV-cache scores: $model missing"
        continue
    fi
    $AQ score "$model" --data "$ids" --method kl --format kv_fp8,kv_nvfp4 --device cpu --json "$tmp/$name.json" >/dev/null 2>"$tmp/err" ||
        fail "$name kv scores: $(cat "$tmp/err")"
    out=$(python3 - "$tmp/$name.json" "$REF" "$name" <<'PY' 2>&1
import json, sys
a, ref, name = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))["models"][sys.argv[3]]["scores"], sys.argv[3]
got = {g["name"]: g for g in a["groups"]}
for fmt, r in ref.items():
    mx, n = max(r.values()), 0
    for g, v in r.items():
        assert got[g]["members"] == [] and got[g]["params"] == 0, g
        if v >= 0.01 * mx:
            n += 1
            assert abs(got[g]["scores"][fmt] - v) <= 0.01 * v, (fmt, g, got[g]["scores"][fmt], v)
    assert n >= 2, (fmt, n)
    # a KV-cache group is scored for KV-cache formats only; a linear group for those never
    assert all(set(g.get("scores", {})) <= {"kv_fp8", "kv_nvfp4"} for g in a["groups"])
print("ok")
PY
    ) && pass "$name: KV-cache KL scores within 1% of transformers (kv_fp8, kv_nvfp4)" || fail "$name KV-cache KL: $out"
done

# 2. Gradient scores at K and V: one group per full-attention layer, positive, NVFP4 above FP8 in sum; the hybrid
#    family's Gated DeltaNet layers have none (a fixed-size recurrent state).
$AQ score $T --data "$tmp/tiny_ids.npy" --method gradient --format w4a8,kv_fp8,kv_nvfp4 --device cpu \
    --json "$tmp/g.json" --out "$tmp/g.h5" >/dev/null 2>"$tmp/err" || fail "gradient kv scores: $(cat "$tmp/err")"
python3 - "$tmp/g.json" <<'PY' && pass "gradient KV-cache scores: 8 groups, > 0, nvfp4 above fp8" || fail "gradient KV-cache scores"
import json, sys
a = json.load(open(sys.argv[1]))
kv = [g for g in a["groups"] if g["name"].endswith(".self_attn.kv_cache")]
assert len(kv) == 8 and all(g["scores"]["kv_fp8"] > 0 for g in kv)
assert sum(g["scores"]["kv_nvfp4"] for g in kv) > sum(g["scores"]["kv_fp8"] for g in kv)
assert a["memory"]["other_params"] > 0 and len(a["memory"]["kv_values"]) == 8
PY
NEXT=tests/fixtures/qwen3-next-tiny
if [ -d $NEXT ]; then
    $AQ score $NEXT --data tests/fixtures/qwen3_next_tiny_ids.npy --num-samples 1 --method gradient --format kv_fp8 --device cpu \
        --json "$tmp/n.json" >/dev/null 2>&1 &&
        python3 -c "
import json; a=json.load(open('$tmp/n.json')); c=json.load(open('$NEXT/config.json'))
full=[i for i,t in enumerate(c['layer_types']) if t=='full_attention']
assert sorted(g['name'] for g in a['groups'] if g['name'].endswith('kv_cache')) == sorted(f'model.layers.{l}.self_attn.kv_cache' for l in full)
assert all(g['score'] > 0 for g in a['groups'] if g['name'].endswith('kv_cache'))" &&
        pass "hybrid: KV-cache groups for the full-attention layers only" || fail "hybrid KV-cache groups"
    $AQ info $NEXT | grep -q "Gated DeltaNet: a fixed-size recurrent state, no KV cache" && pass "info: Gated DeltaNet layers keep no KV cache" ||
        fail "info on the hybrid"
fi
$AQ info $T --json | python3 -c "import json,sys; k=json.load(sys.stdin)['kv_caches']; assert len(k)==8 and k[0]['values_per_token']==256" &&
    $AQ info $T --disabled-layers '*layers.3.self_attn.kv_cache' | grep -q "model.layers.3.self_attn.kv_cache  *256  *512  yes" &&
    pass "info lists the KV caches, disabled-layers patterns apply" || fail "info KV caches"
$AQ score $T --data "$tmp/tiny_ids.npy" --num-samples 1 --method gradient --format kv_fp8 --device cpu \
    --disabled-layers '*lm_head*,*layers.[02].self_attn.kv_cache' --json "$tmp/d.json" >/dev/null 2>&1 &&
    python3 -c "
import json; g={x['name']: x for x in json.load(open('$tmp/d.json'))['groups']}
assert g['model.layers.0.self_attn.kv_cache']['disabled'] and g['model.layers.2.self_attn.kv_cache']['disabled']
assert not g['model.layers.1.self_attn.kv_cache']['disabled']" && pass "disabled-layers wildcards disable KV-cache groups" ||
    fail "disabled KV-cache groups"

# 3. --memory-budget sweep at --context 2048 --batch 4: every recipe's bytes against an independent sum from the
#    checkpoint's tensors, the config and the recipe's choices (README §7).
budgets="20MiB 22MiB 24MiB 27MiB 30MiB 40MiB"
ok=1
for b in $budgets; do
    $AQ search --scores "$tmp/g.h5" --memory-budget $b --context 2048 --batch 4 --overhead 1MiB --out "$tmp/m_$b.json" \
        --h5 "$tmp/m_$b.h5" >"$tmp/m_$b.out" 2>&1 || { ok=0; fail "memory budget $b: $(tail -2 "$tmp/m_$b.out")"; }
done
[ $ok = 1 ] && out=$(python3 - "$tmp" "$T" $budgets <<'PY' 2>&1
import json, os, struct, sys
d, model, budgets = sys.argv[1], sys.argv[2], sys.argv[3:]
units = {"MiB": 1 << 20}
cfg = json.load(open(f"{model}/config.json"))
shapes = {}
for f in sorted(os.listdir(model)):
    if f.endswith(".safetensors"):
        with open(f"{model}/{f}", "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            for k, v in json.loads(fh.read(n)).items():
                if k != "__metadata__":
                    shapes[k] = v["shape"]
def numel(s):
    p = 1
    for x in s:
        p *= x
    return p
def weight_bits(fmt, out, inp):  # README §7 true bits from the format's own definition
    w = fmt["definition"]["quant_cfg"].get("*weight_quantizer", {})
    nb = w.get("num_bits", 16)
    b = 8 if nb == [4, 3] else 4 if nb == [2, 1] else nb
    bs = (w.get("block_sizes") or {}).get("-1")
    if not bs:
        return b * out * inp + 16 * out
    sb = 8 if (w["block_sizes"].get("scale_bits")) else 16
    return b * out * inp + out * -(-inp // bs) * sb
prev = None
for b in budgets:
    r = json.load(open(f"{d}/m_{b}.json"))
    fmts = {f["name"]: f for f in r["formats"]}
    ctx, batch = 2048, 4
    kv_values = 2 * cfg["num_key_value_heads"] * cfg["head_dim"] * ctx * batch
    lin_bits = kv_bits = 0
    lin_names = set()
    for g in r["groups"]:
        if g["name"].endswith(".self_attn.kv_cache"):
            c = g["choice"]
            kv_bits += 16 * kv_values if c == "bf16" else (8 * kv_values + 64 if c == "kv_fp8" else 4.5 * kv_values + 64)
            continue
        for m in g["members"]:
            lin_names.add(m + ".weight")
            out, inp = shapes[m + ".weight"]
            lin_bits += 16 * out * inp if g["choice"] == "bf16" else weight_bits(fmts[g["choice"]], out, inp)
    other = sum(numel(s) for k, s in shapes.items() if k not in lin_names and not k.startswith("mtp."))
    total = (lin_bits + 16 * other + kv_bits) / 8 + (1 << 20)
    m = r["memory"]
    assert m["budget_bytes"] == int(b[:-3]) * units["MiB"] and m["context"] == ctx and m["batch"] == batch
    assert m["bytes"]["total"] == total, (b, m["bytes"], total)
    assert m["bytes"]["linears"] == lin_bits / 8 and m["bytes"]["kv_cache"] == kv_bits / 8 and m["bytes"]["other"] == 2 * other
    assert m["bytes"]["total"] <= m["budget_bytes"]
    assert prev is None or r["predicted_score"] <= prev + 1e-12, (b, r["predicted_score"], prev)
    prev = r["predicted_score"]
print("ok")
PY
) && pass "memory-budget sweep: every recipe's bytes equal an independent sum, within budget, score non-increasing" ||
    fail "memory-budget totals: $out"
grep -q "KV cache" "$tmp/m_24MiB.out" && grep -q "KV caches quantized" "$tmp/m_24MiB.out" && pass "the byte breakdown is printed" ||
    fail "byte breakdown: $(tail -1 "$tmp/m_24MiB.out")"
if command -v h5dump >/dev/null; then
    h5dump -d /search/memory_bytes "$tmp/m_24MiB.h5" >/dev/null 2>&1 && pass "HDF5 /search/memory_bytes" || fail "HDF5 memory_bytes"
fi
# one --sweep over sizes gives the same recipes as the separate runs
$AQ search --scores "$tmp/g.h5" --memory-budget 24MiB --sweep 20MiB:40MiB:2MiB --context 2048 --batch 4 --overhead 1MiB \
    --h5 "$tmp/sw.h5" >"$tmp/sw.out" 2>&1 && grep -q "Pareto frontier (11 budgets)" "$tmp/sw.out" &&
    python3 - "$tmp" <<'PY' && pass "--sweep over sizes: the frontier's totals equal the single runs'" || fail "--sweep sizes: $(tail -2 "$tmp/sw.out")"
import h5py, json, sys
d = sys.argv[1]
f = h5py.File(f"{d}/sw.h5")
bud, tot = list(f["/pareto/budget"][:]), list(f["/pareto/memory_bytes"][:])
for b in (20, 22, 24, 30, 40):
    r = json.load(open(f"{d}/m_{b}MiB.json"))
    assert tot[bud.index(b << 20)] == r["memory"]["bytes"]["total"], b
PY
# the KV cache's share grows with context: at a long context the KV caches are quantized first
$AQ search --scores "$tmp/g.h5" --memory-budget 40MiB --context 16384 --batch 1 --overhead 0 --out "$tmp/long.json" >/dev/null 2>&1 &&
    python3 -c "
import json; r=json.load(open('$tmp/long.json'))
kv=[g['choice'] for g in r['groups'] if g['name'].endswith('kv_cache')]
assert all(c != 'bf16' for c in kv), kv" && pass "long context: every KV cache quantized" || fail "long context KV choice"
# --kv-uniform: one KV-cache choice for every layer (as vLLM serves it), never better than per layer
out=$(for b in 22MiB 24MiB 27MiB 30MiB; do
    $AQ search --scores "$tmp/g.h5" --memory-budget $b --context 2048 --batch 4 --overhead 1MiB --kv-uniform \
        --out "$tmp/u_$b.json" >/dev/null 2>&1 || echo "search $b failed"
    python3 -c "
import json; u=json.load(open('$tmp/u_$b.json')); p=json.load(open('$tmp/m_$b.json'))
k={g['choice'] for g in u['groups'] if g['name'].endswith('kv_cache')}
assert len(k)==1, k
assert u['predicted_score'] >= p['predicted_score'] - 1e-12 and u['memory']['bytes']['total'] <= u['memory']['budget_bytes']" 2>&1 || echo "$b"
done)
[ -z "$out" ] && pass "--kv-uniform: one KV-cache format for every layer, within budget, never better than per layer" ||
    fail "--kv-uniform: $out"
# --target: the engine profile's kv_cache_one_format_per_model (true for vLLM, SGLang, TensorRT-LLM) makes the
# search take one KV-cache format for every layer by default; a profile that says false keeps the per-layer
# choice (a copy of the binary beside a changed profile), which mixes kv_fp8 and kv_nvfp4 at 27 MiB here.
mkdir -p "$tmp/p/configs/targets" && cp "$AQ" "$tmp/p/autoq" && cp configs/targets/*.json "$tmp/p/configs/targets/"
python3 -c "
import json; p='$tmp/p/configs/targets/sglang.json'; d=json.load(open(p))
d['kv_cache_one_format_per_model']['value']=False; json.dump(d, open(p, 'w'))"
kvset() { python3 -c "
import json, sys; r=json.load(open(sys.argv[1])); print(' '.join(sorted({g['choice'] for g in r['groups'] if g['name'].endswith('kv_cache')})))" "$1"; }
out=""
for b in 27MiB 29MiB; do
    $AQ search --scores "$tmp/g.h5" --memory-budget $b --context 2048 --batch 4 --overhead 1MiB --target sglang --arch sm100         --out "$tmp/t1.json" >/dev/null 2>"$tmp/t1.err" || out="$out; search --target sglang $b failed"
    grep -q "serves one KV-cache format per model" "$tmp/t1.err" || out="$out; no message at $b"
    [ "$(kvset "$tmp/t1.json" | wc -w)" = 1 ] || out="$out; $b: $(kvset "$tmp/t1.json")"
    "$tmp/p/autoq" search --scores "$tmp/g.h5" --memory-budget $b --context 2048 --batch 4 --overhead 1MiB --target sglang         --arch sm100 --out "$tmp/t2.json" >/dev/null 2>&1 || out="$out; per-layer profile $b failed"
    [ "$(kvset "$tmp/t2.json")" = "kv_fp8 kv_nvfp4" ] || out="$out; per-layer profile $b: $(kvset "$tmp/t2.json")"
done
[ -z "$out" ] && pass "--target: one KV-cache format for every layer by the profile (kv_cache_one_format_per_model); per layer where a profile allows it" ||
    fail "--target and one KV-cache format per model:$out"
# --objective max over calibration domains with one KV-cache format for every layer (--kv-uniform, and --target
# vllm's kv_cache_one_format_per_model): the max objective's mixed-integer programme ties the KV-cache groups'
# choices (tests/test_bootstrap.c checks it against brute force); never better than the per-layer choice, and
# worse where that mixes (11.5 MiB here).
domain_scores $T fp8,kv_fp8,kv_nvfp4
out=""
for b in 11MiB 11.5MiB 12MiB; do
    for m in "p" "u --kv-uniform" "v --target vllm --arch sm90"; do
        read -r n flags <<<"$m"
        $AQ search --scores "$tmp/dom.h5" --memory-budget $b --context 512 --batch 1 --overhead 0 --objective max \
            $flags --out "$tmp/dm_$n$b.json" >/dev/null 2>"$tmp/dm.err" || out="$out; $b $flags: $(grep -m1 error "$tmp/dm.err")"
        [ "$n" != v ] || grep -q "serves one KV-cache format per model" "$tmp/dm.err" || out="$out; $b: no --target message"
    done
    out="$out$(python3 - "$tmp" "$b" <<'PY' 2>&1
import json, sys
d, b = sys.argv[1:]
r = {n: json.load(open(f"{d}/dm_{n}{b}.json")) for n in "puv"}
kv = {n: [g["choice"] for g in x["groups"] if g["name"].endswith(".self_attn.kv_cache")] for n, x in r.items()}
for n, x in r.items():
    assert x["objective"] == "max" and abs(x["predicted_score"] - max(x["predicted_loss"].values())) <= 1e-12, n
    assert x["memory"]["bytes"]["total"] <= x["memory"]["budget_bytes"], n
for n in "uv":
    assert len(set(kv[n])) == 1 and len(kv[n]) == 8, (n, kv[n])
    assert r[n]["predicted_score"] >= r["p"]["predicted_score"] - 1e-12, n
assert "kv_nvfp4" not in kv["v"]
if b == "11.5MiB":
    assert len(set(kv["p"])) > 1 and r["u"]["predicted_score"] > r["p"]["predicted_score"], kv["p"]
PY
)"
done
[ -z "$out" ] && pass "--objective max with one KV-cache format for every layer (--kv-uniform, --target vllm): one format, within budget, never better than per layer" ||
    fail "--objective max and one KV-cache format:$out"
$AQ info --target vllm | grep -q "^kv cache     one format for every layer; source: vllm/config/cache.py" &&
    $AQ info --target vllm --json | python3 -c "import json, sys; assert json.load(sys.stdin)['kv_cache_one_format_per_model'] is True" &&
    pass "info --target prints kv_cache_one_format_per_model with its source" || fail "info --target and kv_cache_one_format_per_model"
python3 -c "
import json; p='$tmp/p/configs/targets/sglang.json'; d=json.load(open(p))
d['kv_cache_one_format_per_model']['value']='yes'; json.dump(d, open(p, 'w'))"
expect "a profile's kv_cache_one_format_per_model not a boolean" "kv_cache_one_format_per_model.value" \
    "$tmp/p/autoq" search --scores "$tmp/g.h5" --memory-budget 27MiB --context 2048 --target sglang
# --budget (bits) leaves the KV caches bf16: they hold no weights
$AQ search --scores "$tmp/g.h5" --budget 5 --out "$tmp/bits.json" >/dev/null 2>&1 &&
    python3 -c "
import json; r=json.load(open('$tmp/bits.json'))
assert all(g['choice']=='bf16' for g in r['groups'] if g['name'].endswith('kv_cache')) and r['effective_bits']['candidates'] <= 5" &&
    pass "--budget in bits stays: KV caches bf16" || fail "--budget with KV groups"

# 4. Exports and deployment: a recipe with an E4M3 KV cache.
$AQ search $T --data "$tmp/tiny_ids.npy" --num-samples 1 --method gradient --format w4a8,kv_fp8 --device cpu --memory-budget 26MiB \
    --context 4096 --batch 2 --overhead 0 --verify --out "$tmp/k.json" --emit llmcompressor="$tmp/k.yaml" \
    --emit modelopt="$tmp/k_q.json" >"$tmp/k.out" 2>&1 || fail "search with kv_fp8: $(tail -2 "$tmp/k.out")"
python3 - "$tmp" <<'PY' && pass "exports: kv_cache_scheme (llm-compressor) and [kv]_bmm_quantizer (ModelOpt) per layer" || fail "KV exports"
import json, sys, yaml
d = sys.argv[1]
r = json.load(open(f"{d}/k.json"))
kv = [g["name"] for g in r["groups"] if g["name"].endswith("kv_cache") and g["choice"] == "kv_fp8"]
assert kv
y = yaml.safe_load(open(f"{d}/k.yaml"))["quant_stage"]["quant_modifiers"]["GPTQModifier"]
assert y["kv_cache_scheme"] == {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "tensor", "dynamic": False}
q = json.load(open(f"{d}/k_q.json"))["quant_cfg"]
for g in kv:
    assert q[g[: -len("kv_cache")] + "[kv]_bmm_quantizer"] == {"num_bits": [4, 3], "axis": None, "enable": True}
PY
kl=$(sed -n 's/.*measured KL \([0-9.e+-]*\),.*/\1/p' "$tmp/k.out")
$AQ eval $T --data "$tmp/tiny_ids.npy" --num-samples 1 --recipe "$tmp/k.json" --json >"$tmp/ev.json" 2>/dev/null &&
    python3 -c "import json; e=json.load(open('$tmp/ev.json')); assert abs(e['kl']-$kl) <= 1e-4*max(1,$kl), (e['kl'], $kl)" &&
    pass "eval --recipe deploys the KV-cache choice as search --verify measured it" || fail "eval --recipe KV: kl $kl"
$AQ eval $T --data "$tmp/tiny_ids.npy" --num-samples 1 --format kv_fp8 --json >"$tmp/e8.json" 2>/dev/null &&
    python3 -c "
import json; e=json.load(open('$tmp/e8.json')); g=json.load(open('$tmp/g.json'))
assert e['quantized_linears'] == 0 and e['kl'] > 0" && pass "eval --format kv_fp8: every KV cache, no linear" || fail "eval --format kv_fp8"
$AQ quantize $T --recipe "$tmp/k.json" --out "$tmp/ck" --data "$tmp/tiny_ids.npy" >/dev/null 2>"$tmp/err" || fail "quantize with kv_fp8: $(cat "$tmp/err")"
out=$(python3 - "$tmp" "$T" <<'PY' 2>"$tmp/perr"
import json, sys
import numpy as np, torch
sys.path.insert(0, "tests/ref")
from safetensors import safe_open
d, model = sys.argv[1], sys.argv[2]
c = json.load(open(f"{d}/ck/config.json"))["quantization_config"]
assert c["kv_cache_scheme"]["strategy"] == "tensor" and c["kv_cache_scheme"]["num_bits"] == 8
f = safe_open(f"{d}/ck/model.safetensors", "pt")
ks = {k: f.get_tensor(k) for k in f.keys() if k.endswith("_scale") and ".self_attn.k_scale" in k or ".self_attn.v_scale" in k}
assert len(ks) == 16 and all(v.shape == (1,) and v.dtype == torch.float32 for v in ks.values())
# the amax of K (after k_norm and RoPE) and V in transformers' own attention, over the same windows
import kv_cache_ref as r
from transformers import AttentionInterface
amax = {}
def spy(module, q, k, v, mask, **kw):
    l = module.layer_idx
    amax[(l, "k")] = max(amax.get((l, "k"), 0.0), float(k.abs().max()))
    amax[(l, "v")] = max(amax.get((l, "v"), 0.0), float(v.abs().max()))
    return r.kvq_attention(module, q, k, v, mask, **kw)
AttentionInterface.register("autoq_kvq", spy)
m = r.load(model)
ids = torch.tensor(np.load(f"{d}/tiny_ids.npy")).long()
with torch.no_grad():
    for i in range(len(ids)):
        m(input_ids=ids[i : i + 1])
for l in range(8):
    for w in "kv":
        got, want = float(ks[f"model.layers.{l}.self_attn.{w}_scale"]), amax[(l, w)] / 448
        assert abs(got - want) <= 1e-5 * want, (l, w, got, want)
print("ok")
PY
)
[ "$out" = ok ] && pass "quantize: k_scale, v_scale = amax / 448 of transformers' K and V, kv_cache_scheme" || fail "quantize KV scales: $out $(tail -3 "$tmp/perr")"
if python3 -c "import compressed_tensors" 2>/dev/null; then
    python3 - "$tmp/ck" <<'PY' 2>/dev/null && pass "the KV-cache checkpoint loads in transformers + compressed-tensors, k_scale loaded" ||
import sys, torch
from transformers import AutoModelForCausalLM
m, info = AutoModelForCausalLM.from_pretrained(sys.argv[1], output_loading_info=True, dtype=torch.float32)
assert not any(info.values()), info
assert float(m.model.layers[0].self_attn.k_scale) > 0
PY
        fail "KV-cache checkpoint load"
else
    echo "SKIP $SUITE: KV-cache checkpoint load: compressed-tensors not installed"
fi
expect "quantize kv_nvfp4: not written, the reason and its sources named" "vLLM's compressed-tensors loader refuses any KV scheme but per-tensor" \
    $AQ quantize $T --recipe "$tmp/long.json" --out "$tmp/ck2" --data "$tmp/tiny_ids.npy"
expect "quantize with a KV cache needs --data" "need --data" $AQ quantize $T --recipe "$tmp/k.json" --out "$tmp/ck3"

# 5. Bad input: exit 2 naming the option, nothing written.
S="$tmp/g.h5"
expect "memory budget 24XB" "--memory-budget '24XB' must be a size" $AQ search --scores $S --memory-budget 24XB --context 8
expect "memory budget 0" "--memory-budget '0' must be a size" $AQ search --scores $S --memory-budget 0 --context 8
expect "memory budget -1GiB" "--memory-budget '-1GiB' must be a size" $AQ search --scores $S --memory-budget -1GiB --context 8
expect "memory budget nan" "--memory-budget 'nan' must be a size" $AQ search --scores $S --memory-budget nan --context 8
expect "context 0" "--context" $AQ search --scores $S --memory-budget 24GiB --context 0
expect "batch 0" "--batch" $AQ search --scores $S --memory-budget 24GiB --context 8 --batch 0
expect "memory budget without --context" "needs --context" $AQ search --scores $S --memory-budget 24GiB
expect "--context without --memory-budget" "--context" $AQ search --scores $S --budget 5 --context 8
expect "--batch without --memory-budget" "--batch" $AQ search --scores $S --budget 5 --batch 8
expect "two budgets" "give one" $AQ search --scores $S --memory-budget 24GiB --budget 5 --context 8
expect "--bits with a byte budget" "--bits does not apply" $AQ search --scores $S --memory-budget 24GiB --context 8 --bits modelopt
expect "--overhead 1ZB" "--overhead '1ZB' must be a size" $AQ search --scores $S --memory-budget 24GiB --context 8 --overhead 1ZB
expect "--sweep of bad sizes" "--sweep '2XB' must be a size" $AQ search --scores $S --memory-budget 24GiB --context 8 --sweep 1MiB:2XB:1MiB
expect "--sweep not sizes" "must be LO:HI:STEP sizes" $AQ search --scores $S --memory-budget 24GiB --context 8 --sweep 4.5:5
expect "infeasible byte budget names the smallest" "the smallest feasible is" $AQ search --scores $S --memory-budget 1MiB --context 8 --overhead 0
expect "memory budget on an older scores file" "predates /memory" \
    $AQ search --scores tests/fixtures/exports/tiny_formats_scores.h5 --memory-budget 24GiB --context 8
[ ! -e "$tmp/never.json" ] && $AQ search --scores $S --memory-budget 24XB --context 8 --out "$tmp/never.json" >/dev/null 2>&1
[ ! -e "$tmp/never.json" ] && pass "bad sizes write nothing" || fail "an output after a bad size"
mkdir -p "$tmp/f"
echo '{"quant_cfg": {"*[kv]_bmm_quantizer": {"num_bits": [4, 3], "axis": null}, "*weight_quantizer": {"num_bits": 4, "axis": 0}}, "algorithm": "max"}' >"$tmp/f/kvw.json"
expect "a KV-cache format with a weight quantizer" "it stands alone" $AQ score $T --data "$tmp/tiny_ids.npy" --method kl --format "$tmp/f/kvw.json"
echo '{"quant_cfg": {"*[kv]_bmm_quantizer": {"num_bits": [4, 3], "axis": null, "block_sizes": {"-1": 16, "type": "dynamic"}}}}' >"$tmp/f/kvb.json"
expect "an E4M3 KV cache in blocks" "one per-tensor scale" $AQ score $T --data "$tmp/tiny_ids.npy" --method kl --format "$tmp/f/kvb.json"
echo '{"quant_cfg": {"*[kv]_bmm_quantizer": {"num_bits": 8, "axis": null}}}' >"$tmp/f/kvi.json"
expect "an int8 KV cache" "a KV cache is E4M3" $AQ score $T --data "$tmp/tiny_ids.npy" --method kl --format "$tmp/f/kvi.json"
echo '{"quant_cfg": {"*[kv]_bmm_quantizer": {"num_bits": [4, 3], "axis": 0}}}' >"$tmp/f/kva.json"
expect "a KV cache with an axis" "axis must be null" $AQ score $T --data "$tmp/tiny_ids.npy" --method kl --format "$tmp/f/kva.json"
expect "kv_nvfp4 with compressed-tensors numerics" "not implemented for E2M1" \
    $AQ score $T --data "$tmp/tiny_ids.npy" --method kl --format kv_nvfp4 --numerics compressed-tensors
if $AQ score $T --data "$tmp/tiny_ids.npy" --method kl --format kv_fp8 --device cuda 2>&1 | grep -q "no CUDA device"; then
    echo "SKIP $SUITE: KV-cache formats on the CUDA engine: no CUDA device"
else
    expect "KV-cache formats in the CUDA engine's fp16 GEMM mode" "not fp16" $AQ score $T --data "$tmp/tiny_ids.npy" --method kl --format kv_fp8 --device cuda --gpu-gemm fp16
fi

# --target: a KV-cache format is offered where the profile's kv_cache_formats serve it (vLLM: FP8 E4M3 on
# Hopper and Blackwell, no FP4 cache), never filtered as a weight format.
$AQ score tests/fixtures/qwen3-vl-tiny --data tests/fixtures/qwen3_vl_tiny_ids.npy --num-samples 2 --seq-len 32 \
    --method kl --format w8a8,kv_fp8,kv_nvfp4 --device cpu --out "$tmp/tg.h5" >/dev/null 2>&1 || fail "score for --target"
$AQ search --scores "$tmp/tg.h5" --memory-budget 3MiB --context 4096 --batch 2 --overhead 0 --target vllm --arch sm90 --out "$tmp/tg.json" >/dev/null 2>"$tmp/tg.err" || fail "search --target vllm: $(tail -2 "$tmp/tg.err")"
if ! grep -q "'kv_fp8'.*not offered" "$tmp/tg.err" && grep -q "KV-cache format 'kv_nvfp4' (nvfp4) is not offered" "$tmp/tg.err" &&
    python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
ch = {g['name']: g['choice'] for g in r['groups']}
kv = [c for n, c in ch.items() if n.endswith('kv_cache')]
assert kv and 'kv_nvfp4' not in kv and 'kv_fp8' in kv, ch
" "$tmp/tg.json"; then pass "--target vllm: kv_fp8 offered (and chosen under 3 MiB at 4096 x 2), kv_nvfp4 not"
else fail "--target vllm and KV-cache formats: $(cat "$tmp/tg.err" | head -3)"; fi
