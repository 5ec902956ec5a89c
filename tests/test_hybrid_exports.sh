#!/usr/bin/env bash
# The hybrid families' exports (issue 26) as llm-compressor and ModelOpt apply them, and autoq's numerics
# against llm-compressor's own. tests/ref/validate_exports.py --numerics applied the committed exports
# (tests/fixtures/exports/qwen3_5*, qwen3_next*) with the real tools (llmcompressor 0.14.0.1,
# nvidia-modelopt 0.47.0, compressed-tensors 0.19.0, transformers 5.17.0, torch 2.11.0, on the CPU) and
# recorded the results and llm-compressor's outputs; this test, stdlib Python only (CI has no PyTorch):
# - this build writes those exports (same_json: the YAML as parsed, keys, strings and formats exactly, the
#   recipe's scores within 1e-3 relative), and tests/ref/check_exports.py's model of both tools' matching
#   selects exactly the intended modules (never a router, shared-expert gate, conv1d, norm, embedding,
#   lm_head, vision tower or mtp tensor);
# - the record says both tools quantized exactly the intended linears, every fused group in one format;
# - autoq quantize (RTN) = llm-compressor's checkpoint byte for byte, eval --recipe's logits and NLL / KL
#   as llm-compressor's checkpoint computes them, GPTQ's codes as llm-compressor's GPTQModifier's
#   (tests/ref/check_hybrid_numerics.py states each tolerance).
set -u
SUITE=hybrid_exports
. "$(dirname "$0")/lib.sh"
F=tests/fixtures
E=$F/exports
YJ="$(dirname "$AQ")/tests/test_outputs" # --yaml-json FILE: YAML as canonical JSON (libyaml)
SJ="python3 tests/same_json.py"
CH="python3 tests/ref/check_hybrid_numerics.py"
if [ ! -x "$YJ" ]; then
    echo "SKIP $SUITE: $YJ not built (make $YJ)"
    exit 0
fi
# kind, fixture, token windows, formats scored (kl, compressed-tensors numerics), search --budget 7
KINDS="qwen3_5:qwen3_5-tiny:qwen3_5_tiny:w4a8,fp8 qwen3_5_moe:qwen3_5-moe-tiny:qwen3_5_moe_tiny:w4a8,fp8
qwen3_next:qwen3-next-tiny:qwen3_next_tiny:w4a8,fp8 qwen3_5_int:qwen3_5-tiny:qwen3_5_tiny:w4a8,w8a8
qwen3_5_moe_int:qwen3_5-moe-tiny:qwen3_5_moe_tiny:w4a8,w8a8 qwen3_next_int:qwen3-next-tiny:qwen3_next_tiny:w4a8,w8a8"
for k in $KINDS; do
    IFS=: read -r kind dir ids fmts <<<"$k"
    $AQ score $F/$dir --data $F/${ids}_ids.npy --method kl --format $fmts --numerics compressed-tensors \
        --out "$tmp/$kind.h5" >/dev/null 2>&1 &&
        $AQ search --scores "$tmp/$kind.h5" --budget 7 --out "$tmp/$kind.json" --emit llmcompressor="$tmp/$kind.yaml" \
            --emit modelopt="$tmp/${kind}_q.json" >/dev/null 2>&1 || fail "$kind: score and search"
    out="" && "$YJ" --yaml-json "$tmp/$kind.yaml" >"$tmp/$kind.yaml.json" && "$YJ" --yaml-json $E/${kind}_recipe.yaml >"$tmp/${kind}_ref.yaml.json" &&
        out=$($SJ "$tmp/$kind.yaml.json" "$tmp/${kind}_ref.yaml.json" && $SJ "$tmp/${kind}_q.json" $E/${kind}_quant_cfg.json &&
            $SJ "$tmp/$kind.json" $E/${kind}_recipe.json --rtol 1e-3) &&
        pass "validated $kind exports unchanged" || fail "$kind exports differ from the validated ones in $E: $out"
    out=$(python3 tests/ref/check_exports.py "$tmp/$kind.json" "$tmp/$kind.yaml.json" "$tmp/${kind}_q.json" 2>&1) &&
        pass "$kind export patterns select exactly the intended modules: ${out#exports ok: }" || fail "$kind export patterns: $out"
done

