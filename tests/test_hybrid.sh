#!/usr/bin/env bash
# The hybrid Qwen families (Qwen3.5, Qwen3.5-MoE with a vision tower, Qwen3-Next) from the command line:
# info (groups, non-candidates, mtp / visual tensors, block limits), eval against transformers' NLL, kl and
# gradient scores with every format, search leaving out formats whose blocks do not divide a group, quantize,
# the CUDA / GPTQ refusals, and bad configs or checkpoints exiting 2 with the field or tensor named.
set -u
SUITE=hybrid
. "$(dirname "$0")/lib.sh"
F=tests/fixtures
q35=$F/qwen3_5-tiny
moe=$F/qwen3_5-moe-tiny
nxt=$F/qwen3-next-tiny

# info: the groups README §5 names, and what is never a candidate
$AQ info $q35 --json 2>/dev/null | python3 -c "
import json, sys
j = json.load(sys.stdin)
g = {l['name']: l['group'] for l in j['linears']}
p = 'model.layers.0.linear_attn.'
assert g[p + 'in_proj_qkv'] == g[p + 'in_proj_z'] == p + 'in_proj_qkvz', g
assert g[p + 'in_proj_b'] == g[p + 'in_proj_a'] == p + 'in_proj_ba', g
assert g[p + 'out_proj'] == p + 'out_proj'
a = 'model.layers.1.self_attn.'
assert g[a + 'q_proj'] == g[a + 'k_proj'] == g[a + 'v_proj'] == a + 'qkv'
q = [l for l in j['linears'] if l['name'] == a + 'q_proj'][0]
assert q['shape'] == [128, 64], q  # query + gate rows
assert j['hybrid']['layer_types'] == ['linear_attention', 'full_attention'] * 2
assert j['hybrid']['rotary_dim'] == 4 and j['mtp_tensors'] == 3
assert not any('conv1d' in n or 'norm' in n or 'A_log' in n or 'mtp' in n for n in g)
" && pass "info: Qwen3.5 groups (in_proj_qkvz, in_proj_ba, gated qkv) and layer types" || fail "info qwen3_5 json"
$AQ info $nxt >"$tmp/info" 2>&1 && grep -q "model.layers.0.linear_attn.in_proj_qkvz .*model.layers.0.linear_attn.in_proj_qkvz" "$tmp/info" &&
    grep -q "model.layers.1.mlp.gate_up" "$tmp/info" && grep -q "model.layers.0.mlp.shared_expert.gate_up" "$tmp/info" &&
    grep -q "model.layers.0.mlp.shared_expert_gate .*shared expert gate, never a candidate" "$tmp/info" &&
    grep -q "model.layers.0.linear_attn.conv1d .*conv1d, never a candidate" "$tmp/info" &&
    grep -q "model.layers.0.mlp.gate .*router, never a candidate" "$tmp/info" &&
    grep -q "mtp          3 multi-token-prediction tensors" "$tmp/info" && grep -q "stored fused" "$tmp/info" &&
    grep -q "blocks       .* at most 32" "$tmp/info" &&
    pass "info: Qwen3-Next fused in_proj, mlp_only layer, shared expert, non-candidates, mtp, block limits" ||
    fail "info qwen3_next: $(head -c 800 "$tmp/info")"
$AQ info $moe >"$tmp/info" 2>&1 && grep -q "visual       21 tensors under model.visual" "$tmp/info" &&
    grep -q "model.language_model.layers.2.mlp.experts " "$tmp/info" && grep -q "sparse       3 of 3 layers" "$tmp/info" &&
    pass "info: Qwen3.5-MoE language weights under model.language_model, vision tower listed" ||
    fail "info qwen3_5_moe: $(head -c 800 "$tmp/info")"
$AQ info $nxt --disabled-layers '*conv1d*,*shared_expert_gate*,mtp.*' >/dev/null 2>"$tmp/err" && ! grep -q "matches no" "$tmp/err" &&
    pass "info: patterns on non-candidates match a module, add no candidate" || fail "patterns: $(cat "$tmp/err")"

