#!/usr/bin/env bash
# autoq score from the command line: outputs, checkpoint/resume, groups and bad input.
set -u
SUITE=score
. "$(dirname "$0")/lib.sh"
M=tests/fixtures/qwen3-vl-tiny
D=tests/fixtures/qwen3_vl_tiny_ids.npy

# JSON on stdout holds only JSON; every group of the VL model is scored.
$AQ score $M --data $D --method kl --json - >"$tmp/kl.json" 2>"$tmp/err" || fail "kl run"
if python3 -c "import json,sys; d=json.load(open('$tmp/kl.json')); g=d['groups']; assert len(g)==8 and all(x['score']>0 for x in g) and d['method']=='kl' and g[0]['name']=='model.language_model.layers.0.self_attn.qkv' and len(g[0]['members'])==3"; then
    pass "kl JSON on stdout, 8 groups, names and members"
else fail "kl JSON on stdout"; fi

# Checkpoint: a run killed after 1 of 3 samples resumes and ends with identical scores (on the CPU, one
# window per step: a GPU's batch of 4 would hold all 3).
$AQ score $M --data $D --device cpu --method gradient --json "$tmp/full.json" >/dev/null 2>&1
killed_run() { sh -c '"$@" >/dev/null 2>&1; true' sh "$@" 2>/dev/null; } # the shell's "Killed" goes nowhere
killed_run env AUTOQ_TEST_ABORT_AFTER=1 $AQ score $M --data $D --device cpu --method gradient --checkpoint "$tmp/ck.json" --json "$tmp/res.json"
[ -f "$tmp/res.json" ] && fail "killed run wrote no output" || pass "killed run wrote no output"
grep -q '"samples_done": 1' "$tmp/ck.json" && pass "checkpoint holds 1 sample" || fail "checkpoint holds 1 sample"
$AQ score $M --data $D --device cpu --method gradient --checkpoint "$tmp/ck.json" --json "$tmp/res.json" >/dev/null 2>"$tmp/err"
grep -q "resuming" "$tmp/err" && pass "resume announced" || fail "resume announced: $(cat "$tmp/err")"
cmp -s "$tmp/full.json" "$tmp/res.json" && pass "resumed scores identical" || fail "resumed scores differ"
expect "checkpoint of another run" "belongs to another run (field 'method'" $AQ score $M --data $D --method kl --checkpoint "$tmp/ck.json"

# HDF5 layout (README §8), checked with h5dump when present.
$AQ score $M --data $D --method kl --format w4a8,w8a8 --out "$tmp/s.h5" --no-grouping >/dev/null 2>&1 || fail "h5 run"
if command -v h5dump >/dev/null; then
    h5dump -H "$tmp/s.h5" >"$tmp/h"
    ok=1
    for want in 'ATTRIBUTE "model"' 'ATTRIBUTE "method"' 'ATTRIBUTE "format"' 'ATTRIBUTE "num_samples"' 'ATTRIBUTE "seq_len"' \
        'DATASET "name"' 'DATASET "members"' 'DATASET "score"' 'DATASET "params"' 'DATASET "disabled"' 'DATASET "shape"' 'DATASET "group"'; do
        grep -q "$want" "$tmp/h" || { ok=0; echo "  missing $want"; }
    done
    grep -q 'DATASPACE  SIMPLE { ( 14, 2 ) / ( 14, 2 ) }' "$tmp/h" || { ok=0; echo "  score is not [14, 2]"; }
    [ $ok = 1 ] && pass "HDF5 layout with two formats, no grouping" || fail "HDF5 layout"
else
    echo "SKIP score: HDF5 layout: h5dump not installed"
fi
ls "$tmp"/s.h5.tmp* >/dev/null 2>&1 && fail "h5 temp left behind" || pass "no h5 temp left behind"

# Every format of configs/formats in one run: a score per group x format in JSON and HDF5, each format's
# scores the same as when it is scored alone, and the search picks one choice per group.
all=w4a8,w8a8,fp8,nvfp4,mxfp4,w4a16,w4a8_fp8
$AQ score $M --data $D --device cpu --method gradient --format $all --json "$tmp/all.json" --out "$tmp/all.h5" >/dev/null 2>"$tmp/err" ||
    fail "score with all seven formats: $(cat "$tmp/err")"
