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
$AQ search $V --data $VD --method kl --format w4a8 --budget 6 --emit llmcompressor="$tmp/r.yaml" >/dev/null 2>&1 ||
    fail "rtn search"
for k in g:0.05:null r:0.01:static; do
    IFS=: read -r f damp order <<<"$k"
    out=$("$YJ" --yaml-json "$tmp/$f.yaml" | python3 -c '
import json, sys
g = json.load(sys.stdin)["quant_stage"]["quant_modifiers"]["GPTQModifier"]
print(g.get("dampening_frac"), g.get("actorder"), g.get("block_size"))')
    [ "$out" = "$damp $order 128" ] && pass "recipe.yaml carries dampening_frac $damp, actorder $order" ||
        fail "recipe.yaml GPTQ settings: got '$out', want '$damp $order 128'"
done
