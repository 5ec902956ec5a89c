#!/usr/bin/env bash
# Mixture-of-experts models from the command line: info, eval, scores bit-identical for any thread
# count, the CUDA refusal, and bad checkpoints exiting 2 with the tensor or field named.
set -u
SUITE=moe
. "$(dirname "$0")/lib.sh"
moe=tests/fixtures/qwen3-moe-tiny
vl=tests/fixtures/qwen3-vl-moe-tiny
ids=tests/fixtures/qwen3_moe_tiny_ids.npy

$AQ info $moe >"$tmp/info" 2>&1 && grep -q "8 per sparse layer, top-2" "$tmp/info" && grep -q "sparse       2 of 3 layers: 0 2" "$tmp/info" &&
    grep -q "model.layers.0.mlp.gate .*router, never a candidate" "$tmp/info" && pass "info shows the MoE structure" ||
    fail "info: $(head -c 600 "$tmp/info")"
$AQ info $vl --json 2>/dev/null | python3 -c "
import json, sys
j = json.load(sys.stdin); m = j['moe']
g = {l['group'] for l in j['linears']}
assert m['sparse_layers'] == [1] and m['num_experts'] == 8 and m['norm_topk_prob'] and not m['router_candidate']
assert 'model.language_model.layers.1.mlp.experts' in g and not any(l['name'].endswith('mlp.gate') for l in j['linears'])
assert sum(1 for l in j['linears'] if '.experts.' in l['name']) == 24
" && pass "info --json: fused experts, routers no candidates" || fail "info --json on the fused checkpoint"

# Scores and coverage bit-identical for 1 and 3 threads (README §6).
for m in kl gradient; do
    OMP_NUM_THREADS=1 $AQ score $moe --data $ids --method $m --device cpu --json "$tmp/$m.1.json" >/dev/null 2>"$tmp/$m.1.err"
    OMP_NUM_THREADS=3 $AQ score $moe --data $ids --method $m --device cpu --json "$tmp/$m.3.json" >/dev/null 2>"$tmp/$m.3.err"
    cmp -s "$tmp/$m.1.json" "$tmp/$m.3.json" && grep -v -e "tokens/s" -e "TFLOP/s" "$tmp/$m.1.err" >"$tmp/a" &&
        grep -v -e "tokens/s" -e "TFLOP/s" "$tmp/$m.3.err" >"$tmp/b" &&
        cmp -s "$tmp/a" "$tmp/b" && pass "$m scores bit-identical for OMP_NUM_THREADS 1 and 3" || fail "$m scores differ across threads"
done
grep -q "model.layers.2.mlp.experts: tokens per expert min 22, median 46, max 82" "$tmp/kl.1.err" &&
    pass "coverage line per sparse layer" || fail "coverage: $(cat "$tmp/kl.1.err")"
$AQ score $moe --data $ids --method kl --device cpu --min-expert-tokens 30 --json "$tmp/w.json" >/dev/null 2>"$tmp/w.err"
[ $? -eq 0 ] && grep -q "layers.0.mlp.experts: 3 of 8 experts saw fewer than 30 tokens" "$tmp/w.err" &&
    pass "--min-expert-tokens warns, never fails" || fail "--min-expert-tokens: $(cat "$tmp/w.err")"
# A resumed run keeps the coverage with the scores.
(AUTOQ_TEST_ABORT_AFTER=1 $AQ score $moe --data $ids --method gradient --device cpu --checkpoint "$tmp/ck.json" \
    --json "$tmp/r.json" >/dev/null 2>&1) 2>/dev/null
$AQ score $moe --data $ids --method gradient --device cpu --checkpoint "$tmp/ck.json" --json "$tmp/r.json" >/dev/null 2>"$tmp/r.err"
cmp -s "$tmp/r.json" "$tmp/gradient.1.json" && grep -q "min 22, median 46, max 82" "$tmp/r.err" &&
    pass "resumed run: same scores and coverage" || fail "resume: $(cat "$tmp/r.err")"
