#!/usr/bin/env bash
# Hardening, round two (issue 25): the outside tester's reproducers for input validation, the scores
# file's integrity and its HDF5 outputs. G is a model of `gen --preset tiny`, I its ids. The
# active_params checks (#9) and the self-describing attributes are in tests/test_h5.c.
set -u
SUITE=harden3
. "$(dirname "$0")/lib.sh"
T="timeout 60"
G=$tmp/G
$AQ gen "$G" --preset tiny --ids "$tmp/I.npy" --num-samples 2 --seq-len 32 >/dev/null 2>&1 || fail "gen tiny"
$AQ gen "$tmp/G8" --preset tiny --layers 8 >/dev/null 2>&1 || fail "gen tiny --layers 8"
I=$tmp/I.npy

# #5: a pre-tokenizer regex that backtracks is bad input (exit 2) naming the file and the field.
python3 - "$tmp/tok_bt.json" <<'PY'
import json, sys
sys.path.insert(0, "tests/fuzz")
import make_inputs
t = make_inputs.min_tokenizer()
t["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(.*)*x"
json.dump(t, open(sys.argv[1], "w"))
PY
printf 'hello world, the quick brown fox jumps over the lazy dog\n' >"$tmp/t.txt"
expect "#5 backtracking regex (.*)*x: exit 2 naming file and field" \
    "tok_bt.json: pre_tokenizer.pretokenizers[0].pattern.Regex failed at text byte 0: match limit exceeded" \
    $T $AQ tokenize "$tmp/tok_bt.json" --text "$tmp/t.txt"

# Scores and a recipe of the 4-layer model.
$T $AQ score "$G" --data "$I" --method gradient --format w4a8,w8a8 --device cpu --out "$tmp/s.h5" >/dev/null 2>&1 ||
    fail "score G"
$T $AQ search --scores "$tmp/s.h5" --budget 5 --out "$tmp/r4.json" >/dev/null 2>&1 || fail "search G"

# #11: a recipe of the 4-layer model applied to the 8-layer one (and back) is exit 2 naming the field;
# --allow-partial deploys it with a warning.
expect "#11 quantize: 4-layer recipe on an 8-layer model" \
    "r4.json: field 'groups' assigns nothing to 28 of the 56 linears" \
    $T $AQ quantize "$tmp/G8" --recipe "$tmp/r4.json" --out "$tmp/q8"
[ -e "$tmp/q8" ] && fail "#11 quantize refused, yet wrote its folder"
expect "#11 eval --recipe: 4-layer recipe on an 8-layer model" "(--allow-partial keeps them bf16)" \
    $T $AQ eval "$tmp/G8" --data "$I" --recipe "$tmp/r4.json"
out=$($T $AQ eval "$tmp/G8" --data "$I" --recipe "$tmp/r4.json" --allow-partial 2>&1)
rc=$?
if [ $rc -eq 0 ] && grep -q "28 of the 56 linears of .* are not in the recipe and stay bf16 (--allow-partial)" <<<"$out" &&
    grep -q "^28 of 56 linears quantized" <<<"$out"; then
    pass "#11 eval --allow-partial: warns and quantizes the 28 named linears"
else fail "#11 eval --allow-partial: exit $rc: $out"; fi
out=$($T $AQ quantize "$tmp/G8" --recipe "$tmp/r4.json" --out "$tmp/q8p" --allow-partial 2>&1)
rc=$?
if [ $rc -eq 0 ] && grep -q "stay bf16 (--allow-partial)" <<<"$out" && [ -f "$tmp/q8p/model.safetensors" ]; then
    pass "#11 quantize --allow-partial: warns and writes the checkpoint"
else fail "#11 quantize --allow-partial: exit $rc: $out"; fi
$T $AQ score "$tmp/G8" --data "$I" --method gradient --device cpu --out "$tmp/s8.h5" >/dev/null 2>&1 &&
    $T $AQ search --scores "$tmp/s8.h5" --budget 5 --out "$tmp/r8.json" >/dev/null 2>&1 || fail "score/search G8"
expect "#11 quantize: 8-layer recipe on the 4-layer model" \
    "members[0] is not a linear of $G ('model.layers.4.self_attn.q_proj'): a recipe for another model? (--allow-partial skips it)" \
    $T $AQ quantize "$G" --recipe "$tmp/r8.json" --out "$tmp/q4"
out=$($T $AQ eval "$G" --data "$I" --recipe "$tmp/r8.json" --allow-partial 2>&1)
rc=$?
if [ $rc -eq 0 ] && grep -q "members are not linears of .* and are skipped (--allow-partial)" <<<"$out"; then
    pass "#11 eval --allow-partial: members the model lacks are skipped with a warning"
else fail "#11 eval --allow-partial, 8-layer recipe: exit $rc: $out"; fi
out=$($T $AQ eval "$G" --data "$I" --recipe "$tmp/r4.json" 2>&1)
rc=$?
if [ $rc -eq 0 ] && ! grep -q "allow-partial" <<<"$out"; then pass "#11 a recipe of the same model deploys silently"
else fail "#11 own recipe: exit $rc: $out"; fi

# #12: single-bit flips of the scores file: each refused naming the file, or the identical recipe.
python3 - "$AQ" "$tmp/s.h5" "$tmp/r4.json" "$tmp" <<'PY' && pass "#12 400 random bit flips of a scores file: refused or the identical recipe" || fail "#12 bit flips"
import json, random, subprocess, sys
aq, good, recipe, tmp = sys.argv[1:5]
data = bytearray(open(good, "rb").read())
want = json.load(open(recipe))
want.pop("model", None)
rng = random.Random(25)  # fixed seed: the same bits on every run
refused = same = 0
for k in range(400):
    bit = rng.randrange(len(data) * 8)
    data[bit // 8] ^= 1 << (bit % 8)
    path = f"{tmp}/flip.h5"
    open(path, "wb").write(data)
    data[bit // 8] ^= 1 << (bit % 8)
    p = subprocess.run([aq, "search", "--scores", path, "--budget", "5", "--out", f"{tmp}/flip.json"],
                       capture_output=True, text=True, timeout=60)
    if p.returncode == 2 and path in p.stderr:
        refused += 1
        continue
    got = json.load(open(f"{tmp}/flip.json")) if p.returncode == 0 else None
    if got is not None:
        got.pop("model", None)
    if p.returncode != 0 or got != want:
        print(f"bit {bit}: exit {p.returncode}: {p.stderr.strip()[:300]} (recipe differs: {got != want})")
        sys.exit(1)
    same += 1
print(f"  400 bit flips of a {len(data)}-byte scores file: {refused} refused, {same} the identical recipe")
PY

# #13: a link planted at the temporary name of an HDF5 output is never followed or renamed into place.
echo "victim" >"$tmp/victim"
for cmd in "score $G --data $I --method gradient --device cpu --out $tmp/o.h5" \
    "search --scores $tmp/s.h5 --budget 5 --h5 $tmp/o.h5"; do
    rm -f "$tmp/o.h5"
    # exec keeps the shell's pid, so the link sits at the very name PATH.tmp.<pid> of autoq's process
    bash -c 'ln -s "$1" "$2.tmp.$$"; shift 2; exec "$@"' _ "$tmp/victim" "$tmp/o.h5" $AQ $cmd >/dev/null 2>&1
    rc=$?
    name=${cmd%% *}
    if [ $rc -eq 0 ] && [ "$(cat "$tmp/victim")" = victim ] && [ -f "$tmp/o.h5" ] && [ ! -L "$tmp/o.h5" ] &&
        $AQ search --scores "$tmp/o.h5" --budget 5 >/dev/null 2>&1; then
        pass "#13 $name: a link planted at the temporary name is left alone; the output is a regular file"
    else fail "#13 $name: exit $rc, victim '$(cat "$tmp/victim")', $(ls -l "$tmp/o.h5" 2>&1)"; fi
    rm -f "$tmp"/o.h5.tmp.*
done
# and a link at the output path itself is replaced, never written through
ln -sf "$tmp/victim" "$tmp/o.h5"
$AQ search --scores "$tmp/s.h5" --budget 5 --h5 "$tmp/o.h5" >/dev/null 2>&1
if [ "$(cat "$tmp/victim")" = victim ] && [ -f "$tmp/o.h5" ] && [ ! -L "$tmp/o.h5" ]; then
    pass "#13 search --h5 onto a link: the link is replaced, its target untouched"
else fail "#13 search --h5 onto a link: victim '$(cat "$tmp/victim")'"; fi
left=$(ls -d "$tmp"/*.tmp.* 2>/dev/null)
[ -z "$left" ] && pass "#13 no temporary file or folder is left behind" || fail "#13 left behind: $left"
