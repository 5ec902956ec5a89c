#!/usr/bin/env bash
# autoq quantize on qwen3-tiny against llm-compressor's own checkpoints (tests/ref/quantize_ref.py ->
# tests/fixtures/quantize_qwen3_tiny_ref.json): round-to-nearest byte for byte, GPTQ the same layout
# and quantization_config, the basic pipeline's codes llm-compressor's (float32); the --quantizer /
# --gptq-* options of score, search and eval; bad input.
set -u
SUITE=quantize
. "$(dirname "$0")/lib.sh"
M=../shared/models/qwen3-tiny
D=tests/fixtures/qwen3_tiny_ids.npy
REF=tests/fixtures/quantize_qwen3_tiny_ref.json
if [ ! -f $M/config.json ]; then
    echo "SKIP quantize: $M missing"
    exit 0
fi

# Every linear W4A8 (budget 4 in ModelOpt's bits), and a mixed recipe.
$AQ score $M --data $D --num-samples 2 --method gradient --numerics compressed-tensors --out "$tmp/s.h5" >/dev/null 2>&1 || fail "score"
$AQ search --scores "$tmp/s.h5" --budget 4 --bits modelopt --out "$tmp/all.json" >/dev/null 2>&1 || fail "search all"
$AQ search --scores "$tmp/s.h5" --budget 4.8 --bits modelopt --out "$tmp/mixed.json" >/dev/null 2>&1 || fail "search mixed"