# eval and search --verify run MoE models on the CPU.
$AQ eval $vl --data tests/fixtures/qwen3_vl_moe_tiny_ids.npy --format w4a8 --json >"$tmp/e.json" 2>/dev/null &&
    python3 -c "import json; j = json.load(open('$tmp/e.json')); assert j['quantized_linears'] == 35 and j['kl'] > 0" &&
    pass "eval --format w4a8 on a MoE model (every expert linear quantized)" ||
    fail "eval on a MoE model"
$AQ search $moe --data $ids --method gradient --device cpu --budget 6 --verify --out "$tmp/rec.json" >"$tmp/s.out" 2>&1 &&
    grep -q "measured KL" "$tmp/s.out" && pass "search --verify on a MoE model" || fail "search: $(tail -5 "$tmp/s.out")"

python3 tests/make_bad_moe.py $moe $vl "$tmp"
expect "fewer experts in config than checkpoint" "experts.6.down_proj.weight' belongs to expert 6" $AQ info "$tmp/fewer_experts"
expect "more experts in config than checkpoint" "mlp.gate.weight' has shape [8, 64] but config.json implies [9, 64]" $AQ info "$tmp/more_experts"
expect "missing expert tensor" "model.layers.0.mlp.experts.3.up_proj.weight' is missing" $AQ info "$tmp/missing_expert"
expect "missing router" "model.layers.2.mlp.gate.weight' is missing" $AQ info "$tmp/missing_router"
expect "top_k > num_experts" "'num_experts_per_tok' = 9 exceeds num_experts 8" $AQ info "$tmp/topk_too_large"
expect "mlp_only_layers out of range" "'mlp_only_layers'[1] = 5 is not a layer" $AQ info "$tmp/mlp_only_out_of_range"
expect "mlp_only_layers not a list" "'mlp_only_layers' must be a list" $AQ info "$tmp/mlp_only_not_list"
expect "num_experts disagrees with num_local_experts" "'num_experts' = 4 disagrees" $AQ info "$tmp/experts_disagree"
expect "moe_intermediate_size missing" "'moe_intermediate_size' is missing" $AQ info "$tmp/no_moe_intermediate"
expect "decoder_sparse_step 0" "'decoder_sparse_step' = 0 is out of range" $AQ info "$tmp/sparse_step_zero"
expect "wrong gate_up shape" "gate_up_proj' has shape [8, 48, 128] but config.json implies [8, 96, 64]" $AQ info "$tmp/wrong_gate_up"
expect "fused: wrong expert count" "mlp.gate.weight' has shape [8, 64] but config.json implies [4, 64]" $AQ info "$tmp/vl_fewer_experts"