# The record: the committed files as applied, both tools on exactly the intended linears in the intended
# numerics, each fused group (in_proj_qkvz = in_proj_qkv + in_proj_z, in_proj_ba, q/k/v, gate_up) in one
# format, GPTQ changing exactly those weights, routers and shared-expert gates untouched, and the mixes
# the fixtures were chosen for.
python3 - <<'PY' && pass "llm-compressor and ModelOpt applied the hybrid exports to exactly the intended modules" || fail "hybrid exports validation record (tests/fixtures/exports_validation.json)"
import collections, hashlib, json
r = json.load(open("tests/fixtures/exports_validation.json"))
assert r["ok"] is True
for kind in ("qwen3_5", "qwen3_5_moe", "qwen3_next", "qwen3_5_int", "qwen3_5_moe_int", "qwen3_next_int"):
    e = r[kind]
    for name, h in e["sha256"].items():
        assert hashlib.sha256(open("tests/fixtures/exports/" + name, "rb").read()).hexdigest() == h, name + " changed since validation"
    lc, mo = e["llmcompressor"], e["modelopt"]
    for t in (lc, mo):
        assert t["match"] is True and t["quantized"] == e["intended"] and t["lm_head_visual_router_quantized"] == [], (kind, t)
        assert t["groups_one_format"] is True, (kind, t)
    assert lc["gptq_changed_exactly_quantized"] and lc["saved_weight_scales_match"], (kind, lc)
    if "moe" in kind or "next" in kind:
        assert lc["routers_untouched"] and lc["shared_expert_gates_untouched"] and lc["shared_expert_gates"] >= 3, (kind, lc)
        assert lc["expert_linears_quantized"] == e["intended_expert_linears"] == 36, (kind, lc)
        assert mo["routers_untouched"] and mo["shared_expert_gates_untouched"] and mo["router_quantizers"] == 0, (kind, mo)
        assert mo["expert_linears_quantized"] == 36, (kind, mo)
    choices = collections.Counter(g["choice"] for g in json.load(open(f"tests/fixtures/exports/{kind}_recipe.json"))["groups"])
    assert set(choices) == ({"bf16", "w4a8", "w8a8"} if kind.endswith("_int") else {"bf16", "w4a8", "fp8"}), (kind, choices)
PY

# numerics (tests/ref/check_hybrid_numerics.py)
for k in $KINDS; do
    IFS=: read -r kind dir ids fmts <<<"$k"
    case $kind in *_int) continue ;; esac
    d=$F/$dir D=$F/${ids}_ids.npy
    $AQ quantize $d --recipe $E/${kind}_recipe.json --out "$tmp/$kind.rtn" >/dev/null 2>&1 || fail "$kind: quantize"
    out=$($CH rtn $kind "$tmp/$kind.rtn" 2>&1) && pass "quantize (RTN) = llm-compressor's checkpoint: $out" || fail "quantize $kind against llm-compressor: $out"
    $CH weights-only $E/${kind}_recipe.json "$tmp/$kind.w.json" &&
        $AQ eval $d --data $D --recipe "$tmp/$kind.w.json" --logits "$tmp/$kind.w.npy" >/dev/null 2>&1 &&
        $AQ eval $d --data $D --recipe $E/${kind}_recipe.json --logits "$tmp/$kind.l.npy" --json >"$tmp/$kind.e.json" 2>/dev/null ||
        fail "$kind: eval --recipe"
    out=$($CH logits $kind "$tmp/$kind.w.npy" "$tmp/$kind.l.npy" "$tmp/$kind.e.json" 2>&1) &&
        pass "eval --recipe as llm-compressor's checkpoint computes: $out" || fail "eval $kind against llm-compressor: $out"
    rm -rf "$tmp/$kind.f32"
    $CH f32 $d "$tmp/$kind.f32" &&
        $AQ quantize "$tmp/$kind.f32" --recipe $E/${kind}_int_recipe.json --quantizer gptq --data $D --out "$tmp/$kind.gq" >/dev/null 2>&1 &&
        $AQ eval $d --data $D --recipe $E/${kind}_int_recipe.json --quantizer gptq --json >"$tmp/$kind.ge.json" 2>/dev/null ||
        fail "$kind: gptq quantize / eval"
    out=$($CH gptq $kind "$tmp/$kind.gq" "$tmp/$kind.ge.json" 2>&1) &&
        pass "GPTQ = llm-compressor's GPTQModifier from the same recipe: $out" || fail "gptq $kind against llm-compressor: $out"
done
