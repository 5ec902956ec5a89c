#!/usr/bin/env bash
# Hostile and broken inputs (issue 12): each case must exit 2 (1 for a resource
# limit) naming the file and the field, never crash, hang or wrap around.
set -u
SUITE=harden
. "$(dirname "$0")/lib.sh"
python3 tests/fuzz/make_inputs.py bad tests/fixtures/qwen3-vl-tiny "$tmp"
ids=tests/fixtures/qwen3_vl_tiny_ids.npy
T="timeout 20"

# config.json
expect "huge num_hidden_layers" "'num_hidden_layers' = 1000000000 is out of range" $T $AQ info "$tmp/cfg_layers_huge"
expect "heads x head_dim overflow" "overflows an int" $T $AQ info "$tmp/cfg_heads_overflow"
expect "negative rms_norm_eps" "'rms_norm_eps' = -1e-06" $T $AQ info "$tmp/cfg_eps_negative"
expect "zero rms_norm_eps" "'rms_norm_eps' = 0" $T $AQ info "$tmp/cfg_eps_zero"
expect "rms_norm_eps 0 as float" "'rms_norm_eps' = 1e-60" $T $AQ info "$tmp/cfg_eps_underflow"
expect "eos_token_id >= 2^32" "'eos_token_id' = 4294967297" $T $AQ info "$tmp/cfg_eos_huge"
expect "negative eos_token_id" "'eos_token_id' = -3" $T $AQ info "$tmp/cfg_eos_negative"
expect "eos_token_id = vocab" "'eos_token_id' = 512 is outside" $T $AQ info "$tmp/cfg_eos_vocab"
expect "head_dim 0" "'head_dim' = 0" $T $AQ info "$tmp/cfg_head_dim_zero"
expect "fewer layers than the checkpoint" "layers.1.input_layernorm.weight' belongs to layer 1" $T $AQ info "$tmp/cfg_fewer_layers"

# safetensors and the shard index
expect "NaN weight" "q_proj.weight': element 77 is NaN" $T $AQ eval "$tmp/st_nan" --data $ids
expect "Inf weight" "element 77 is infinite" $T $AQ eval "$tmp/st_inf" --data $ids
expect "shape product overflow" "field 'shape': size" $T $AQ info "$tmp/st_shape_overflow"
expect "empty weight_map" "'weight_map' is empty" $T $AQ info "$tmp/idx_empty"
expect "weight_map names .." "is not a file name in the model folder" $T $AQ info "$tmp/idx_dotdot"
expect "weight_map value not a string" "is not a file name" $T $AQ info "$tmp/idx_not_string"
expect "weight_map names the wrong shard" "missing from other.safetensors" $T $AQ info "$tmp/idx_wrong_shard"

# tokenizer.json
echo "hello world" >"$tmp/t.txt"
expect "negative added_tokens id" "added_tokens[0].id = -5" $T $AQ tokenize "$tmp/tok_neg_id.json" --text "$tmp/t.txt"
expect "huge added_tokens id" "added_tokens[1].id = 1099511627776" $T $AQ tokenize "$tmp/tok_huge_id.json" --text "$tmp/t.txt"
expect "4.5 KiB merge string" "model.merges[12] ('aaaa" $T $AQ tokenize "$tmp/tok_long_merge.json" --text "$tmp/t.txt"
out=$($T $AQ tokenize "$tmp/tok_long_merge_utf8.json" --text "$tmp/t.txt" 2>&1)
rc=$?
if [ $rc -eq 2 ] && grep -q '\.\.\.' <<<"$out" && iconv -f UTF-8 -t UTF-8 <<<"$out" >/dev/null 2>&1; then pass "long UTF-8 merge: message cut cleanly"; else fail "long UTF-8 merge: exit $rc: $out"; fi
out=$($T $AQ tokenize "$tmp/tok_backtrack.json" --text "$tmp/backtrack.txt" 2>&1)
rc=$?
if [ $rc -eq 2 ] && grep -q "tok_backtrack.json: pre_tokenizer.pretokenizers\[0\].pattern.Regex failed" <<<"$out"; then pass "PCRE2 match limit is bad input (exit 2), not 'no match'"; else fail "PCRE2 error: exit $rc: $out"; fi