$AQ score $M --data $D --device cpu --method gradient --format nvfp4 --json "$tmp/nv.json" >/dev/null 2>&1
python3 - "$tmp" <<'PY' && pass "seven formats: a score per group and format, each as when scored alone" || fail "seven formats"
import json, sys
d = sys.argv[1]
a, n = json.load(open(f"{d}/all.json")), json.load(open(f"{d}/nv.json"))
names = ["w4a8", "w8a8", "fp8", "nvfp4", "mxfp4", "w4a16", "w4a8_fp8"]
assert [f["name"] for f in a["formats"]] == names and [f["bits"] for f in a["formats"]] == [4, 8, 8, 4, 4, 4, 4]
assert all(list(g["scores"]) == names and all(v > 0 for v in g["scores"].values()) for g in a["groups"])
assert [g["scores"]["nvfp4"] for g in a["groups"]] == [g["score"] for g in n["groups"]]
PY
if command -v h5dump >/dev/null; then
    h5dump -H "$tmp/all.h5" | grep -q 'DATASPACE  SIMPLE { ( 8, 7 ) / ( 8, 7 ) }' && pass "HDF5 score is [8 groups, 7 formats]" ||
        fail "HDF5 score of seven formats"
fi
$AQ search --scores "$tmp/all.h5" --budget 5 --out "$tmp/all_r.json" >/dev/null 2>&1 &&
    python3 -c "import json; r=json.load(open('$tmp/all_r.json')); assert all(g['choice'] in ('bf16','w4a8','w8a8','fp8','nvfp4','mxfp4','w4a16','w4a8_fp8') for g in r['groups']) and r['effective_bits']['candidates'] <= 5" &&
    pass "search over seven formats: one choice per group within the budget" || fail "search over seven formats"
expect "compressed-tensors numerics for nvfp4" "--numerics compressed-tensors is not implemented for E2M1" \
    $AQ score $M --data $D --method kl --format nvfp4 --numerics compressed-tensors
$AQ score $M --data $D --method kl --format w4a16,fp8 --numerics compressed-tensors --json "$tmp/ct.json" >/dev/null 2>&1 &&
    python3 -c "import json; j=json.load(open('$tmp/ct.json')); assert {f['numerics'] for f in j['formats']} == {'compressed-tensors'}" &&
    pass "compressed-tensors numerics for w4a16 and fp8" || fail "compressed-tensors numerics for w4a16, fp8"

# The GPU engine emulates the new formats on dense layers (tests/test_gpu.c checks the scores); on a
# mixture-of-experts model --device cuda refuses them by name (exit 2) and --device auto scores on the CPU.
moe=tests/fixtures/qwen3-moe-tiny
moe_ids=tests/fixtures/qwen3_moe_tiny_ids.npy
if $AQ score $M --data $D --method kl --device cuda --num-samples 1 --json "$tmp/probe.json" >/dev/null 2>&1; then
    $AQ score $M --data $D --method gradient --device cuda --format fp8,nvfp4,w4a16 --json "$tmp/gpu_fmt.json" >/dev/null 2>"$tmp/err" &&
        pass "fp8, nvfp4, w4a16 on --device cuda (dense)" || fail "new formats on the GPU: $(cat "$tmp/err")"
    expect "nvfp4 on --device cuda, MoE" "format 'nvfp4' (E4M3 / E2M1 values, block scales or no input quantizer) is emulated by the CUDA engine for dense layers only" \
        $AQ score $moe --data $moe_ids --method kl --device cuda --format nvfp4
    $AQ score $moe --data $moe_ids --method kl --format w4a8,fp8 --num-samples 1 --json "$tmp/auto.json" >/dev/null 2>"$tmp/err" &&
        grep -q "format 'fp8' (E4M3 / E2M1 values, block scales or no input quantizer) is emulated by the CUDA engine for dense layers only, and this model has mixture-of-experts layers: scoring on the CPU" "$tmp/err" &&
        pass "--device auto scores fp8 on a MoE model on the CPU" || fail "--device auto with fp8 on MoE: $(cat "$tmp/err")"
