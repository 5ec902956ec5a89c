#!/usr/bin/env bash
# Engine profiles (configs/targets/, README "Serving engines"): search --target offers only what the engine
# serves, info --target lists the rules, check-checkpoint flags every module of a broken checkpoint.
set -u
SUITE=check_ckpt
. "$(dirname "$0")/lib.sh"
V=tests/fixtures/qwen3-vl-tiny
VD=tests/fixtures/qwen3_vl_tiny_ids.npy
MO=tests/fixtures/qwen3-moe-tiny
MD=tests/fixtures/qwen3_moe_tiny_ids.npy
S="--method gradient --device cpu --num-samples 2"

# 1. info --target: the rules in force, each with its source and version
out=$($AQ info --target vllm 2>&1)
grep -q "^format       w8a8             served" <<<"$out" && grep -q "^format       w4a8             NOT served" <<<"$out" &&
    grep -q "^fused        q_proj + k_proj + v_proj -> qkv_proj" <<<"$out" && grep -q "^kv cache     fp8_e4m3" <<<"$out" &&
    ! grep -q "source: (null)" <<<"$out" && pass "info --target vllm lists formats, fused modules, KV-cache formats with sources" ||
    fail "info --target vllm: $out"
out=$($AQ info --target vllm --arch sm100 --json | python3 -c '
import json, sys
j = json.load(sys.stdin); r = j["rules"]["formats"]
print(j["arch"], r["w8a8"]["sm100"], r["nvfp4"]["sm100"], ",".join(j["kv_cache_formats"]))')
[ "$out" = "sm100 none native bf16,fp8_e4m3" ] && pass "info --target --json: rules and the KV-cache formats served ($out)" ||
    fail "info --target --json: $out"
python3 - <<'PY' && pass "every rule of every profile names its source and engine version" || fail "a profile rule lacks its source or version"
import json
for n in ["vllm", "sglang", "trtllm"]:
    p = json.load(open(f"configs/targets/{n}.json"))
    rules = list(p["formats"].values()) + p["fused"] + [p["moe_one_format_per_layer"], p["kv_cache_one_format_per_model"]] + list(p["kv_cache_formats"].values())
    assert all(r.get("source") and r.get("version") for r in rules), n
    assert all(r[a] in ("native", "weight_only", "none") for r in p["formats"].values() for a in p["archs"]), n
PY
$AQ info $V --target sglang | grep -q "^target       SGLang" && pass "info MODEL --target prints the model, then the rules" ||
    fail "info MODEL --target"
expect "info --arch without --target" "--arch goes with --target" $AQ info $V --arch sm100
expect "info without MODEL or --target" "MODEL is required" $AQ info

# 2. search --target: a format the engine does not serve on the arch is never offered
$AQ search $V --data $VD $S --format w4a8,w8a8 --budget 9 --target vllm --out "$tmp/r.json" >/dev/null 2>"$tmp/err" ||
    fail "search --target vllm: $(cat "$tmp/err")"
used=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(",".join(sorted({g["choice"] for g in r["groups"] if g.get("choice")})))' "$tmp/r.json" 2>&1)
grep -q "format 'w4a8' (w4a8) is not offered: .*Dynamic4bitLinearKernel" "$tmp/err" && ! grep -q w4a8 <<<"$used" &&
    pass "search --target vllm: w4a8 is not offered (said, with the rule's reason); the recipe uses $used" ||
    fail "search --target vllm: used '$used', $(cat "$tmp/err")"
$AQ search $V --data $VD $S --format w4a8,w8a8 --budget 6 --out "$tmp/r0.json" >/dev/null 2>&1
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if any(g.get("choice")=="w4a8" for g in r["groups"]) else 1)' "$tmp/r0.json" &&
    pass "without --target the same search does choose w4a8 (the filter is what removed it)" || fail "baseline search chose no w4a8"
expect "search --target: every format filtered is infeasible" "infeasible" \
    $AQ search $V --data $VD $S --format w4a8 --budget 6 --target vllm
$AQ search $V --data $VD $S --format w8a8,fp8 --budget 8.2 --target vllm --arch sm100 --out "$tmp/b.json" >/dev/null 2>"$tmp/err"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); c={g["choice"] for g in r["groups"] if g.get("choice")}; sys.exit(0 if c=={"fp8"} else 1)' "$tmp/b.json" &&
    pass "search --target vllm --arch sm100: only fp8 (int8 GEMMs are not served on Blackwell)" || fail "sm100 search: $(cat "$tmp/err")"
expect "search --target with --no-grouping scores" "fuses them into one module" \
    $AQ search $V --data $VD $S --format w8a8 --no-grouping --budget 10 --target vllm