# Coverage in the outputs, the active-parameter cost, and exports that leave the routers alone.
$AQ score $moe --data $ids --method gradient --device cpu --json "$tmp/cov.json" --out "$tmp/cov.h5" >/dev/null 2>&1
python3 -c "
import json
s = json.load(open('$tmp/cov.json')); r = json.load(open('tests/fixtures/qwen3_moe_tiny_ref.json'))
assert {k: v['tokens'] for k, v in s['coverage'].items()} == r['expert_tokens'], s['coverage']
c = s['coverage']['model.layers.2.mlp.experts']
assert (c['min'], c['max'], c['below_min']) == (22, 82, []) and s['min_expert_tokens'] == 16
g = {x['name']: x for x in s['groups']}
assert g['model.layers.0.mlp.experts']['active_params'] * 4 == g['model.layers.0.mlp.experts']['params']
" && pass "coverage and active params in the scores JSON (= transformers' routing)" || fail "coverage in the scores JSON"
for c in memory active; do
    $AQ search --scores "$tmp/cov.h5" --budget 6 --cost $c --out "$tmp/r_$c.json" --emit llmcompressor="$tmp/r_$c.yaml" \
        --emit modelopt="$tmp/q_$c.json" >"$tmp/s_$c.out" 2>&1 || fail "search --cost $c"
done
python3 -c "
import json
m, a = (json.load(open('$tmp/r_%s.json' % c)) for c in ('memory', 'active'))
assert m['cost'] == 'memory' and a['cost'] == 'active'
assert abs(m['effective_bits']['candidates'] - m['effective_bits_memory']['candidates']) < 1e-12
assert abs(a['effective_bits']['candidates'] - a['effective_bits_active']['candidates']) < 1e-12
assert a['effective_bits_active']['candidates'] <= 6 and m['effective_bits_memory']['candidates'] <= 6
assert m['effective_bits_active']['candidates'] > 6  # memory-budgeted recipes overspend on what tokens read
" && pass "--cost memory|active budgets the right parameters, both reported" || fail "--cost: $(cat "$tmp/s_active.out")"
grep -q "active bits" "$tmp/s_memory.out" && pass "search prints both costs for MoE recipes" || fail "both costs printed"
grep -qF 're:.*mlp\.gate$' "$tmp/r_memory.yaml" && grep -qF '"*mlp.gate.*"' "$tmp/q_memory.json" &&
    pass "exports leave the routers alone" || fail "router ignore in the exports"
expect "--cost unknown" "--cost must be memory or active" $AQ search --scores "$tmp/cov.h5" --budget 6 --cost flops

# The MoE exports applied with llm-compressor and ModelOpt (tests/ref/validate_exports.py: results in
# tests/fixtures/exports_validation.json) are what this build writes, and their patterns select exactly
# the intended modules: each experts group once, for unfused (per-expert Linear) and fused experts alike.
YJ="$(dirname "$AQ")/tests/test_outputs" # --yaml-json FILE: YAML as canonical JSON (libyaml)
E=tests/fixtures/exports
# the GPTQ settings the recipes gained after validation (autoq's defaults there): present, then left out
GD="--drop quant_stage.quant_modifiers.GPTQModifier.dampening_frac=0.01 --drop quant_stage.quant_modifiers.GPTQModifier.actorder=static --drop quant_stage.quant_modifiers.GPTQModifier.block_size=128"
$AQ search $moe --data $ids --method gradient --device cpu --budget 10 --bits modelopt --out "$tmp/x_moe.json" \
    --emit llmcompressor="$tmp/x_moe.yaml" --emit modelopt="$tmp/x_moe_q.json" >/dev/null 2>&1
$AQ search $vl --data tests/fixtures/qwen3_vl_moe_tiny_ids.npy --method gradient --format w4a8,w8a8 --device cpu \
    --budget 7 --bits modelopt --out "$tmp/x_vl_moe.json" --emit llmcompressor="$tmp/x_vl_moe.yaml" --emit modelopt="$tmp/x_vl_moe_q.json" >/dev/null 2>&1
# Compared as data (tests/same_json.py), so on any CPU: the YAML as parsed, keys, strings and chosen
# formats exactly (the exports hold no score).
for k in moe vl_moe; do
    out="" && "$YJ" --yaml-json "$tmp/x_$k.yaml" >"$tmp/x_$k.yaml.json" && "$YJ" --yaml-json $E/${k}_recipe.yaml >"$tmp/${k}_ref.yaml.json" &&
        out=$(python3 tests/same_json.py "$tmp/x_$k.yaml.json" "$tmp/${k}_ref.yaml.json" $GD &&
            python3 tests/same_json.py "$tmp/x_${k}_q.json" $E/${k}_quant_cfg.json) && pass "validated $k exports unchanged" ||
        fail "$k exports differ from the validated ones in $E: $out"
    out=$(python3 tests/ref/check_exports.py "$tmp/x_$k.json" "$tmp/x_$k.yaml.json" "$tmp/x_${k}_q.json" 2>&1) &&
        pass "$k export patterns select exactly the intended modules" || fail "$k export patterns: $out"
done
python3 - <<'PY' && pass "llm-compressor and ModelOpt quantized exactly the chosen experts groups, never a router" || fail "MoE exports validation record"
import json
r = json.load(open("tests/fixtures/exports_validation.json"))
choices = {k: {g["name"]: g["choice"] for g in json.load(open(f"tests/fixtures/exports/{k}_recipe.json"))["groups"]}
           for k in ("moe", "vl_moe")}
# The fixtures keep covering the mixed case: an experts group quantized and one kept bf16, attention mixed,
# and (Qwen3-VL-MoE) the experts in a format other than the one most groups use.
m = choices["moe"]
assert m["model.layers.0.mlp.experts"] == "bf16" and m["model.layers.2.mlp.experts"] == "w4a8", m
assert {m[f"model.layers.{l}.self_attn.qkv"] for l in range(3)} == {"bf16", "w4a8"}, m
v = choices["vl_moe"]
assert v["model.language_model.layers.1.mlp.experts"] == "w4a8" and list(v.values()).count("w8a8") > 1, v
for k, groups, routers in (("moe", 2, 2), ("vl_moe", 1, 1)):
    e = r[k]
    lc, mo = e["llmcompressor"], e["modelopt"]
    assert e["intended_expert_linears"] == 24, e
    assert lc["match"] and lc["quantized"] == e["intended"] and lc["expert_linears"] == 24 * groups, lc
    assert lc["expert_linears_quantized"] == 24 and lc["routers"] == routers and lc["routers_untouched"], lc
    assert lc["gptq_changed_exactly_quantized"] and lc["lm_head_visual_router_quantized"] == [], lc
    assert mo["match"] and mo["quantized"] == e["intended"] and mo["fused_experts_modules"] == groups, mo
    assert mo["expert_linears_quantized"] == 24 and mo["routers"] == routers and mo["routers_untouched"], mo
    assert mo["router_quantizers"] == 0 and mo["lm_head_visual_router_quantized"] == [], mo
PY

# autoq gen: the MoE presets (moe-small here; 30b-a3b is the same code at 57 GiB), the same bytes for
# any thread count, shards equal to one file, --layers, and the dense presets' bytes unchanged.
$AQ gen "$tmp/ms" --preset moe-small --ids "$tmp/ms_ids.npy" --num-samples 4 --seq-len 128 2>/dev/null &&
    $AQ info "$tmp/ms" >"$tmp/ms.info" 2>&1 && grep -q "16 per sparse layer, top-4 renormalised, intermediate 128" "$tmp/ms.info" &&
    grep -q "sparse       3 of 4 layers: 0 2 3" "$tmp/ms.info" && grep -q "8 heads x 32, 2 kv heads" "$tmp/ms.info" &&
    pass "gen moe-small: 16 experts, top-4, layer 1 dense (mlp_only_layers)" || fail "gen moe-small: $(head -c 600 "$tmp/ms.info")"
OMP_NUM_THREADS=1 $AQ gen "$tmp/ms1" --preset moe-small 2>/dev/null
OMP_NUM_THREADS=3 $AQ gen "$tmp/ms3" --preset moe-small 2>/dev/null
cmp -s "$tmp/ms/model.safetensors" "$tmp/ms1/model.safetensors" && cmp -s "$tmp/ms1/model.safetensors" "$tmp/ms3/model.safetensors" &&
    pass "gen: the same bytes for OMP_NUM_THREADS 1, 2 and 3" || fail "gen bytes depend on the thread count"
$AQ score "$tmp/ms" --data "$tmp/ms_ids.npy" --method gradient --device cpu --json "$tmp/ms_g.json" >/dev/null 2>"$tmp/ms_g.err"
python3 - "$tmp/ms_g.json" <<'PY' && pass "gen moe-small scores; tokens spread over all experts (routing not degenerate)" || fail "moe-small coverage: $(grep tokens "$tmp/ms_g.err")"
import json, sys
s = json.load(open(sys.argv[1]))
assert sorted(s["coverage"]) == ["model.layers.%d.mlp.experts" % l for l in (0, 2, 3)], s["coverage"].keys()
for c in s["coverage"].values():
    t = c["tokens"]
    assert len(t) == 16 and sum(t) == 4 * 128 * 4, c  # top-4 of 4 x 128 tokens
    assert min(t) > 0 and max(t) < 4 * sum(t) / 16, c  # every expert used, none more than 4x the mean
assert all(g["score"] > 0 for g in s["groups"]) and len(s["groups"]) == 13
PY
$AQ gen "$tmp/msh" --preset moe-small --shard-mib 4 2>/dev/null
$AQ score "$tmp/msh" --data "$tmp/ms_ids.npy" --method gradient --device cpu --json "$tmp/msh_g.json" >/dev/null 2>&1
python3 - "$tmp/msh" "$tmp/ms_g.json" "$tmp/msh_g.json" <<'PY' && pass "gen --shard-mib: shards + index, scores equal to one file" || fail "gen --shard-mib"
import json, os, sys
d = sys.argv[1]
files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
assert files == ["model-%05d-of-00004.safetensors" % i for i in range(1, 5)], files
idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))
assert sorted(set(idx["weight_map"].values())) == files and idx["metadata"]["total_size"] == 13661184, idx["metadata"]
a, b = (json.load(open(p)) for p in sys.argv[2:4])
assert a["groups"] == b["groups"] and a["coverage"] == b["coverage"]
PY
$AQ gen "$tmp/ms2" --preset moe-small --layers 2 2>/dev/null && $AQ info "$tmp/ms2" 2>/dev/null | grep -q "sparse       1 of 2 layers: 0" &&
    $AQ gen "$tmp/ms2" --preset moe-small --layers 1 --force 2>/dev/null && $AQ info "$tmp/ms2" 2>/dev/null | grep -q "sparse       1 of 1 layers: 0" &&
    grep -q '"mlp_only_layers": \[\]' "$tmp/ms2/config.json" && pass "gen --layers: fewer layers, mlp_only_layers past the last dropped" ||
    fail "gen --layers"