# .npy
expect "3-D npy" "field 'shape' = (2, 2, 4): token ids must be a 2-D array" $T $AQ eval tests/fixtures/qwen3-vl-tiny --data "$tmp/npy_3d.npy"
expect "unquoted descr" "'descr' must be a quoted string" $T $AQ eval tests/fixtures/qwen3-vl-tiny --data "$tmp/npy_descr_unquoted.npy"
expect "bad descr" "field 'descr' = '<i4x'" $T $AQ eval tests/fixtures/qwen3-vl-tiny --data "$tmp/npy_descr_bad.npy"
expect "npy shape overflow" "dimension too large" $T $AQ eval tests/fixtures/qwen3-vl-tiny --data "$tmp/npy_shape_overflow.npy"
expect "npy repeated key" "repeated key 'descr'" $T $AQ eval tests/fixtures/qwen3-vl-tiny --data "$tmp/npy_dup_key.npy"
expect "npy key inside a value" "unexpected or repeated key 'x'" $T $AQ eval tests/fixtures/qwen3-vl-tiny --data "$tmp/npy_key_in_value.npy"
expect "npy header length past end" "runs past the end" $T $AQ eval tests/fixtures/qwen3-vl-tiny --data "$tmp/npy_hlen_past_end.npy"

# Non-regular inputs: FIFOs must not block, /dev/zero must not be read forever.
m="$tmp/fifo_model"
mkdir -p "$m" && ln -s "$PWD/tests/fixtures/qwen3-vl-tiny/model.safetensors" "$m/model.safetensors" && mkfifo "$m/config.json"
expect "FIFO config.json" "config.json is a FIFO, not a regular file" $T $AQ info "$m"
m2="$tmp/fifo_weights"
mkdir -p "$m2" && cp tests/fixtures/qwen3-vl-tiny/config.json "$m2/" && mkfifo "$m2/model.safetensors"
expect "FIFO weights" "safetensors file is a FIFO" $T $AQ info "$m2"
rm "$m2/model.safetensors" && mkfifo "$m2/model.safetensors.index.json"
expect "FIFO shard index" "shard index is a FIFO" $T $AQ info "$m2"
mkfifo "$tmp/tok.json" "$tmp/fifo.txt" "$tmp/fifo.npy"
expect "FIFO tokenizer.json" "tokenizer.json is a FIFO" $T $AQ tokenize "$tmp/tok.json" --text "$tmp/t.txt"
expect "FIFO .npy data" "is a FIFO" $T $AQ eval tests/fixtures/qwen3-vl-tiny --data "$tmp/fifo.npy"
# tokenize --text reads a pipe to its end (process substitution), never a device.
n=$($T $AQ tokenize "$tmp/tok_ok.json" --text <(printf 'hello world') --json 2>/dev/null | python3 -c "import json,sys; print(len(json.load(sys.stdin)['ids']))")
[ "$n" = 2 ] && pass "tokenize --text from a pipe" || fail "tokenize --text from a pipe: '$n' ids"
ln -s /dev/zero "$tmp/zero.txt"
expect "tokenize --text /dev/zero" "is a device or socket" $T $AQ tokenize "$tmp/tok_ok.json" --text "$tmp/zero.txt"
mkdir -p "$tmp/tm" && cp tests/fixtures/qwen3-vl-tiny/* "$tmp/tm/" && cp "$tmp/tok_ok.json" "$tmp/tm/tokenizer.json"
expect "--data .txt linked to /dev/zero" "is a character device" $T $AQ eval "$tmp/tm" --data "$tmp/zero.txt"
expect "--data .txt is a FIFO" "is a FIFO" $T $AQ eval "$tmp/tm" --data "$tmp/fifo.txt"
mkdir -p "$tmp/dir.txt"
expect "--data .txt is a directory" "is a directory" $T $AQ eval "$tmp/tm" --data "$tmp/dir.txt"

# Outputs: never through a device, FIFO or directory; exit 2, not 1.
mkfifo "$tmp/out.fifo" && ln -s "$tmp/out.fifo" "$tmp/link.npy"
# (The message names the flag once the command checks its outputs up front with out_check.)
while IFS='|' read -r o want; do
    expect "--logits ${o#$tmp/} refused" "$want" $T $AQ eval tests/fixtures/qwen3-vl-tiny --data "$tmp/npy_ok.npy" --logits "$o"
done <<END
/dev/null|is a device, FIFO or socket
$tmp/out.fifo|is a device, FIFO or socket
$tmp/link.npy|is a device, FIFO or socket
$tmp|is a directory
/|names a directory
$tmp/no/such/dir.npy|folder $tmp/no/such does not exist
END
ls "$tmp"/*.tmp.* >/dev/null 2>&1 && fail "temporary outputs left behind" || pass "no temporary outputs left behind"