# eval: the mean NLL of transformers 5.17 (tests/ref/make_hybrid_fixtures.py)
for m in qwen3_5-tiny:qwen3_5_tiny qwen3_5-moe-tiny:qwen3_5_moe_tiny qwen3-next-tiny:qwen3_next_tiny; do
    d=$F/${m%%:*} s=$F/${m##*:}
    $AQ eval $d --data ${s}_ids.npy --json >"$tmp/e.json" 2>/dev/null && python3 -c "
import json
e = json.load(open('$tmp/e.json')); r = json.load(open('${s}_ref.json'))
want = sum(r['nll']) / len(r['nll'])
assert abs(e['mean_nll'] - want) <= 1e-5 * want, (e['mean_nll'], want)
" && pass "eval ${m%%:*}: mean NLL equals transformers'" || fail "eval ${m%%:*}"
done

# scores: every format, both methods, finite and positive where the group is enabled
all=w4a8,w8a8,fp8,nvfp4,mxfp4,w4a16,w4a8_fp8
for m in qwen3_5-moe-tiny:qwen3_5_moe_tiny qwen3-next-tiny:qwen3_next_tiny; do
    d=$F/${m%%:*} s=$F/${m##*:}
    for meth in kl gradient; do
        $AQ score $d --data ${s}_ids.npy --method $meth --format $all --json "$tmp/$meth.json" >/dev/null 2>&1 &&
            python3 -c "
import json, math
j = json.load(open('$tmp/$meth.json'))
names = [g['name'] for g in j['groups']]
assert any(n.endswith('linear_attn.in_proj_qkvz') for n in names) and any(n.endswith('mlp.experts') for n in names)
assert any(n.endswith('shared_expert.gate_up') for n in names)
for g in j['groups']:
    for f, v in g['scores'].items():
        assert math.isfinite(v) and v >= 0, (g['name'], f, v)
assert sum(v for g in j['groups'] for v in g['scores'].values()) > 0
" && pass "score $meth ${m%%:*}: every format, finite" || fail "score $meth ${m%%:*}"
    done
done
# kl and gradient scores (W4A8) against PyTorch + transformers 5.17 (make_hybrid_fixtures.py): within 1%
# relative on every group of at least 1% of the largest (a quantized group may flip a later layer's routing)
for m in qwen3_5-tiny:qwen3_5_tiny qwen3_5-moe-tiny:qwen3_5_moe_tiny qwen3-next-tiny:qwen3_next_tiny; do
    d=$F/${m%%:*} s=$F/${m##*:}
    for meth in kl gradient; do
        $AQ score $d --data ${s}_ids.npy --method $meth --format w4a8 --json "$tmp/r_$meth.json" >/dev/null 2>&1 &&
            python3 -c "
import json
a = {g['name']: g['score'] for g in json.load(open('$tmp/r_$meth.json'))['groups']}
r = json.load(open('${s}_ref.json'))['$meth']
assert set(a) == set(r), set(a) ^ set(r)
mx = max(r.values())
w = max(abs(a[n] - r[n]) / max(abs(r[n]), 0.01 * mx) for n in r)
print('  ${m%%:*} $meth: %d groups, worst relative difference %.2e' % (len(r), w))
assert w <= 1e-2, w
" && pass "score $meth ${m%%:*}: equal to PyTorch's per group" || fail "score $meth ${m%%:*} against PyTorch"
    done
done
# the same scores for any thread count (README §6)
$AQ score $nxt --data $F/qwen3_next_tiny_ids.npy --method gradient --format w4a8 --json "$tmp/t1.json" >/dev/null 2>&1
OMP_NUM_THREADS=1 $AQ score $nxt --data $F/qwen3_next_tiny_ids.npy --method gradient --format w4a8 --json "$tmp/t2.json" >/dev/null 2>&1
python3 -c "
import json
a, b = (json.load(open('$tmp/t%d.json' % i))['groups'] for i in (1, 2))
assert [g['score'] for g in a] == [g['score'] for g in b]
" && pass "gradient scores bit-identical for 1 and 2 threads" || fail "thread count changes scores"

# search: w4a16's groups of 128 divide none of these widths: not offered, and said so
$AQ score $q35 --data $F/qwen3_5_tiny_ids.npy --method kl --format w4a8,w4a16 --out "$tmp/s.h5" >/dev/null 2>&1
$AQ search --scores "$tmp/s.h5" --budget 4.6 --out "$tmp/r.json" >/dev/null 2>"$tmp/err" &&
    grep -q "format 'w4a16' is not offered for 18 group(s) whose input width its blocks of 128 do not divide" "$tmp/err" &&
    python3 -c "
import json
r = json.load(open('$tmp/r.json'))
assert all(g['choice'] in ('bf16', 'w4a8') for g in r['groups']), [g['choice'] for g in r['groups']]
" && pass "search leaves out formats whose blocks do not divide a group's input width" || fail "search misfit: $(cat "$tmp/err")"

# quantize: compressed-tensors checkpoint, mtp.* and the non-candidates copied as stored
$AQ score $nxt --data $F/qwen3_next_tiny_ids.npy --method kl --format w4a8 --out "$tmp/n.h5" >/dev/null 2>&1
$AQ search --scores "$tmp/n.h5" --budget 6 --out "$tmp/nr.json" >/dev/null 2>&1
$AQ quantize $nxt --recipe "$tmp/nr.json" --out "$tmp/q" >/dev/null 2>&1 && python3 -c "
import json, struct
f = open('$tmp/q/model.safetensors', 'rb'); n = struct.unpack('<Q', f.read(8))[0]; h = json.loads(f.read(n))
assert 'mtp.fc.weight' in h and 'model.layers.0.linear_attn.conv1d.weight' in h
assert any(k.endswith('in_proj_qkvz.weight_scale') or k.endswith('shared_expert.gate_proj.weight_scale') for k in h)
" && pass "quantize: Qwen3-Next compressed-tensors checkpoint with mtp.* kept" || fail "quantize qwen3_next"

# quantize writes compressed-tensors as llm-compressor saves these models (names as the checkpoint stores
# them, routers and shared-expert gates in the ignore list): loaded by transformers 5.17 + compressed-tensors
# with no missing or unexpected keys, logits within 1e-3 of eval --recipe, RTN and GPTQ
# (tests/ref/check_quantize_hybrid.py: bf16 experts fused as transformers 5 holds them, the only change).
cat >"$tmp/w4ch.json" <<'J'
{"quant_cfg": {"*weight_quantizer": {"num_bits": 4, "axis": 0, "enable": true}, "*input_quantizer": {"enable": false}},
 "algorithm": "max"}
J
pairs=()
for m in qwen3_5-tiny:qwen3_5_tiny qwen3_5-moe-tiny:qwen3_5_moe_tiny qwen3-next-tiny:qwen3_next_tiny; do
    d=$F/${m%%:*} s=$F/${m##*:} n=${m##*:}
    $AQ score $d --data ${s}_ids.npy --method kl --format "$tmp/w4ch.json" --disabled-layers '*lm_head*,*visual*,*mlp.experts*' \
        --out "$tmp/$n.h5" >/dev/null 2>&1 && $AQ search --scores "$tmp/$n.h5" --budget 5 --out "$tmp/$n.r.json" >/dev/null 2>&1 &&
        for qz in rtn gptq; do
            $AQ quantize $d --recipe "$tmp/$n.r.json" --quantizer $qz --data ${s}_ids.npy --out "$tmp/$n.$qz.q" >/dev/null 2>&1 &&
                $AQ eval $d --data ${s}_ids.npy --recipe "$tmp/$n.r.json" --quantizer $qz --logits "$tmp/$n.$qz.npy" >/dev/null 2>&1 &&
                pairs+=("$tmp/$n.$qz.q:$tmp/$n.$qz.npy") || fail "quantize --quantizer $qz ${m%%:*}"
        done
    python3 -c "
import json
q = json.load(open('$tmp/$n.rtn.q/config.json'))['quantization_config']
ig = q['ignore']
for l in (0, 2):
    pre = '$d'.endswith('moe-tiny') and 'model.language_model.' or 'model.'
    if '$n' != 'qwen3_5_tiny':
        assert pre + 'layers.%d.mlp.gate' % l in ig and pre + 'layers.%d.mlp.shared_expert_gate' % l in ig, ig
" && pass "quantize ${m%%:*}: routers and shared-expert gates in the ignore list" || fail "quantize ${m%%:*} ignore list"
    out=$(python3 tests/ref/check_quantize_hybrid.py ${s}_ids.npy "${pairs[@]}" 2>/dev/null | grep '^ok\|^BAD\|missing')
    case $? in
    0) if grep -q BAD <<<"$out"; then fail "quantize ${m%%:*} in transformers: $out"; else pass "quantize ${m%%:*} (rtn, gptq) loads in transformers + compressed-tensors, logits as eval --recipe: $(echo $out | grep -o 'dlogit| [^ ,]*' | tr '\n' ' ')"; fi ;;
    *) if python3 -c "import compressed_tensors, transformers" 2>/dev/null; then fail "quantize ${m%%:*} in transformers: $out"; else echo "SKIP $SUITE: quantize ${m%%:*} in transformers: packages missing"; fi ;;
    esac
    pairs=()
done

# --shard-layers runs these models (tests/test_gpu_hybrid.sh); on the CPU it is the usual refusal
expect "score --shard-layers on the CPU" "needs 2 or more CUDA devices" \
    $AQ score $nxt --data $F/qwen3_next_tiny_ids.npy --method kl --device cpu --shard-layers

# GPTQ (README §9): the Gated DeltaNet's input projections read the normed hidden state (the attention's
# site), out_proj the gated norm's output, the gated o_proj the gated attention output, the shared expert
# the MLP input and its own SwiGLU. Deployed W4A8 with GPTQ beats round-to-nearest's KL on each fixture,
# in both pipelines, and the scores and quantize run with it.
for m in qwen3_5-tiny:qwen3_5_tiny qwen3_5-moe-tiny:qwen3_5_moe_tiny qwen3-next-tiny:qwen3_next_tiny; do
    d=$F/${m%%:*} s=$F/${m##*:}
    $AQ eval $d --data ${s}_ids.npy --format w4a8 --json >"$tmp/rtn.json" 2>/dev/null
    $AQ eval $d --data ${s}_ids.npy --format w4a8 --quantizer gptq --json >"$tmp/gs.json" 2>/dev/null
    $AQ eval $d --data ${s}_ids.npy --format w4a8 --quantizer gptq --gptq-pipeline basic --json >"$tmp/gb.json" 2>/dev/null
    python3 -c "
import json
r, s, b = (json.load(open('$tmp/%s.json' % n)) for n in ('rtn', 'gs', 'gb'))
k = lambda e: e['kl']
print('  ${m%%:*}: KL rtn %.3f, gptq sequential %.3f, basic %.3f' % (k(r), k(s), k(b)))
assert k(s) < 0.8 * k(r) and k(b) < 0.8 * k(r)
" && pass "gptq ${m%%:*}: deployed W4A8 KL below RTN's (sequential and basic)" || fail "gptq ${m%%:*} eval: $(head -c 300 "$tmp/gs.json")"
    for meth in kl gradient; do
        $AQ score $d --data ${s}_ids.npy --method $meth --quantizer gptq --format w4a8,w8a8 --json "$tmp/gq.json" >/dev/null 2>"$tmp/err" &&
            python3 -c "
import json, math
j = json.load(open('$tmp/gq.json'))
assert j['quantizer'] == 'gptq' if 'quantizer' in j else True
v = [x for g in j['groups'] for x in g['scores'].values()]
assert all(math.isfinite(x) and x >= 0 for x in v) and sum(v) > 0
" && pass "gptq ${m%%:*}: $meth scores" || fail "gptq ${m%%:*} $meth scores: $(tail -2 "$tmp/err")"
    done
done
# bad configs and checkpoints: exit 2 naming the field or the tensor
edit() { # edit NAME SRC PYTHON: a copy of SRC with config.json changed by PYTHON (c is the dict)
    mkdir -p "$tmp/$1" && cp "$2/model.safetensors" "$tmp/$1/" &&
        python3 -c "
import json
c = json.load(open('$2/config.json'))
t = c.get('text_config', c)
$3
json.dump(c, open('$tmp/$1/config.json', 'w'))"
}
edit lt_len $q35 "t['layer_types'] = t['layer_types'][:3]"
expect "layer_types of the wrong length" "'layer_types' has 3 entries but num_hidden_layers is 4" $AQ info "$tmp/lt_len"
edit lt_bad $q35 "t['layer_types'][0] = 'mamba'"
expect "unknown layer type" "field 'layer_types'[0] must be" $AQ info "$tmp/lt_bad"
edit vh $q35 "t['linear_num_value_heads'] = 3"
expect "value heads not a multiple of key heads" "'linear_num_value_heads' = 3 is not a multiple" $AQ info "$tmp/vh"
edit prf $q35 "t['rope_parameters']['partial_rotary_factor'] = 1.5"
expect "partial_rotary_factor out of range" "'partial_rotary_factor' = 1.5" $AQ info "$tmp/prf"
edit prf_odd $q35 "t['rope_parameters']['partial_rotary_factor'] = 0.0625"
expect "odd rotary width" "gives 1 rotary dimensions" $AQ info "$tmp/prf_odd"
edit mrope $moe "t['rope_parameters']['mrope_section'] = [8, 8, 8]"
expect "mrope_section too wide" "'mrope_section' sums to 24" $AQ info "$tmp/mrope"
edit noconv $q35 "del t['linear_conv_kernel_dim']"
expect "linear_conv_kernel_dim missing" "'linear_conv_kernel_dim' is missing" $AQ info "$tmp/noconv"
edit noshared $nxt "del t['shared_expert_intermediate_size']"
expect "shared_expert_intermediate_size missing" "'shared_expert_intermediate_size' is missing" $AQ info "$tmp/noshared"
edit swap $q35 "t['layer_types'] = ['full_attention', 'linear_attention'] * 2"
expect "layer types that disagree with the tensors" "model.layers.0.self_attn.q_proj.weight' is missing" $AQ info "$tmp/swap"
edit interval $q35 "del t['layer_types']; t['full_attention_interval'] = 2"
$AQ info "$tmp/interval" --json 2>/dev/null | python3 -c "
import json, sys
assert json.load(sys.stdin)['hybrid']['layer_types'] == ['linear_attention', 'full_attention'] * 2
" && pass "full_attention_interval gives the layer types" || fail "full_attention_interval"
edit kdim $nxt "t['linear_key_head_dim'] = 8"
expect "fused in_proj_qkvz of another shape" "in_proj_qkvz.weight' has shape [128, 64] but config.json implies [96, 64]" $AQ info "$tmp/kdim"

# gen: the hybrid presets walk the architecture table. The small ones (every tensor kind) hold exactly the
# tensor names of the committed transformers fixture of their family (layer and expert indices aside), are
# read by autoq, and load in transformers 5.17 with logits equal to autoq's (tests/ref/check_gen_hybrid.py).
for m in qwen3.5-small:qwen3_5-tiny qwen3.5-moe-small:qwen3_5-moe-tiny qwen3-next-small:qwen3-next-tiny; do
    pr=${m%%:*} fx=$F/${m##*:}
    $AQ gen "$tmp/g_$pr" --preset $pr --ids "$tmp/g_$pr.npy" --num-samples 2 --seq-len 32 >/dev/null 2>&1 &&
        python3 - "$tmp/g_$pr/model.safetensors" "$fx/model.safetensors" <<'PY' && pass "gen $pr: the tensors of its family's fixture" || fail "gen $pr tensors"
import json, re, struct, sys
def names(p):
    f = open(p, "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); h.pop("__metadata__", None)
    out = set()
    for k, v in h.items():
        if k.startswith(("mtp.", "model.visual.")): continue
        k = re.sub(r"\.(layers|experts)\.[0-9]+\.", r".\1.N.", k.replace("model.language_model.", "model."))
        out.add((k, len(v["shape"])))
    return out
a, b = names(sys.argv[1]), names(sys.argv[2])
assert a == b, (sorted(a - b), sorted(b - a))
PY
    $AQ eval "$tmp/g_$pr" --data "$tmp/g_$pr.npy" --device cpu --logits "$tmp/g_$pr.l.npy" >/dev/null 2>"$tmp/err" || fail "gen $pr: eval: $(tail -2 "$tmp/err")"
    python3 tests/ref/check_gen_hybrid.py "$tmp/g_$pr" "$tmp/g_$pr.npy" "$tmp/g_$pr.l.npy" >"$tmp/out" 2>&1
    case $? in
    0) pass "gen $pr: loads in transformers, logits equal autoq's ($(grep -o 'max |logit difference| [^ ]*' "$tmp/out"))" ;;
    77) echo "SKIP $SUITE: gen $pr in transformers: $(tail -1 "$tmp/out")" ;;
    *) fail "gen $pr in transformers: $(tail -3 "$tmp/out")" ;;
    esac
done
$AQ gen "$tmp/g_l1" --preset qwen3-next-small --layers 2 >/dev/null 2>&1 && $AQ info "$tmp/g_l1" --json 2>/dev/null | python3 -c "
import json, sys
j = json.load(sys.stdin)
assert j['hybrid']['layer_types'] == ['linear_attention'] * 2, j['hybrid']
assert json.load(open('$tmp/g_l1/config.json'))['mlp_only_layers'] == [1]
" && pass "gen --layers on a hybrid preset: layer_types and mlp_only_layers follow" ||
    fail "gen --layers hybrid: $(head -c 600 "$tmp/g_l1/config.json")"
# The large presets are refused before a byte is written where they do not fit (Qwen3-Next-80B-A3B's 48
# layers at 1000 layers: far beyond any disk), naming the size.
expect "gen: qwen3-next-80b-a3b at 1000 layers does not fit" "but its file system has" $AQ gen "$tmp/big" --preset qwen3-next-80b-a3b --layers 1000
