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
    cmp -s "$tmp/$m.1.json" "$tmp/$m.3.json" && grep -v "tokens/s" "$tmp/$m.1.err" >"$tmp/a" && grep -v "tokens/s" "$tmp/$m.3.err" >"$tmp/b" &&
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
expect "--device cuda refused for MoE" "does not run mixture-of-experts layers yet; use --device cpu" $AQ score $moe --data $ids --method kl --device cuda

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
