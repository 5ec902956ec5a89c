#!/usr/bin/env bash
# Scored = deployed (README §8-§10): the quantizer settings autoq used travel in the exports, eval deploys the
# scales quantize stores and writes the quantized model's logits, the numerics of an export are said.
set -u
SUITE=deploy
. "$(dirname "$0")/lib.sh"
YJ="$(dirname "$AQ")/tests/test_outputs" # --yaml-json FILE: YAML as canonical JSON (libyaml)
V=tests/fixtures/qwen3-vl-tiny
VD=tests/fixtures/qwen3_vl_tiny_ids.npy

# 1. GPTQ settings in the llm-compressor recipe: the ones given, or autoq's defaults.
$AQ search $V --data $VD --method kl --format w4a8 --quantizer gptq --gptq-dampening 0.05 --gptq-actorder none \
    --budget 6 --emit llmcompressor="$tmp/g.yaml" >/dev/null 2>"$tmp/err" || fail "gptq search: $(cat "$tmp/err")"
$AQ search $V --data $VD --method kl --format w4a8 --budget 6 --emit llmcompressor="$tmp/r.yaml" \
    --emit modelopt="$tmp/r.json" >/dev/null 2>"$tmp/r.err" || fail "rtn search"
for k in g:0.05:null r:0.01:static; do
    IFS=: read -r f damp order <<<"$k"
    out=$("$YJ" --yaml-json "$tmp/$f.yaml" | python3 -c '
import json, sys
g = json.load(sys.stdin)["quant_stage"]["quant_modifiers"]["GPTQModifier"]
print(g.get("dampening_frac"), g.get("actorder"), g.get("block_size"))')
    [ "$out" = "$damp $order 128" ] && pass "recipe.yaml carries dampening_frac $damp, actorder $order" ||
        fail "recipe.yaml GPTQ settings: got '$out', want '$damp $order 128'"
done

# 3. An export whose tool applies other numerics than the scores' says so, by how much, and how to rescore.
grep -q "WHAT IS SCORED IS NOT WHAT IS SHIPPED.*w4a8 weights scale amax/7 -> amax/7.5 (x0.9333).*w4a8 inputs scale amax/127 -> amax/127.5.*--numerics compressed-tensors" "$tmp/r.err" &&
    ! grep -q "emit modelopt" "$tmp/r.err" && pass "llm-compressor export of ModelOpt-numerics scores warns with the numbers" ||
    fail "numerics warning (llmcompressor): $(cat "$tmp/r.err")"
$AQ search $V --data $VD --method kl --format w4a8 --numerics compressed-tensors --budget 6 \
    --emit llmcompressor="$tmp/c.yaml" --emit modelopt="$tmp/c.json" >/dev/null 2>"$tmp/c.err" || fail "ct search"
! grep -q "emit llmcompressor" "$tmp/c.err" && grep -q "emit modelopt=.*amax/7.5 -> amax/7 (x1.0714).*--numerics modelopt" "$tmp/c.err" &&
    pass "ModelOpt export of compressed-tensors scores warns, llm-compressor's does not" ||
    fail "numerics warning (modelopt): $(cat "$tmp/c.err")"

# 3b. The emit target decides the numerics the user did not choose: llm-compressor alone -> scored in its
# numerics (said on stderr, no warning); ModelOpt-numerics scores for llm-compressor alone -> exit 2 with the fix.
$AQ search $V --data $VD --method kl --format w4a8 --budget 6 --emit llmcompressor="$tmp/a.yaml" --out "$tmp/a.json" \
    >/dev/null 2>"$tmp/a.err" || fail "llmcompressor-only search: $(cat "$tmp/a.err")"
grep -q '"numerics": "compressed-tensors"' "$tmp/a.json" && grep -q "scoring with --numerics compressed-tensors" "$tmp/a.err" &&
    ! grep -q "WHAT IS SCORED" "$tmp/a.err" && pass "--emit llmcompressor alone scores in compressed-tensors numerics, what llm-compressor ships" ||
    fail "llmcompressor-only numerics: $(cat "$tmp/a.err"; grep -o '"numerics": "[a-z-]*"' "$tmp/a.json" | head -2)"
$AQ score $V --data $VD --method kl --format w4a8 --out "$tmp/mo.h5" >/dev/null 2>&1
expect "llm-compressor recipe from ModelOpt-numerics scores is refused with the command that fixes it" \
    "score again with them: autoq score $V --data ... --numerics compressed-tensors" \
    $AQ search --scores "$tmp/mo.h5" --budget 6 --emit llmcompressor="$tmp/mo.yaml"
[ ! -e "$tmp/mo.yaml" ] && pass "nothing written when refused" || fail "the refused recipe.yaml was written"

# 2. eval --recipe deploys what quantize writes: the checkpoint's weights (codes x bf16 scales, in bf16),
# dequantized here with numpy into a plain bf16 model and run by plain eval, give the very logits of
# eval --recipe --logits (a weight-only per-channel format, so that no input quantizer is involved).
M=../shared/models/qwen3-tiny
D=tests/fixtures/qwen3_tiny_ids.npy
# deq.py SRC OUT: the quantized checkpoint SRC as a plain bf16 model OUT (code x scale rounded to bf16).
cat >"$tmp/deq.py" <<'PY'
import json, os, shutil, struct, sys
import numpy as np
src, dst = sys.argv[1:3]
os.mkdir(dst)
with open(src + "/model.safetensors", "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    hdr = json.loads(f.read(n))
    data = f.read()
def arr(k):
    v = hdr[k]; a, b = v["data_offsets"]
    dt = {"I8": np.int8, "BF16": np.uint16, "F32": np.float32, "I32": np.int32, "I64": np.int64, "F8_E4M3": np.uint8, "U8": np.uint8}[v["dtype"]]
    return np.frombuffer(data[a:b], dtype=dt).reshape(v["shape"])
def f32(bf): return (bf.astype(np.uint32) << 16).view(np.float32)
def bf16(x):  # round to nearest even
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
def e4m3(b):
    b = b.astype(np.int32); e = (b >> 3) & 15; m = (b & 7).astype(np.float32)
    v = np.where(e > 0, (1 + m / 8) * np.exp2(e - 7.0), m * 2.0 ** -9)
    return np.where(b & 0x80, -v, v).astype(np.float32)
out, blobs, off = {}, [], 0
for k in sorted(k for k in hdr if k != "__metadata__"):
    if k.endswith("_scale") or k.endswith("weight_shape"):  # _global_scale too
        continue
    v = hdr[k]
    if k.endswith(".weight_packed") and v["dtype"] == "U8":  # NVFP4: two E2M1 codes a byte, low nibble first
        p = arr(k); name = k[:-7]
        e2m1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], np.float32)
        c = np.stack([p & 15, p >> 4], -1).reshape(p.shape[0], -1)
        c = np.where(c & 8, -1, 1) * e2m1[c & 7]
        s = e4m3(arr(name + "_scale")) / arr(name + "_global_scale").view(np.float32)[0]
        w = bf16(c * np.repeat(s, 16, axis=1)); k = name
    elif k.endswith(".weight_packed"):  # intB, 32 / B to an int32 from the lowest bits, offset by 2^(B-1)
        p = arr(k).astype(np.uint32); name = k[:-7]
        shape = [int(x) for x in arr(name + "_shape")]
        b = p.shape[1] * 32 // shape[1]; per = 32 // b
        c = np.stack([(p >> (b * i)) & ((1 << b) - 1) for i in range(per)], -1).reshape(shape[0], -1)[:, :shape[1]]
        c = c.astype(np.float32) - (1 << (b - 1))
        s = f32(arr(name + "_scale")); g = shape[1] // s.shape[1]
        w = bf16(c * np.repeat(s, g, axis=1)); k = name
    elif v["dtype"] in ("I8", "F8_E4M3"):
        c = arr(k).astype(np.float32) if v["dtype"] == "I8" else e4m3(arr(k))
        w = bf16(c * f32(arr(k + "_scale")))
    else:
        w = arr(k); assert v["dtype"] == "BF16", k
    b = w.astype(np.uint16).tobytes()
    out[k] = {"dtype": "BF16", "shape": list(w.shape), "data_offsets": [off, off + len(b)]}
    blobs.append(b); off += len(b)