else
    echo "SKIP score: the new formats on the GPU: no CUDA device"
fi

# Disabled layers: a group with one disabled member stays bf16; * crosses dots.
$AQ score $M --data $D --method kl --disabled-layers '*layers.1.*k_proj' --json "$tmp/d.json" >/dev/null 2>&1
python3 -c "import json; g={x['name']:x for x in json.load(open('$tmp/d.json'))['groups']}; assert g['model.language_model.layers.1.self_attn.qkv']['disabled'] and g['model.language_model.layers.1.self_attn.qkv']['score'] is None and not g['model.language_model.layers.0.self_attn.qkv']['disabled']" \
    && pass "group with a disabled member stays bf16" || fail "disabled group"
out=$($AQ score $M --data $D --method kl --disabled-layers '*nomatch*,*layers.0.mlp*' 2>&1 >/dev/null)
grep -q "pattern '\*nomatch\*' matches no module" <<<"$out" && pass "unmatched pattern warns" || fail "unmatched pattern warns: $out"

# Bad input
echo '{"quant_cfg": {"*weight_quantizer": {"num_bits": 3, "axis": 0}}}' >"$tmp/b3.json"
echo '{"quant_cfg": {"*weight_quantizer": {"num_bits": 4, "axis": 0, "colour": 1}}}' >"$tmp/bf.json"
echo '{"quant_cfg": {"*weight_quantizer": {"num_bits": 4, "axis": 0}}, "extra": 1}' >"$tmp/bt.json"
expect "unknown format" "format 'w3a3' not found" $AQ score $M --data $D --method kl --format w3a3
expect "num_bits not 4 or 8" "num_bits = 3 is not supported" $AQ score $M --data $D --method kl --format "$tmp/b3.json"
expect "unknown quantizer field" "unknown field 'colour'" $AQ score $M --data $D --method kl --format "$tmp/bf.json"
expect "unknown top-level field" "unknown field 'extra'" $AQ score $M --data $D --method kl --format "$tmp/bt.json"
expect "data shorter than one window" "longer than the 64 tokens" $AQ score $M --data $D --method kl --seq-len 65
expect "everything disabled" "disables every candidate group" $AQ score $M --data $D --method kl --disabled-layers '*'
expect "unknown method" "--method must be kl or gradient" $AQ score $M --data $D --method fisher
expect "missing method" "--method is required (kl or gradient)" $AQ score $M --data $D
if [ "$($AQ score $M --data $D --method kl --device cpu --gpus 2 2>&1 >/dev/null; echo $?)" != 0 ]; then
    expect "--gpus without a GPU in use" "--gpus 2: no CUDA device in use" $AQ score $M --data $D --method kl --device cpu --gpus 2
fi
expect "--gpus out of range" "--gpus = '0' must be an integer in [1, 64]" $AQ score $M --data $D --method kl --gpus 0
expect "--nccl-init needs --rank and --world-size" "--nccl-init, --rank and --world-size go together" $AQ score $M --data $D --method kl --nccl-init file:/tmp/x
expect "--rank below --world-size" "--rank 2 must be below --world-size 2" $AQ score $M --data $D --method kl --nccl-init file:/tmp/x --rank 2 --world-size 2
expect "bad --nccl-init" "must be file:PATH or tcp:HOST:PORT" $AQ score $M --data $D --method kl --nccl-init udp:x --rank 0 --world-size 2
expect "--shard-layers on the CPU" "--shard-layers: needs 2 or more CUDA devices" $AQ score $M --data $D --method kl --device cpu --shard-layers
expect "--shard-layers --nccl-init with --stages not dividing the ranks" "--stages 3 must divide --world-size 2" $AQ score $M --data $D --method kl --shard-layers --stages 3 --nccl-init file:/tmp/x --rank 0 --world-size 2

