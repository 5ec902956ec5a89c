#!/usr/bin/env bash
# Bad input exits 2 with a message that names the problem (README §1).
set -u
SUITE=errors
. "$(dirname "$0")/lib.sh"
python3 tests/make_bad.py tests/fixtures/qwen3-vl-tiny "$tmp"

ids=tests/fixtures/qwen3_vl_tiny_ids.npy
expect "truncated safetensors" "truncated file" $AQ eval "$tmp/truncated" --data $ids
expect "header length past end" "runs past the end" $AQ eval "$tmp/header_past_end" --data $ids
expect "data offsets out of range" "out of range" $AQ eval "$tmp/offset_out_of_range" --data $ids
expect "overlapping data offsets" "overlapping" $AQ eval "$tmp/overlap" --data $ids
expect "unknown dtype" "unknown dtype 'Q7'" $AQ eval "$tmp/unknown_dtype" --data $ids
expect "shape disagrees with config" "q_proj.weight' has shape [128, 256]" $AQ eval "$tmp/wrong_shape" --data $ids
expect "missing tensor" "q_proj.weight' is missing" $AQ info "$tmp/missing_tensor"
expect "config field missing" "'hidden_size' is missing" $AQ info "$tmp/config_missing_field"
expect "config field mistyped" "'num_hidden_layers' must be an integer" $AQ info "$tmp/config_mistyped_field"
expect "config unknown model_type" "model_type' = 'llama'" $AQ info "$tmp/config_unknown_model_type"
expect "not a model folder" "no readable config.json" $AQ info "$tmp"
mkdir -p "$tmp/noweights" && cp tests/fixtures/qwen3-vl-tiny/config.json "$tmp/noweights/"
expect "no weights" "no model.safetensors" $AQ info "$tmp/noweights"
expect "token id >= vocab" "outside the vocabulary" $AQ eval tests/fixtures/qwen3-vl-tiny --data "$tmp/id_too_large.npy"
expect "empty npy" "empty" $AQ eval tests/fixtures/qwen3-vl-tiny --data "$tmp/empty.npy"
expect "ragged npy" "ragged or truncated" $AQ eval tests/fixtures/qwen3-vl-tiny --data "$tmp/ragged.npy"
expect "float npy ids" "int32 or int64" $AQ eval tests/fixtures/qwen3-vl-tiny --data "$tmp/float_ids.npy"
expect "1-D npy ids" "2-D array" $AQ eval tests/fixtures/qwen3-vl-tiny --data "$tmp/one_dim.npy"
expect "unknown option" "info: unknown option '--bogus'" $AQ info tests/fixtures/qwen3-vl-tiny --bogus
expect "unknown command" "unknown command" $AQ frobnicate

# Nothing half-written: a failing eval leaves no logits file behind.
$AQ eval tests/fixtures/qwen3-vl-tiny --data "$tmp/id_too_large.npy" --logits "$tmp/l.npy" 2>/dev/null
if ls "$tmp"/l.npy* >/dev/null 2>&1; then echo "FAIL errors: no partial output"; else echo "PASS errors: no partial output"; fi
# And a good run writes a readable [T, V] float32 .npy.
$AQ eval tests/fixtures/qwen3-vl-tiny --data "$tmp/ok.npy" --logits "$tmp/l.npy" >/dev/null 2>&1
sz=$(stat -c %s "$tmp/l.npy" 2>/dev/null || echo 0)
[ "$sz" -eq $((128 + 8 * 512 * 4)) ] && echo "PASS errors: logits npy written" || echo "FAIL errors: logits npy size $sz"

# The same weights as F32, as F16, and with the transformers-4 RoPE spelling give the same NLL.
python3 tests/make_dtypes.py tests/fixtures/qwen3-vl-tiny "$tmp/dt"
base=$($AQ eval tests/fixtures/qwen3-vl-tiny --data $ids --json 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['mean_nll'])")
for v in f32 f16 rope_theta; do
    got=$($AQ eval "$tmp/dt/$v" --data $ids --json 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['mean_nll'])")
    tol=$([ $v = f16 ] && echo 1e-3 || echo 1e-12)
    python3 -c "import sys; sys.exit(0 if abs($got - $base) <= $tol * abs($base) else 1)" 2>/dev/null &&
        echo "PASS errors: $v checkpoint loads and matches BF16 (NLL $got)" || echo "FAIL errors: $v checkpoint: NLL '$got' vs $base"
done
$AQ info "$tmp/dt/rope_theta" | grep -q "rope theta 5e+06" && echo "PASS errors: rope_theta spelling read" || echo "FAIL errors: rope_theta spelling"
$AQ score --help >"$tmp/help" 2>/dev/null && grep -q "autoq score" "$tmp/help" && pass "score --help: its usage on stdout, exit 0" || fail "--help"
$AQ >/dev/null 2>&1; [ $? -eq 2 ] && pass "no command: usage, exit 2" || fail "no command exit status"