text = json.dumps(out).encode(); text += b" " * (-len(text) % 8)
with open(dst + "/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text)
    for b in blobs: f.write(b)
cfg = json.load(open(src + "/config.json")); cfg.pop("quantization_config")
json.dump(cfg, open(dst + "/config.json", "w"))
shutil.copy(src + "/tokenizer.json", dst)
PY
# cmp.py A B: the largest |difference| of two .npy logits (1e-4 allowed: the same weights, the same engine)
cat >"$tmp/cmp.py" <<'PY'
import sys
import numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
d = float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")
print(f"max |dlogit| {d:.3g}")
sys.exit(0 if d <= 1e-4 else 1)
PY
cat >"$tmp/w4ch.json" <<'J'
{"quant_cfg": {"*weight_quantizer": {"num_bits": 4, "axis": 0, "enable": true}, "*input_quantizer": {"enable": false}},
 "algorithm": "max"}
J
cat >"$tmp/nvfp4w.json" <<'J'
{"quant_cfg": {"*weight_quantizer": {"num_bits": [2, 1], "block_sizes": {"-1": 16, "type": "dynamic", "scale_bits": [4, 3]},
   "axis": null, "enable": true}, "*input_quantizer": {"enable": false}}, "algorithm": "max"}
J
cat >"$tmp/fp8w.json" <<'J'
{"quant_cfg": {"*weight_quantizer": {"num_bits": [4, 3], "axis": 0, "enable": true}, "*input_quantizer": {"enable": false}},
 "algorithm": "max"}
J
if [ -f $M/config.json ]; then
    # 4. the formats quantize writes beyond int-quantized: pack-quantized int4 groups (w4a16) and
    # float-quantized FP8 (weights only here), each loaded as the plain model eval --recipe measures
    for f in w4a16:configs/formats/w4a16.json:4.6 fp8w:$tmp/fp8w.json:9 nvfp4w:$tmp/nvfp4w.json:4.6; do
        IFS=: read -r n fmt b <<<"$f"
        $AQ search $M --data $D --num-samples 1 --method gradient --device cpu --format "$fmt" --budget $b \
            --out "$tmp/${n}_r.json" >/dev/null 2>"$tmp/err" || fail "$n recipe: $(cat "$tmp/err")"
        $AQ quantize $M --recipe "$tmp/${n}_r.json" --out "$tmp/${n}_q" 2>"$tmp/err" || fail "quantize $n: $(cat "$tmp/err")"
        $AQ eval $M --data $D --num-samples 1 --recipe "$tmp/${n}_r.json" --logits "$tmp/${n}_eval.npy" >/dev/null 2>&1
        python3 "$tmp/deq.py" "$tmp/${n}_q" "$tmp/${n}_deq" && $AQ eval "$tmp/${n}_deq" --data $D --num-samples 1 \
            --logits "$tmp/${n}_plain.npy" >/dev/null 2>"$tmp/err" || fail "$n dequantized eval: $(cat "$tmp/err")"
        out=$(python3 "$tmp/cmp.py" "$tmp/${n}_eval.npy" "$tmp/${n}_plain.npy" 2>&1) &&
            pass "$n checkpoint ($(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['quantization_config']['format'])" "$tmp/${n}_q/config.json")) as loaded = eval --recipe: $out" ||
            fail "$n checkpoint vs eval --recipe: $out"
    done
    $AQ search $M --data $D --num-samples 1 --method gradient --device cpu --format "$tmp/w4ch.json" --budget 4.6 \
        --out "$tmp/w4ch_r.json" >/dev/null 2>"$tmp/err" || fail "w4 channel recipe: $(cat "$tmp/err")"
    $AQ quantize $M --recipe "$tmp/w4ch_r.json" --out "$tmp/w4ch_q" 2>"$tmp/err" || fail "quantize w4ch: $(cat "$tmp/err")"
    $AQ eval $M --data $D --num-samples 1 --recipe "$tmp/w4ch_r.json" --logits "$tmp/w4ch_eval.npy" >/dev/null 2>"$tmp/err" ||
        fail "eval --recipe --logits: $(cat "$tmp/err")"
    [ -s "$tmp/w4ch_eval.npy" ] && pass "eval --recipe --logits writes the quantized model's logits" ||
        fail "eval --recipe --logits wrote nothing"
    python3 "$tmp/deq.py" "$tmp/w4ch_q" "$tmp/w4ch_deq" && $AQ eval "$tmp/w4ch_deq" --data $D --num-samples 1 \
        --logits "$tmp/w4ch_plain.npy" >/dev/null 2>"$tmp/err" || fail "dequantized checkpoint eval: $(cat "$tmp/err")"
    out=$(python3 "$tmp/cmp.py" "$tmp/w4ch_eval.npy" "$tmp/w4ch_plain.npy" 2>&1) &&
        pass "eval --recipe = the checkpoint quantize writes, as loaded: $out" || fail "eval --recipe vs checkpoint: $out"
    $AQ eval $M --data $D --num-samples 1 --logits "$tmp/plain.npy" >/dev/null 2>&1
    python3 "$tmp/cmp.py" "$tmp/w4ch_eval.npy" "$tmp/plain.npy" >/dev/null 2>&1 &&
        fail "eval --recipe --logits wrote the unquantized model's logits" || pass "the logits are the quantized model's"
    # The same checkpoints through transformers + compressed-tensors (when they import): no missing or
    # unexpected keys, logits within 1e-3 of eval --recipe (tests/ref/check_quantize_formats.py); weight-only
    # formats: transformers' decompressed path (dequantize=True) leaves the inputs unquantized.
    out=$(python3 tests/ref/check_quantize_formats.py $D "$tmp/w4ch_q:$tmp/w4ch_eval.npy" "$tmp/w4a16_q:$tmp/w4a16_eval.npy" \
        "$tmp/fp8w_q:$tmp/fp8w_eval.npy" "$tmp/nvfp4w_q:$tmp/nvfp4w_eval.npy" 2>/dev/null)
    case $? in
    0) pass "transformers + compressed-tensors load every written format as eval --recipe measures it: $(echo $out | tr '\n' ' ')" ;;
    77) echo "SKIP deploy: transformers + compressed-tensors: $out" ;;
    *) fail "transformers + compressed-tensors: $out" ;;
    esac