expect "search --arch without --target" "--arch goes with --target" $AQ search $V --data $VD $S --budget 6 --arch sm90

# 3. check-checkpoint: clean (0), findings naming every offending module (1), bad input (2)
$AQ search $V --data $VD $S --format w8a8 --budget 8.11 --target vllm --out "$tmp/w8.json" >/dev/null 2>&1
$AQ quantize $V --recipe "$tmp/w8.json" --out "$tmp/dense" 2>/dev/null || fail "quantize dense w8a8"
$AQ check-checkpoint "$tmp/dense" --target vllm >"$tmp/out" 2>&1 && grep -q " 0 finding(s)" "$tmp/out" &&
    pass "an autoq w8a8 checkpoint passes check-checkpoint --target vllm (exit 0): $(tail -1 "$tmp/out")" ||
    fail "clean checkpoint: $(cat "$tmp/out")"
n=$(python3 -c 'import json,sys; print(sum(1 for g in json.load(open(sys.argv[1]))["groups"] if g.get("choice")))' "$tmp/w8.json")
$AQ check-checkpoint "$tmp/dense" --target vllm --arch sm100 >"$tmp/out" 2>&1
rc=$?
nf=$(grep -c "^FINDING .* \[format\]: config_groups.group_0 (w8a8) is not served by vLLM on sm100" "$tmp/out")
[ $rc -eq 1 ] && [ "$nf" -gt 0 ] && pass "the same checkpoint on sm100: exit 1, each of its $nf int8 linears named" ||
    fail "sm100 check: rc $rc, $nf findings: $(tail -3 "$tmp/out")"
$AQ search $MO --data $MD $S --format w8a8 --budget 8.31 --target vllm --out "$tmp/m.json" >/dev/null 2>"$tmp/err" ||
    fail "moe search: $(cat "$tmp/err")"
$AQ quantize $MO --recipe "$tmp/m.json" --out "$tmp/moe" 2>/dev/null || fail "quantize moe w8a8"
$AQ check-checkpoint "$tmp/moe" --target vllm >"$tmp/out" 2>&1 && pass "an autoq Qwen3-MoE w8a8 checkpoint passes (exit 0)" ||
    fail "moe clean: $(tail -3 "$tmp/out")"
python3 tests/make_bad_ckpt.py "$tmp/dense" "$tmp/moe" "$tmp/bad" || fail "make_bad_ckpt.py"
# case:rule:module that must be named
for c in "fused_split:fused:model.language_model.layers.0.self_attn.k_proj" \
    "missing_scale:scales:model.language_model.layers.1.mlp.down_proj" \
    "scale_shape:scales:model.language_model.layers.1.self_attn.o_proj" \
    "status_frozen:config:config.json" \
    "ignored_quantized:config:model.language_model.layers.0.mlp.down_proj" \
    "unquantized_targeted:config:model.language_model.layers.0.self_attn.o_proj" \
    "kv_nvfp4:kv_cache:config.json" \
    "moe_split:moe:model.layers.0.mlp.experts.5.up_proj"; do
    IFS=: read -r name rule mod <<<"$c"
    $AQ check-checkpoint "$tmp/bad/$name" --target vllm >"$tmp/out" 2>&1
    rc=$?
    [ $rc -eq 1 ] && grep -qF "FINDING $mod [$rule]" "$tmp/out" && pass "check-checkpoint $name: exit 1, names $mod [$rule]" ||
        fail "check-checkpoint $name: rc $rc: $(head -5 "$tmp/out")"
done
out=$($AQ check-checkpoint "$tmp/bad/fused_split" --target vllm --json | python3 -c '
import json, sys
j = json.load(sys.stdin)
print(sorted(f["module"].rsplit(".", 1)[1] for f in j["findings"] if f["rule"] == "fused"))')
[ "$out" = "['k_proj', 'q_proj', 'v_proj']" ] && pass "fused_split names q_proj, k_proj and v_proj of layer 0 (--json)" ||
    fail "fused_split --json: $out"
expect "check-checkpoint without quantization_config" "not a compressed-tensors checkpoint" \
    $AQ check-checkpoint "$tmp/bad/no_qc" --target vllm
expect "check-checkpoint of a truncated safetensors file" "model.safetensors" \
    $AQ check-checkpoint "$tmp/bad/truncated" --target vllm
expect "check-checkpoint --target trtllm (ModelOpt checkpoints)" "not compressed-tensors" \
    $AQ check-checkpoint "$tmp/dense" --target trtllm
expect "check-checkpoint of a file" "not a checkpoint folder" $AQ check-checkpoint "$tmp/w8.json" --target vllm