$AQ gen "$tmp/tiny" --preset tiny 2>/dev/null
(cd "$tmp/tiny" && sha256sum -c --quiet) <<'SUM' && pass "gen: the dense presets' bytes are unchanged (tiny, seed 1)" || fail "gen tiny bytes changed"
a31d49e7e3aae1c92352f1cee52ab3e23f373805f735a32ad2847ed95f4f1043  model.safetensors
7a549e7462ae6400725e06e10b537da1e85851017f24d04b4be91126ecf2b0f9  config.json
SUM
expect "gen: unknown preset" "--preset '70b' is not one of tiny, 0.6b, 8b, moe-small, 30b-a3b" $AQ gen "$tmp/x" --preset 70b
expect "gen: --layers 0" "option --layers = '0' must be an integer in [1, 4096]" $AQ gen "$tmp/x" --preset moe-small --layers 0
expect "gen: --layers too large" "option --layers = '4097' must be an integer in [1, 4096]" $AQ gen "$tmp/x" --preset 30b-a3b --layers 4097
expect "gen: --shard-mib negative" "option --shard-mib = '-1' must be an integer" $AQ gen "$tmp/x" --preset moe-small --shard-mib -1
# Refused before a byte is written when the weights cannot fit (the 30b-a3b shape at 1000 layers: 1.2 TB).
expect "gen: no room for the weights" "but its file system has" $AQ gen "$tmp/big" --preset 30b-a3b --layers 1000
ls "$tmp/big" 2>/dev/null | grep -q . && fail "gen: files left after refusing" || pass "gen: nothing written when refused"