else
    echo "SKIP deploy: $M missing (eval --recipe against the checkpoint)"
fi

# 5. Every family autoq reads, written by quantize, loads in transformers + compressed-tensors with no missing or
# unexpected keys and gives eval --recipe's logits (tests/ref/check_quantize_formats.py): the Qwen3-MoE and
# Qwen3-VL(-MoE) fixtures with integer weight-only formats (pack-quantized, experts per expert), and on qwen3-tiny
# the formats that quantize inputs (int8 and FP8 per token), compressed-tensors numerics, whose numerics the
# script compares exactly per linear (logits: within transformers' own float32-vs-float64 spread, NLL 1e-3).
cat >"$tmp/w8ch.json" <<'J'
{"quant_cfg": {"*weight_quantizer": {"num_bits": 8, "axis": 0, "enable": true}, "*input_quantizer": {"enable": false}},
 "algorithm": "max"}
J
pairs=()
for c in qwen3-moe-tiny:w4ch:4.6 qwen3-vl-moe-tiny:w4ch:4.6 qwen3-vl-tiny:w8ch:8.2 qwen3-moe-tiny:w8ch:8.3; do
    IFS=: read -r F f b <<<"$c"
    I=tests/fixtures/$(echo "$F" | tr - _)_ids.npy
    $AQ search tests/fixtures/$F --data $I --num-samples 2 --method gradient --device cpu --format "$tmp/$f.json" \
        --budget $b --out "$tmp/${F}_$f.json" >/dev/null 2>"$tmp/err" || fail "$F $f recipe: $(cat "$tmp/err")"
    $AQ quantize tests/fixtures/$F --recipe "$tmp/${F}_$f.json" --out "$tmp/${F}_${f}_q" 2>"$tmp/err" || fail "quantize $F: $(cat "$tmp/err")"
    $AQ eval tests/fixtures/$F --data $I --num-samples 1 --recipe "$tmp/${F}_$f.json" --logits "$tmp/${F}_${f}.npy" >/dev/null 2>&1
    pairs+=("$I@$tmp/${F}_${f}_q:$tmp/${F}_${f}.npy")
