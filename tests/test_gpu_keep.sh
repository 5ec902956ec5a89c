# The gradient's kept activations through the command line (README "The GPU engine"): AUTOQ_GRAD_KEEP=1 on
# qwen3-tiny keeps every layer and gives the same JSON as =0 (the recompute), to the last bit; the TFLOP line
# names the work executed with the recompute beside the work required (README "Several GPUs"), and only when
# layers were recomputed; a bad AUTOQ_GRAD_KEEP exits 2; under --gpu-memory (the model fits, so no streaming)
# auto keeps what the cap leaves room for, with the same scores; AUTOQ_GRAD_KEEP=1 on the MoE fixture keeps its
# dense layer only. Skipped, visibly, without a GPU.
SUITE=gpu-keep
source tests/lib.sh
M=${AUTOQ_TINY:-../shared/models/qwen3-tiny}
D=tests/fixtures/qwen3_tiny_ids.npy
skip_without_model "$M"
skip_without_gpu "the gradient" "$AQ" score $M --data $D --num-samples 1 --method gradient --device cuda \
    --json "$tmp/probe.json"
run() { # NAME KEEP ARGS...: a gradient run of 4 windows in batches of 2, JSON and stderr kept
    local name=$1 keep=$2
    shift 2
    AUTOQ_GRAD_KEEP=$keep "$AQ" score $M --data $D --num-samples 4 --batch-size 2 --method gradient \
        --format w4a8,nvfp4 --device cuda --json "$tmp/$name.json" "$@" >/dev/null 2>"$tmp/$name.log"
}
run rec 0 && run keep 1 || fail "gradient runs: $(tail -2 "$tmp/rec.log" "$tmp/keep.log")"
if cmp -s "$tmp/rec.json" "$tmp/keep.json" && grep -q "keeps the activations of 8 of 8 layers" "$tmp/keep.log"; then
    pass "AUTOQ_GRAD_KEEP=1 keeps 8 of 8 layers, JSON identical to =0 ($(grep -h "peak GPU" "$tmp/rec.log" "$tmp/keep.log" | tr '\n' ' '))"
else
    fail "AUTOQ_GRAD_KEEP=1 against =0: $(grep -h "keeps\|rror" "$tmp/keep.log") $(cmp "$tmp/rec.json" "$tmp/keep.json")"
fi
if grep -q "TFLOP/s; executed .* with 8 of 8 layers recomputed" "$tmp/rec.log" && grep -q "TFLOP/s$" "$tmp/keep.log" &&
    ! grep -q executed "$tmp/keep.log"; then
    pass "the TFLOP line: work required, and executed with the recompute when layers were recomputed"
else
    fail "the TFLOP line: $(grep -h TFLOP "$tmp/rec.log" "$tmp/keep.log")"
fi
expect "a bad AUTOQ_GRAD_KEEP" "AUTOQ_GRAD_KEEP: 'yes'" env AUTOQ_GRAD_KEEP=yes "$AQ" score $M --data $D \
    --num-samples 1 --method gradient --device cuda
# --gpu-memory: the planned peak of a cap the model fits leaves auto a share of the layers (how many depends on
# the CUDA libraries' memory; printed), the scores the same
run cap64 0 --gpu-memory 64GiB
peak=$(sed -n 's/.*planned peak \([0-9.]*\) GiB.*/\1/p' "$tmp/cap64.log")
if [ -n "$peak" ] && run capped auto --gpu-memory "$(python3 -c "print(int(($peak + 1.05) * 2**30))")" &&
    cmp -s "$tmp/rec.json" "$tmp/capped.json" && grep -q "keeps the activations" "$tmp/capped.log"; then
    pass "auto under --gpu-memory (planned peak $peak GiB + 1.05 GiB): $(grep -ho "keeps the activations of [0-9]* of 8" "$tmp/capped.log"), same JSON"
else
    fail "auto under --gpu-memory: peak '$peak' $(tail -3 "$tmp/capped.log" 2>/dev/null)"
fi
# the MoE fixture: layer 1 is dense (mlp_only_layers), layers 0 and 2 sparse
X=tests/fixtures/qwen3-moe-tiny
for k in 0 1; do
    AUTOQ_GRAD_KEEP=$k "$AQ" score $X --data tests/fixtures/qwen3_moe_tiny_ids.npy --method gradient --format w4a8 \
        --device cuda --json "$tmp/moe$k.json" >/dev/null 2>"$tmp/moe$k.log"
done
if cmp -s "$tmp/moe0.json" "$tmp/moe1.json" && grep -q "keeps the activations of 1 of 3 layers" "$tmp/moe1.log"; then
    pass "MoE fixture: AUTOQ_GRAD_KEEP=1 keeps its dense layer (1 of 3), JSON identical to =0"
else
    fail "MoE fixture keep: $(grep -h "keeps\|rror" "$tmp/moe1.log") $(cmp "$tmp/moe0.json" "$tmp/moe1.json")"
fi