# layout.py DIR: the checkpoint as tests/ref/quantize_ref.py records llm-compressor's.
cat >"$tmp/layout.py" <<'PY'
import hashlib, json, os, struct, sys
def layout(d):
    with open(os.path.join(d, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    t = {}
    for k, v in sorted(hdr.items()):
        if k != "__metadata__":
            a, b = v["data_offsets"]
            t[k] = [v["dtype"], v["shape"], hashlib.sha256(data[a:b]).hexdigest()]
    return json.load(open(os.path.join(d, "config.json")))["quantization_config"], t
PY

$AQ quantize $M --recipe "$tmp/all.json" --out "$tmp/rtn" 2>"$tmp/err" || fail "quantize rtn: $(cat "$tmp/err")"
python3 - "$tmp" $REF <<'PY' && pass "rtn checkpoint = llm-compressor's, byte for byte" || fail "rtn checkpoint differs"
import json, sys
sys.path.insert(0, sys.argv[1]); from layout import layout
qc, t = layout(sys.argv[1] + "/rtn")
ref = json.load(open(sys.argv[2]))["llmcompressor_rtn"]
assert qc == ref["quantization_config"], qc
bad = [k for k in ref["tensors"] if t.get(k) != ref["tensors"][k]]
assert not bad and len(t) == len(ref["tensors"]), bad[:5]
PY
cmp -s $M/tokenizer.json "$tmp/rtn/tokenizer.json" && pass "tokenizer copied" || fail "tokenizer not copied"

$AQ quantize $M --recipe "$tmp/all.json" --data $D --num-samples 2 --quantizer gptq --out "$tmp/gptq" 2>"$tmp/err" ||
    fail "quantize gptq: $(cat "$tmp/err")"
python3 - "$tmp" $REF <<'PY' && pass "gptq checkpoint: llm-compressor's layout and quantization_config" || fail "gptq checkpoint layout"
import json, sys
sys.path.insert(0, sys.argv[1]); from layout import layout
qc, t = layout(sys.argv[1] + "/gptq")
ref = json.load(open(sys.argv[2]))["llmcompressor_gptq"]
assert qc == ref["quantization_config"], qc
assert {k: v[:2] for k, v in t.items()} == ref["tensors"]
PY

# --gptq-pipeline basic on a float32 copy of the model (the values of its bf16 weights,
# tests/ref/f32_copy.py): the arithmetic of llm-compressor's float32 basic run, whose code rows the fixture
# holds as 16-bit hashes. (On the bf16 model the two tools' scales and Hessians differ in rounding and
# 92% of codes agree: bench/README.md.)
python3 tests/ref/f32_copy.py $M "$tmp/m32" || fail "float32 copy of $M"
$AQ quantize "$tmp/m32" --recipe "$tmp/all.json" --data $D --quantizer gptq --gptq-pipeline basic --device cpu \
    --out "$tmp/basic32" 2>"$tmp/err" || fail "quantize gptq basic: $(cat "$tmp/err")"
out=$(python3 - "$tmp/basic32" $REF <<'PY'
import json, struct, sys, zlib
with open(sys.argv[1] + "/model.safetensors", "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    hdr = json.loads(f.read(n))
    data = f.read()
ref = json.load(open(sys.argv[2]))["llmcompressor_gptq_basic_float32_rows"]
same = total = 0
for k, rows in ref.items():
    v = hdr[k]
    (a, b), cols = v["data_offsets"], v["shape"][1]
    got = "".join("%04x" % (zlib.crc32(data[r:r + cols]) & 0xffff) for r in range(a, b, cols))
    same += sum(got[i:i + 4] == rows[i:i + 4] for i in range(0, len(rows), 4))
    total += len(rows) // 4
print(f"{same} of {total} code rows equal")
sys.exit(0 if total > 2000 and same >= 0.99 * total else 1)
PY
)
[ $? -eq 0 ] && pass "gptq basic pipeline = llm-compressor's float32 basic run: $out" || fail "gptq basic pipeline: $out"
$AQ quantize $M --recipe "$tmp/all.json" --data $D --num-samples 2 --quantizer gptq --gptq-pipeline basic \
    --device cpu --out "$tmp/basic" 2>"$tmp/err" || fail "quantize gptq basic, bf16: $(cat "$tmp/err")"
python3 - "$tmp" $REF <<'PY' && pass "gptq basic checkpoint: llm-compressor's layout and quantization_config" ||
import json, sys
sys.path.insert(0, sys.argv[1]); from layout import layout
qc, t = layout(sys.argv[1] + "/basic")
ref = json.load(open(sys.argv[2]))["llmcompressor_gptq"]
assert qc == ref["quantization_config"], qc
assert {k: v[:2] for k, v in t.items()} == ref["tensors"]
_, seq = layout(sys.argv[1] + "/gptq")
assert sum(seq[k][2] != v[2] for k, v in t.items() if v[0] == "I8") > 0, "the same codes as sequential"
PY
    fail "gptq basic checkpoint layout"

$AQ quantize $M --recipe "$tmp/mixed.json" --out "$tmp/mixed" 2>"$tmp/err" || fail "quantize mixed: $(cat "$tmp/err")"
python3 - "$tmp" <<'PY' && pass "mixed recipe: bf16 groups unchanged and ignored" || fail "mixed recipe checkpoint"
import json, sys
sys.path.insert(0, sys.argv[1]); from layout import layout
qc, t = layout(sys.argv[1] + "/mixed")
_, full = layout(sys.argv[1] + "/rtn")
r = json.load(open(sys.argv[1] + "/mixed.json"))
kept = [m for g in r["groups"] if g["choice"] == "bf16" for m in g["members"]]
assert kept and sorted(qc["ignore"]) == sorted(["lm_head"] + kept), qc["ignore"]
for m in kept:
    assert t[m + ".weight"][0] == "BF16" and m + ".weight_scale" not in t
for k, v in t.items():  # every quantized tensor as in the all-W4A8 checkpoint
    if v[0] == "I8" or k.endswith("weight_scale"):
        assert full[k] == v, k
PY

# Refusals: nothing written, exit 2, the file and field named.
expect "existing --out refused" "exists" $AQ quantize $M --recipe "$tmp/all.json" --out "$tmp/rtn"
$AQ quantize $M --recipe "$tmp/all.json" --out "$tmp/rtn" --force 2>/dev/null && [ -f "$tmp/rtn/config.json" ] &&
    ! ls -d "$tmp"/rtn.* 2>/dev/null | grep -q . && pass "--force replaces it" || fail "--force"
sed 's/model.layers.0.self_attn.q_proj/model.layers.0.self_attn.x_proj/' "$tmp/all.json" >"$tmp/other.json"
expect "recipe for another model" "is not a linear of" $AQ quantize $M --recipe "$tmp/other.json" --out "$tmp/o1"
sed 's/"choice": "w4a8"/"choice": "w3a8"/' "$tmp/all.json" >"$tmp/unk.json"
expect "unknown format in recipe" "neither bf16 nor a listed format" $AQ quantize $M --recipe "$tmp/unk.json" --out "$tmp/o2"
$AQ search $M --data $D --num-samples 1 --method gradient --device cpu --format mxfp4 --budget 5 \
    --out "$tmp/fp4r.json" >/dev/null 2>&1 || fail "mxfp4 recipe"
expect "quantize refuses MXFP4 (NVFP4 is written: test_deploy.sh)" "MXFP4 is not written yet" $AQ quantize $M --recipe "$tmp/fp4r.json" --out "$tmp/o4"
expect "gptq refuses a float format" "takes integer per-channel weight formats" $AQ score $M --data $D --num-samples 1 \
    --method gradient --device cpu --format fp8 --quantizer gptq
expect "gptq needs --data" "needs --data" $AQ quantize $M --recipe "$tmp/all.json" --quantizer gptq --out "$tmp/o3"
expect "--out in a missing folder" "not a writable folder" $AQ quantize $M --recipe "$tmp/all.json" --out "$tmp/no/such"
ls -d "$tmp"/o1* "$tmp"/o2* "$tmp"/o3* 2>/dev/null | grep -q . && fail "refused runs left files" || pass "refused runs leave nothing"
# A write failing after the weights (as a full disk would) leaves no folder behind.
AUTOQ_TEST_FAIL_WRITE=1 $AQ quantize $M --recipe "$tmp/all.json" --out "$tmp/failed" 2>"$tmp/err"
[ $? -eq 1 ] && grep -q "AUTOQ_TEST_FAIL_WRITE" "$tmp/err" && ! ls -d "$tmp"/failed* 2>/dev/null | grep -q . &&
    pass "failed write leaves nothing half-written" || fail "failed write: $(ls -d "$tmp"/failed* 2>&1) $(cat "$tmp/err")"

# The options on the other commands.
expect "--quantizer value" "--quantizer must be rtn or gptq" $AQ score $M --data $D --method kl --quantizer awq
expect "--gptq-* without gptq" "go with --quantizer gptq" $AQ eval $M --data $D --format w4a8 --gptq-actorder none
expect "--gptq-dampening range" "--gptq-dampening" $AQ score $M --data $D --method kl --quantizer gptq --gptq-dampening 2
expect "--gptq-actorder value" "--gptq-actorder must be" $AQ score $M --data $D --method kl --quantizer gptq --gptq-actorder random
expect "--gptq-pipeline value" "--gptq-pipeline must be basic or sequential" $AQ eval $M --data $D --format w4a8 \
    --quantizer gptq --gptq-pipeline layerwise
expect "--gptq-pipeline without gptq" "go with --quantizer gptq" $AQ quantize $M --recipe "$tmp/all.json" \
    --gptq-pipeline basic --out "$tmp/o5"
expect "--gptq-pipeline on score" "scores always quantize with the basic pipeline" $AQ score $M --data $D --method kl \
    --quantizer gptq --gptq-pipeline sequential
MM=tests/fixtures/qwen3-moe-tiny
MD=tests/fixtures/qwen3_moe_tiny_ids.npy
# Both MoE fixtures, every linear W4A8 (routers left alone): byte for byte the checkpoints llm-compressor
# saves (tests/ref/quantize_moe_ref.py), per-expert experts as stored (Qwen3-MoE) or unfused from
# transformers 5's fused tensors (Qwen3-VL-MoE); the vision tower is one ignore pattern where
# llm-compressor names its linears.
for fx in qwen3-moe-tiny:qwen3_moe_tiny_ids qwen3-vl-moe-tiny:qwen3_vl_moe_tiny_ids; do
    name=${fx%%:*} ids=tests/fixtures/${fx#*:}.npy
    $AQ search tests/fixtures/$name --data $ids --method gradient --numerics compressed-tensors --budget 4 \
        --bits modelopt --out "$tmp/$name.json" >/dev/null 2>&1 || fail "$name recipe"
    $AQ quantize tests/fixtures/$name --recipe "$tmp/$name.json" --out "$tmp/q-$name" 2>"$tmp/err" ||
        fail "quantize $name: $(cat "$tmp/err")"
    python3 - "$tmp" $name <<'PY' && pass "$name rtn checkpoint: llm-compressor's, byte for byte" ||
import json, re, sys
sys.path.insert(0, sys.argv[1]); from layout import layout
qc, t = layout(sys.argv[1] + "/q-" + sys.argv[2])
ref = json.load(open("tests/fixtures/quantize_moe_ref.json"))[sys.argv[2]]
want = dict(ref["quantization_config"])
vis = [n for n in want["ignore"] if n.startswith("model.visual.")]
ign = [n for n in want["ignore"] if n not in vis]
got_ign = qc.pop("ignore")
if vis:  # one pattern, matching each of llm-compressor's vision linears
    assert re.fullmatch(got_ign[0][3:], vis[0]) and all(re.fullmatch(got_ign[0][3:], n) for n in vis), got_ign
    got_ign = got_ign[1:]
assert got_ign == ign, (got_ign, ign)
want.pop("ignore")
assert qc == want, qc
bad = [k for k in ref["tensors"] if t.get(k) != ref["tensors"][k]]
assert not bad and len(t) == len(ref["tensors"]), bad[:5]
PY
        fail "$name rtn checkpoint differs from llm-compressor's"
done
r=$($AQ eval $MM --data $MD --format w4a8 --json 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['kl'])")
g=$($AQ eval $MM --data $MD --format w4a8 --quantizer gptq --json 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['kl'])")
python3 -c "import sys; r, g = float(sys.argv[1]), float(sys.argv[2]); assert 0 < g < 0.8 * r" "$r" "$g" &&
    pass "eval, MoE: GPTQ (experts included) below RTN's KL ($g vs $r)" || fail "eval MoE gptq KL $g vs rtn $r"
if nvidia-smi -L >/dev/null 2>&1; then
    # GPTQ scores on the GPU against the CPU's, end to end, two formats: the GPU's GPTQ weights come from
    # bf16 passes' Hessians (the CPU's from fp32 ones), so each group's weights differ a little
    # (tests/test_gpu.c holds the scorers alone, on one set of weights, to 1%): per group within 15%
    # (w4a8; w8a8 30%), ranked alike (Spearman >= 0.95). w4a8 alone measured 12.7% / 4.1% on an H200.
    for meth in kl gradient; do
        $AQ score $M --data $D --num-samples 2 --method $meth --format w4a8,w8a8 --quantizer gptq --device cpu \
            --json "$tmp/gq-cpu-$meth.json" >/dev/null 2>"$tmp/err" || fail "gptq $meth on the CPU: $(cat "$tmp/err")"
        $AQ score $M --data $D --num-samples 2 --method $meth --format w4a8,w8a8 --quantizer gptq --device cuda \
            --json "$tmp/gq-cuda-$meth.json" >/dev/null 2>"$tmp/err" || fail "gptq $meth on the GPU: $(cat "$tmp/err")"
        grep -q "GPTQ weights resident on the GPU" "$tmp/err" || fail "gptq $meth --device cuda did not use the GPU's given weights"
        out=$(python3 - "$tmp/gq-cpu-$meth.json" "$tmp/gq-cuda-$meth.json" $meth <<'PY'
import json, sys
a, b = (json.load(open(p))["groups"] for p in sys.argv[1:3])
assert [g["name"] for g in a] == [g["name"] for g in b]
def ranks(v):
    r = [0] * len(v)
    for k, i in enumerate(sorted(range(len(v)), key=lambda i: v[i])): r[i] = k
    return r
ok, msg = True, []
# each format's GPTQ weights from the original ones (a second format built on the first's would be far
# off); w8a8's scores are small, its tolerance wider
for fmt, tol in (("w4a8", 0.15), ("w8a8", 0.3)):
    pairs = [(g["scores"][fmt], h["scores"][fmt]) for g, h in zip(a, b) if g["scores"][fmt] is not None]
    worst = max(abs(x - y) / max(abs(x), abs(y)) for x, y in pairs)
    ra, rb, n = ranks([x for x, _ in pairs]), ranks([y for _, y in pairs]), len(pairs)
    rho = 1 - 6 * sum((x - y) ** 2 for x, y in zip(ra, rb)) / (n * (n * n - 1))
    msg.append(f"{fmt}: {n} groups, worst relative difference {worst:.3g}, Spearman {rho:.4f}")
    ok = ok and worst < tol and rho >= 0.95
print("; ".join(msg))
sys.exit(0 if ok else 1)
PY
)
        [ $? -eq 0 ] && pass "gptq $meth scores on the GPU = the CPU's: $out" || fail "gptq $meth GPU against CPU: $out"
    done
    # GPTQ's sequential pipeline on the GPU against the CPU's: the same layout, and (below) a deployed model
    # as good. Codes are no test here: the GPU sums X^T X of a bf16 model's inputs (as llm-compressor's bf16
    # model does), the CPU of fp32 ones, and one code flipped at a rounding edge changes the error pushed
    # to the rest of its row (88% equal in layer 0 on the first run; llm-compressor's own bf16 and fp32 runs
    # agree on 83%, tests/fixtures/quantize_qwen3_tiny_ref.json). Printed for the record.
    $AQ quantize $M --recipe "$tmp/all.json" --data $D --num-samples 2 --quantizer gptq --device cpu --out "$tmp/gcpu" 2>/dev/null
    $AQ quantize $M --recipe "$tmp/all.json" --data $D --num-samples 2 --quantizer gptq --device cuda --out "$tmp/gcuda" \
        2>"$tmp/err" || fail "quantize gptq on the GPU: $(cat "$tmp/err")"
    out=$(python3 - "$tmp" <<'PY'
import json, struct, sys
def tensors(d):
    with open(d + "/model.safetensors", "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in hdr.items() if k != "__metadata__"}
a, b = tensors(sys.argv[1] + "/gcpu"), tensors(sys.argv[1] + "/gcuda")
assert {k: v[:2] for k, v in a.items()} == {k: v[:2] for k, v in b.items()}, "layouts differ"
same = tot = same0 = tot0 = 0
for k, (dt, _, x) in a.items():
    if dt != "I8": continue
    y = b[k][2]
    eq = sum(p == q for p, q in zip(x, y))
    same, tot = same + eq, tot + len(x)
    if ".layers.0." in k: same0, tot0 = same0 + eq, tot0 + len(x)
print(f"codes equal: layer 0 {same0 / tot0:.4f}, all {same / tot:.4f}")
PY
)
    [ $? -eq 0 ] && pass "gptq on the GPU: CPU's layout ($out)" || fail "gptq on the GPU against the CPU: $out"
    # the model each deploys: the KL of eval's GPTQ step on the GPU within 10% of the CPU's for the
    # sequential pipeline, 15% for basic, whose GPU and CPU Hessians differ most (bf16 inputs against fp32
    # ones, 2 windows): measured on one H100 7.73 against 8.31 with fp32 deployed weights, 7.46 against
    # 8.44 since eval deploys bf16(code x scale) as the checkpoint loads; sequential 7.77 against 7.84
    for pl in sequential basic; do
        tol=0.1
        [ $pl = basic ] && tol=0.15
        kc=$($AQ eval $M --data $D --num-samples 2 --format w4a8 --quantizer gptq --gptq-pipeline $pl --device cpu \
            --json 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['kl'])")
        kg=$($AQ eval $M --data $D --num-samples 2 --format w4a8 --quantizer gptq --gptq-pipeline $pl --device cuda \
            --json 2>"$tmp/err" | python3 -c "import json,sys; print(json.load(sys.stdin)['kl'])")
        python3 -c "import sys; c, g = map(float, sys.argv[1:3]); assert c > 0 and abs(g - c) <= float(sys.argv[3]) * c" "$kc" "$kg" "$tol" &&
            pass "eval gptq $pl, GPTQ on the GPU: KL $kg vs the CPU's $kc" ||
            fail "eval gptq $pl on the GPU: KL '$kg' vs the CPU's '$kc' $(tail -2 "$tmp/err")"
    done
else
    echo "SKIP quantize: gptq with --device cuda (no GPU)"
fi
r=$($AQ eval $M --data $D --num-samples 2 --format w4a8 --json 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['kl'])")
g=$($AQ eval $M --data $D --num-samples 2 --format w4a8 --quantizer gptq --json 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['kl'])")
python3 -c "import sys; r, g = float(sys.argv[1]), float(sys.argv[2]); assert 0 < g < 0.6 * r" "$r" "$g" &&
    pass "eval: GPTQ's KL well below RTN's ($g vs $r)" || fail "eval gptq KL $g vs rtn $r"
b=$($AQ eval $M --data $D --num-samples 2 --format w4a8 --quantizer gptq --gptq-pipeline basic --json 2>/dev/null |
    python3 -c "import json,sys; j = json.load(sys.stdin); print(j['kl'] if j['gptq_pipeline'] == 'basic' else -1)")
python3 -c "import sys; r, g, b = map(float, sys.argv[1:]); assert 0 < b < 0.6 * r and b != g" "$r" "$g" "$b" &&
    pass "eval --gptq-pipeline basic: its own KL, well below RTN's ($b)" || fail "eval gptq basic KL $b (sequential $g, rtn $r)"
# Cache: the second score reads the first's GPTQ weights and gives the same scores; a corrupt file is
# ignored with a warning and rewritten.
mkdir "$tmp/cache"
$AQ score $M --data $D --num-samples 2 --method gradient --quantizer gptq --device cpu --gptq-cache "$tmp/cache" --json "$tmp/g1.json" >/dev/null 2>"$tmp/e1"
$AQ score $M --data $D --num-samples 2 --method gradient --quantizer gptq --device cpu --gptq-cache "$tmp/cache" --json "$tmp/g2.json" >/dev/null 2>"$tmp/e2"
grep -q "from the cache" "$tmp/e2" && cmp -s "$tmp/g1.json" "$tmp/g2.json" && pass "gptq cache reused, same scores" ||
    fail "gptq cache: $(cat "$tmp/e2")"
f=$(ls "$tmp"/cache/gptq-*.bin | head -1)
printf 'x' | dd of="$f" bs=1 seek=100 conv=notrunc 2>/dev/null
$AQ score $M --data $D --num-samples 2 --method gradient --quantizer gptq --device cpu --gptq-cache "$tmp/cache" --json "$tmp/g3.json" >/dev/null 2>"$tmp/e3"
grep -q "not a valid GPTQ cache" "$tmp/e3" && cmp -s "$tmp/g1.json" "$tmp/g3.json" && pass "corrupt gptq cache ignored" ||
    fail "corrupt cache: $(cat "$tmp/e3")"
# Each pipeline its own cache entry: basic after sequential recomputes, and gives eval's basic KL.
mkdir "$tmp/c2"
$AQ eval $M --data $D --num-samples 2 --format w4a8 --quantizer gptq --gptq-cache "$tmp/c2" >/dev/null 2>&1
b2=$($AQ eval $M --data $D --num-samples 2 --format w4a8 --quantizer gptq --gptq-pipeline basic --gptq-cache "$tmp/c2" \
    --json 2>"$tmp/e4" | python3 -c "import json,sys; print(json.load(sys.stdin)['kl'])")
! grep -q "from the cache" "$tmp/e4" && [ "$(ls "$tmp"/c2/gptq-*.bin | wc -l)" -eq 2 ] && [ "$b2" = "$b" ] &&
    pass "gptq cache: one entry per pipeline" || fail "gptq cache across pipelines: $b2 vs $b, $(cat "$tmp/e4")"
