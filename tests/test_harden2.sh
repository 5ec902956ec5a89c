#!/usr/bin/env bash
# File safety of the newer commands (issue 25, round two): the GPTQ cache, quantize's and gen's
# output folders, and the one input policy (README §1): every case exits as stated, never hangs,
# never writes through a planted link, never leaves a temporary file or folder behind.
set -u
SUITE=harden2
. "$(dirname "$0")/lib.sh"
T="timeout 300" # a hang fails; a loaded machine under ASan may take minutes per GPTQ run
case $AQ in /*) ;; *) AQ=$PWD/$AQ ;; esac # the --out cases below run in another folder
G="$tmp/G"
I="$tmp/I.npy"
$AQ gen "$G" --preset tiny --ids "$I" --num-samples 2 --seq-len 32 2>/dev/null || fail "gen G"
score() { # CACHE OUT.json [more]: kl scores with GPTQ, the cache in CACHE
    local c=$1 o=$2
    shift 2
    $T $AQ score "$G" --data "$I" --method kl --quantizer gptq --gptq-cache "$c" --json "$o" "$@"
}
leftovers() { # DIR: temporary files or folders left in DIR
    find "$1" -maxdepth 2 -name '*.tmp.*' | grep -q .
}

# The reference: scores computed without any cache file; its cache file's name.
mkdir -p "$tmp/c0"
score "$tmp/c0" "$tmp/ref.json" >/dev/null 2>"$tmp/err" || fail "reference score: $(cat "$tmp/err")"
name=$(ls "$tmp/c0")
[ -n "$name" ] && [ -f "$tmp/c0/$name" ] || fail "no cache file written"

# 1. A FIFO under the cache file's name: skipped with a warning (opened non-blocking), recomputed, replaced.
mkdir -p "$tmp/c1" && mkfifo "$tmp/c1/$name"
out=$(score "$tmp/c1" "$tmp/s1.json" 2>&1)
rc=$?
if [ $rc -eq 0 ] && grep -q "is a FIFO, not a regular file; ignored, recomputing" <<<"$out" && cmp -s "$tmp/ref.json" "$tmp/s1.json" &&
    [ -f "$tmp/c1/$name" ] && [ ! -p "$tmp/c1/$name" ]; then
    pass "FIFO in the GPTQ cache: skipped with a warning, recomputed"
else fail "FIFO in the GPTQ cache: exit $rc: $out"; fi

# 2. Symbolic links planted in the cache: at the temporary name an older autoq used (PATH.tmp.PID:
# autoq's own pid, through exec) and at the cache file's own name. Neither target is written, the
# link at the cache's name is refused when reading and replaced (not followed) when writing.
mkdir -p "$tmp/c2"
echo victim >"$tmp/victim1" && echo victim >"$tmp/victim2"
ln -s "$tmp/victim2" "$tmp/c2/$name"
out=$(sh -c 'ln -s "$1" "$2.tmp.$$"; shift 2; exec "$@"' _ "$tmp/victim1" "$tmp/c2/$name" \
    $AQ score "$G" --data "$I" --method kl --quantizer gptq --gptq-cache "$tmp/c2" --json "$tmp/s2.json" 2>&1)
rc=$?
if [ "$(cat "$tmp/victim1")" = victim ] && [ "$(cat "$tmp/victim2")" = victim ] && [ -f "$tmp/c2/$name" ] &&
    [ ! -L "$tmp/c2/$name" ] && grep -q "is a symbolic link" <<<"$out"; then
    pass "links planted in the GPTQ cache: never written through"
else fail "links planted in the GPTQ cache: exit $rc: $out; victim1 $(cat "$tmp/victim1") victim2 $(cat "$tmp/victim2")"; fi
rm "$tmp/c2/$name".tmp.[0-9]* # the planted link (not autoq's)
leftovers "$tmp/c2" && fail "GPTQ cache: temporary file left" || pass "GPTQ cache: no temporary file left"

# 4. A cache entry with a valid checksum but an infinite, NaN or huge row scale, or an out-of-range
# code: rejected with a warning, recomputed (the same scores), and quantize writes the right codes.
patch_cache() { # SRC DST WHAT: rewrites the first entry's first scale or code, then the checksum
    python3 - "$@" <<'PY'
import struct, sys
src, dst, what = sys.argv[1:4]
b = bytearray(open(src, "rb").read())
p = 24
while b[p] == 0: p += 1  # the first entry with codes
assert b[p] == 1, b[p]
out, inn = struct.unpack_from("<ii", b, p + 1)
s = p + 9
if what == "code":
    b[s + 4 * out] = 100  # int4 codes are -8..7
else:
    struct.pack_into("<f", b, s, {"inf": float("inf"), "nan": float("nan"), "1e38": 1e38}[what])
body = bytes(b[:-8])
h, M = 0xcbf29ce484222325, (1 << 64) - 1
n = len(body) // 8 * 8
for i in range(0, n, 8):
    h = ((h ^ int.from_bytes(body[i:i + 8], "little")) * 0x100000001b3) & M
for c in body[n:]:
    h = ((h ^ c) * 0x100000001b3) & M
open(dst, "wb").write(body + struct.pack("<Q", h))
PY
}
# (eval: the same cache code as score, one forward pass; its kl and NLLs must be the reference's.)
nums() { grep -E '"(kl|nll_ref|nll_quantized)"' "$1"; }
mkdir -p "$tmp/e0"
$T $AQ eval "$G" --data "$I" --format w4a8 --quantizer gptq --gptq-cache "$tmp/e0" --json >"$tmp/e0.json" 2>/dev/null ||
    fail "eval reference"
ename=$(ls "$tmp/e0")
for what in inf nan 1e38 code; do
    mkdir -p "$tmp/e$what" && patch_cache "$tmp/e0/$ename" "$tmp/e$what/$ename" $what
    out=$($T $AQ eval "$G" --data "$I" --format w4a8 --quantizer gptq --gptq-cache "$tmp/e$what" --json 2>&1 >"$tmp/e$what.json")
    rc=$?
    if [ $rc -eq 0 ] && grep -q "not a valid GPTQ cache.*ignored, recomputing" <<<"$out" &&
        [ "$(nums "$tmp/e0.json")" = "$(nums "$tmp/e$what.json")" ] && cmp -s "$tmp/e0/$ename" "$tmp/e$what/$ename"; then
        pass "GPTQ cache entry with a bad $what: rejected, recomputed, rewritten"
    else fail "GPTQ cache entry with a bad $what: exit $rc: $out"; fi
done
# quantize with GPTQ: a reference checkpoint, its cache entry patched, the same checkpoint again.
$AQ search "$G" --data "$I" --method kl --budget 5 --out "$tmp/R.json" >/dev/null 2>&1 || fail "search for a recipe"
mkdir -p "$tmp/cq"
$T $AQ quantize "$G" --recipe "$tmp/R.json" --out "$tmp/qref" --quantizer gptq --data "$I" --gptq-cache "$tmp/cq" 2>/dev/null ||
    fail "quantize reference"
qname=$(ls "$tmp/cq")
for what in 1e38; do
    mkdir -p "$tmp/cq$what" && patch_cache "$tmp/cq/$qname" "$tmp/cq$what/$qname" $what
    out=$($T $AQ quantize "$G" --recipe "$tmp/R.json" --out "$tmp/q$what" --quantizer gptq --data "$I" \
        --gptq-cache "$tmp/cq$what" 2>&1)
    rc=$?
    if [ $rc -eq 0 ] && grep -q "not a valid GPTQ cache" <<<"$out" &&
        cmp -s "$tmp/qref/model.safetensors" "$tmp/q$what/model.safetensors"; then
        pass "quantize: GPTQ cache entry with a bad $what scale rejected, the same checkpoint"
    else fail "quantize: bad $what scale in the GPTQ cache: exit $rc: $out"; fi
done

# 3. quantize --force: no fixed temporary names. A folder planted at OUT.old.PID (autoq's pid, through
# exec) is left alone, the run succeeds, and nothing temporary stays.
$AQ quantize "$G" --recipe "$tmp/R.json" --out "$tmp/out" 2>/dev/null || fail "quantize out"
out=$(sh -c 'mkdir -p "$1.old.$$/sub" && touch "$1.old.$$/sub/f"; shift; exec "$@"' _ "$tmp/out" \
    $AQ quantize "$G" --recipe "$tmp/R.json" --out "$tmp/out" --force 2>&1)
rc=$?
if [ $rc -eq 0 ] && [ -f "$tmp/out/config.json" ] && ! leftovers "$tmp" && ls -d "$tmp"/out.old.* | grep -q .; then
    pass "quantize --force with OUT.old.PID present: replaced, nothing temporary left"
else fail "quantize --force with OUT.old.PID present: exit $rc: $out; $(ls "$tmp")"; fi
rm -rf "$tmp"/out.old.*
before=$(cd "$tmp/out" && sha256sum *)
AUTOQ_TEST_FAIL_WRITE=1 $AQ quantize "$G" --recipe "$tmp/R.json" --out "$tmp/out" --force 2>/dev/null
rc=$?
[ $rc -eq 1 ] && ! leftovers "$tmp" && [ "$(cd "$tmp/out" && sha256sum *)" = "$before" ] &&
    pass "quantize: a failed write leaves OUT as it was and nothing temporary" || fail "quantize failed write: exit $rc; $(ls "$tmp")"
{ AUTOQ_TEST_SIGNAL_WRITE=1 $AQ quantize "$G" --recipe "$tmp/R.json" --out "$tmp/out" --force; rc=$?; } 2>/dev/null
[ $rc -eq 143 ] && ! leftovers "$tmp" && [ "$(cd "$tmp/out" && sha256sum *)" = "$before" ] &&
    pass "quantize: SIGTERM mid-write leaves OUT as it was and no temporary folder" || fail "quantize SIGTERM: exit $rc; $(ls "$tmp")"
{ AUTOQ_TEST_SIGNAL_WRITE=1 $AQ quantize "$G" --recipe "$tmp/R.json" --out "$tmp/fresh"; rc=$?; } 2>/dev/null
[ $rc -eq 143 ] && ! leftovers "$tmp" && [ ! -e "$tmp/fresh" ] &&
    pass "quantize: SIGTERM on a new OUT leaves nothing" || fail "quantize SIGTERM on a new OUT: exit $rc; $(ls "$tmp")"

# 14. An empty --out, "/", "." or ".." is exit 2 (no hidden temporary folder in the current one).
mkdir -p "$tmp/cwd"
for o in "" / . .. x/. x/..; do
    out=$(cd "$tmp/cwd" && $AQ quantize "$G" --recipe "$tmp/R.json" --out "$o" --force 2>&1 >/dev/null)
    rc=$?
    if [ $rc -eq 2 ] && [ -z "$(ls -A "$tmp/cwd")" ]; then pass "quantize --out '$o': exit 2, nothing written"; else
        fail "quantize --out '$o': exit $rc: $out; $(ls -A "$tmp/cwd")"
    fi
done

# 10. gen never replaces a model by accident; nothing is left when it fails.
cp -r "$G" "$tmp/keep"
sums=$(cd "$tmp/keep" && sha256sum *)
expect "gen into a non-empty folder without --force" "exists and is not empty (add --force" $AQ gen "$tmp/keep" --preset moe-small
[ "$(cd "$tmp/keep" && sha256sum *)" = "$sums" ] && pass "gen: the existing model untouched" || fail "gen: the existing model changed"
$AQ gen "$tmp/keep" --preset moe-small --force 2>/dev/null && grep -q qwen3_moe "$tmp/keep/config.json" && ! leftovers "$tmp" &&
    pass "gen --force replaces the model" || fail "gen --force"
mkdir -p "$tmp/empty" && $AQ gen "$tmp/empty" --preset tiny 2>/dev/null && [ -f "$tmp/empty/model.safetensors" ] &&
    pass "gen into an existing empty folder" || fail "gen into an empty folder"
expect "gen: no room for the weights" "but its file system has" $AQ gen "$tmp/big" --preset 30b-a3b --layers 1000
[ ! -e "$tmp/big" ] && ! leftovers "$tmp" && pass "gen refused for room: no folder left" || fail "gen refused: left $(ls "$tmp")"
{ AUTOQ_TEST_SIGNAL_WRITE=1 $AQ gen "$tmp/sig" --preset tiny; rc=$?; } 2>/dev/null
[ $rc -eq 143 ] && [ ! -e "$tmp/sig" ] && ! leftovers "$tmp" && pass "gen: SIGTERM leaves nothing" || fail "gen SIGTERM: exit $rc; $(ls "$tmp")"
touch "$tmp/afile"
expect "gen onto a file" "exists and is not a folder" $AQ gen "$tmp/afile" --preset tiny --force

# One input policy: every input is a regular file of at most its cap, never a FIFO (no hang).
mkfifo "$tmp/fifo.json"
expect "FIFO recipe" "recipe is a FIFO, not a regular file" $T $AQ quantize "$G" --recipe "$tmp/fifo.json" --out "$tmp/o5"
expect "FIFO format file" "format file is a FIFO, not a regular file" $T $AQ eval "$G" --data "$I" --format "$tmp/fifo.json"
echo '{"run": ' >"$tmp/ck.json"
expect "score checkpoint not JSON" "checkpoint is not valid JSON (line" $AQ score "$G" --data "$I" --method kl --checkpoint "$tmp/ck.json"
expect "FIFO score checkpoint" "FIFO" $T $AQ score "$G" --data "$I" --method kl \
    --checkpoint "$tmp/fifo.json"
mkdir -p "$tmp/bigcfg" && cp "$G"/* "$tmp/bigcfg/" && truncate -s 300M "$tmp/bigcfg/config.json"
expect "config.json over 256 MiB" "over the 256 MiB limit" $T $AQ info "$tmp/bigcfg"
truncate -s 300M "$tmp/big.json"
expect "recipe over 256 MiB" "over the 256 MiB limit" $T $AQ quantize "$G" --recipe "$tmp/big.json" --out "$tmp/o6"
expect "recipe not JSON" "recipe is not valid JSON (line 1" $AQ quantize "$G" --recipe "$tmp/I.npy" --out "$tmp/o7"
# A FIFO among a model's other files is not copied by quantize (and does not block it).
mkdir -p "$tmp/gf" && cp "$G"/* "$tmp/gf/" && mkfifo "$tmp/gf/extra.txt"
$T $AQ quantize "$tmp/gf" --recipe "$tmp/R.json" --out "$tmp/o8" 2>/dev/null && [ ! -e "$tmp/o8/extra.txt" ] &&
    pass "quantize skips a FIFO among the model's files" || fail "quantize with a FIFO in MODEL"