# Determinism: CPU scores are bit-identical for any thread count (both methods), and a run killed
# with SIGKILL at 3 threads resumes to the same bits.
for m in kl gradient; do
    for t in 1 2 3 4; do
        OMP_NUM_THREADS=$t $AQ score $M --data $D --method $m --device cpu --json "$tmp/t$t.json" >/dev/null 2>&1
    done
    cmp -s "$tmp/t1.json" "$tmp/t2.json" && cmp -s "$tmp/t1.json" "$tmp/t3.json" && cmp -s "$tmp/t1.json" "$tmp/t4.json" \
        && pass "$m scores bit-identical for OMP_NUM_THREADS 1, 2, 3, 4" || fail "$m scores differ between thread counts"
done
rm -f "$tmp/k3.json"
killed_run env OMP_NUM_THREADS=3 AUTOQ_TEST_ABORT_AFTER=2 $AQ score $M --data $D --method kl --device cpu \
    --checkpoint "$tmp/k3.json" --json "$tmp/r3.json"
OMP_NUM_THREADS=3 $AQ score $M --data $D --method kl --device cpu --checkpoint "$tmp/k3.json" --json "$tmp/r3.json" >/dev/null 2>&1
OMP_NUM_THREADS=1 $AQ score $M --data $D --method kl --device cpu --json "$tmp/u1.json" >/dev/null 2>&1
grep -q '"samples_done": 3' "$tmp/k3.json" && cmp -s "$tmp/r3.json" "$tmp/u1.json" \
    && pass "killed (SIGKILL) at 3 threads and resumed = one unbroken run at 1 thread" || fail "resume at 3 threads differs"

# Hostile checkpoints: exit 2 naming the field, never a wrong sum.
$AQ score $M --data $D --method gradient --checkpoint "$tmp/h.json" >/dev/null 2>&1
ck() { python3 -c "import json,sys; d=json.load(open('$tmp/h.json')); $1; json.dump(d, open('$tmp/hb.json','w'))"; }
ck "d['samples_done'] = -1"
expect "checkpoint samples_done negative" "'samples_done' must be an integer in [0, 3]" $AQ score $M --data $D --method gradient --checkpoint "$tmp/hb.json"
ck "d['samples_done'] = 2**32"
expect "checkpoint samples_done 2^32 (no wrap to 0)" "'samples_done' must be an integer in [0, 3]" $AQ score $M --data $D --method gradient --checkpoint "$tmp/hb.json"
ck "d['samples_done'] = 2**31"
expect "checkpoint samples_done 2^31" "'samples_done' must be an integer in [0, 3]" $AQ score $M --data $D --method gradient --checkpoint "$tmp/hb.json"
ck "d['scores'][0] = 'x'"
expect "checkpoint score not a number" "checkpoint field 'scores' must be a finite number" $AQ score $M --data $D --method gradient --checkpoint "$tmp/hb.json"
ck "d['scores'] = d['scores'][:2]"
expect "checkpoint scores of the wrong length" "checkpoint field 'scores' must be an array of 8 numbers" $AQ score $M --data $D --method gradient --checkpoint "$tmp/hb.json"
ck "d['forward_equiv'] = None"
expect "checkpoint forward_equiv null" "checkpoint field 'forward_equiv' must be a finite number" $AQ score $M --data $D --method gradient --checkpoint "$tmp/hb.json"
echo '[1, 2]' >"$tmp/hb.json"
expect "checkpoint not an object" "checkpoint is not a JSON object" $AQ score $M --data $D --method gradient --checkpoint "$tmp/hb.json"

# Output paths are checked before any compute; windows longer than the model's positions are refused.
start=$(date +%s)
expect "--json into a missing folder, before scoring" "--json: folder $tmp/nodir does not exist" $AQ score $M --data $D --method kl --json "$tmp/nodir/x.json"
expect "--out a directory" "--out" $AQ score $M --data $D --method kl --out "$tmp"
expect "--checkpoint a device" "--checkpoint" $AQ score $M --data $D --method kl --checkpoint /dev/null
expect "--seq-len beyond max_position_embeddings" "exceed the model's max_position_embeddings 1024" $AQ score $M --data $D --method kl --seq-len 4096
expect "--disabled-layers not UTF-8, before scoring" "--disabled-layers is not valid UTF-8" $AQ score $M --data $D --method kl --disabled-layers $'\xff*'