done
if [ -f $M/config.json ]; then
    for f in w4a8_fp8:4.6 w8a8:8.2; do
        IFS=: read -r n b <<<"$f"
        $AQ search $M --data $D --num-samples 1 --method gradient --device cpu --format $n --numerics compressed-tensors \
            --budget $b --out "$tmp/ct_$n.json" >/dev/null 2>"$tmp/err" || fail "$n ct recipe: $(cat "$tmp/err")"
        $AQ quantize $M --recipe "$tmp/ct_$n.json" --out "$tmp/ct_${n}_q" 2>/dev/null || fail "quantize $n"
        $AQ eval $M --data $D --num-samples 1 --recipe "$tmp/ct_$n.json" --logits "$tmp/ct_$n.npy" >/dev/null 2>&1
        pairs+=("$D@$tmp/ct_${n}_q:$tmp/ct_$n.npy")
    done
fi
for p in "${pairs[@]}"; do
    ids=${p%%@*}
    out=$(python3 tests/ref/check_quantize_formats.py "$ids" "${p#*@}" 2>/dev/null)
    rc=$?
    out=$(tail -1 <<<"$out")
    case $rc in
    0) pass "transformers + compressed-tensors load it, eval --recipe's logits: $out" ;;
    77) echo "SKIP deploy: transformers + compressed-tensors: $out" ;;
    *) fail "transformers + compressed-tensors: $out" ;;
    esac
done

# 6. NVFP4 W4A4: each linear's static input_global_scale calibrated on --data (refused without it); the
# checkpoint passes check-checkpoint on Blackwell, and on Hopper it is served weights-only (a warning); q/k/v
# and gate/up share one weight_global_scale (one fused module in vLLM).
if [ -f $M/config.json ]; then
    $AQ search $M --data $D --num-samples 1 --method gradient --device cpu --format nvfp4 --budget 4.6 \
        --out "$tmp/nv.json" >/dev/null 2>&1
    expect "quantize NVFP4 inputs without --data" "NVFP4 inputs need --data" $AQ quantize $M --recipe "$tmp/nv.json" --out "$tmp/nv_x"
    $AQ quantize $M --recipe "$tmp/nv.json" --data $D --num-samples 2 --out "$tmp/nv_q" 2>/dev/null || fail "quantize nvfp4 W4A4"
    $AQ check-checkpoint "$tmp/nv_q" --target vllm --arch sm100 >"$tmp/out" 2>&1 &&
        pass "NVFP4 W4A4 checkpoint passes check-checkpoint --target vllm --arch sm100: $(tail -1 "$tmp/out")" ||
        fail "nvfp4 check-checkpoint: $(cat "$tmp/out")"
    out=$(python3 - "$tmp/nv_q" <<'PY'
import json, struct, sys
d = sys.argv[1]
raw = open(d + "/model.safetensors", "rb").read()
h = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
def val(k):
    a, b = h[k]["data_offsets"]; o = 8 + struct.unpack("<Q", raw[:8])[0]
    return struct.unpack("<f", raw[o + a:o + b])[0]
p = "model.layers.0."
g = [val(p + n + ".weight_global_scale") for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")]
u = [val(p + n + ".weight_global_scale") for n in ("mlp.gate_proj", "mlp.up_proj")]
i = val(p + "self_attn.q_proj.input_global_scale")
cfg = json.load(open(d + "/config.json"))["quantization_config"]
ok = len(set(g)) == 1 and len(set(u)) == 1 and i > 0 and cfg["format"] == "nvfp4-pack-quantized"
print(("ok" if ok else "BAD") + f" q/k/v global {g}, gate/up {u}, input_global_scale {i:.4g}")
PY
)
    [ "${out%% *}" = ok ] && pass "NVFP4: fused siblings share weight_global_scale, input_global_scale stored: $out" || fail "nvfp4 scales: $out"
fi
