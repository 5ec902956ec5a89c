#!/usr/bin/env bash
# The command line (README "Commands", §1): usage on stdout from the option tables, README's synopsis
# equal to it, per-command options (flags anywhere, unknown and mode-unused options refused), outputs
# never aliasing inputs or each other, ModelOpt config names for --format.
set -u
SUITE=cli
. "$(dirname "$0")/lib.sh"
F=tests/fixtures/qwen3-vl-tiny
I=tests/fixtures/qwen3_vl_tiny_ids.npy
cmds="info eval score search quantize tokenize gen"

# ---- usage ----
$AQ --help >"$tmp/help" 2>"$tmp/err" && [ ! -s "$tmp/err" ] && grep -q "^autoq gen " "$tmp/help" &&
    pass "--help: every command's synopsis on stdout, exit 0" || fail "--help: exit or stream wrong"
ok=1
for c in $cmds; do
    $AQ $c --help >"$tmp/h_$c" 2>"$tmp/err" && [ ! -s "$tmp/err" ] && grep -q "^autoq $c " "$tmp/h_$c" || ok=0
    $AQ $c -h 2>/dev/null | cmp -s - "$tmp/h_$c" || ok=0
done
[ $ok = 1 ] && pass "CMD --help and -h: the command's usage on stdout, exit 0" || fail "CMD --help"
$AQ quantize $F --out "$tmp/x" --help >/dev/null 2>&1 && pass "--help after other options" || fail "--help after options"
$AQ >"$tmp/out" 2>"$tmp/err"
[ $? -eq 2 ] && [ ! -s "$tmp/out" ] && grep -q "^autoq score" "$tmp/err" && pass "no command: usage on stderr, exit 2" ||
    fail "no command"

# README's Commands block is `autoq --help` itself, and each command's options are those of its --help.
python3 - README.md "$tmp" $cmds <<'PY' && pass "README Commands block = autoq --help" || fail "README Commands block differs from autoq --help"
import sys
readme, tmp = sys.argv[1], sys.argv[2]
s = open(readme).read()
start = s.index("## Commands\n\n```\n") + len("## Commands\n\n```\n")
block = s[start:s.index("```\n", start)]
help = open(f"{tmp}/help").read()
assert help.startswith("usage:\n") and help[len("usage:\n"):] == block, "differ"
PY
python3 - README.md "$tmp" $cmds <<'PY' && pass "README options = CMD --help options, every command, both ways" || fail "README vs --help options"
import re, sys
readme, tmp, cmds = sys.argv[1], sys.argv[2], sys.argv[3:]
s = open(readme).read()
start = s.index("## Commands\n\n```\n") + len("## Commands\n\n```\n")
block = s[start:s.index("```\n", start)]
opts, cur = {}, None
for line in block.splitlines():
    m = re.match(r"autoq (\w+) ", line)
    if m:
        cur = m.group(1)
    elif not line.startswith(" "):
        cur = None  # "every command: ...", the closing line
    if cur:
        opts.setdefault(cur, set()).update(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", line))
bad = []
for c in cmds:
    h = set()
    for line in open(f"{tmp}/h_{c}"):
        m = re.match(r"  (--[a-z0-9-]+)", line)
        if m:
            h.add(m.group(1))
    h -= {"--help", "--quiet"}  # every command's: README's "every command:" line
    r = opts.get(c, set())
    if r != h:
        bad.append(f"{c}: README only {sorted(r - h)}, --help only {sorted(h - r)}")
assert not bad, bad
PY

# Every option the benchmark and GPU test scripts pass is one their command takes.
python3 - "$tmp" bench/*.sh tests/test_gpu*.sh tests/demo.sh <<'PY' && pass "bench/ and GPU test scripts use only declared options" || fail "scripts use undeclared options"
import re, sys
tmp, files = sys.argv[1], sys.argv[2:]
known = {}
for c in "info eval score search quantize tokenize gen".split():
    known[c] = {m.group(1) for m in (re.match(r"  (--[a-z0-9-]+)", l) for l in open(f"{tmp}/h_{c}")) if m}
bad = []
for f in files:
    text = re.sub(r"\\\n\s*", " ", open(f).read())  # join continued lines
    for m in re.finditer(r"(?:\$AQ|\"\$AQ\"|\./autoq|\$\{AQ\}) (info|eval|score|search|quantize|tokenize|gen)\b([^\n|;&>]*)", text):
        for o in re.findall(r"(?<![\w=-])--[a-z0-9][a-z0-9-]*", m.group(2)):
            if o not in known[m.group(1)]:
                bad.append(f"{f}: {m.group(1)} {o}")
assert not bad, bad
PY

# ---- options per command ----
$AQ score $F --data $I --method gradient --num-samples 1 --out "$tmp/s.h5" >/dev/null 2>&1 || fail "score for the tests below"
$AQ search --scores "$tmp/s.h5" --budget 5 --out "$tmp/r.json" >/dev/null 2>&1 || fail "search for the tests below"
# row 7: a flag is known by the command, wherever it stands
$AQ quantize $F --recipe "$tmp/r.json" --out "$tmp/q" --force --device cpu >/dev/null 2>"$tmp/err" &&
    $AQ quantize $F --force --recipe "$tmp/r.json" --out "$tmp/q" --device cpu >/dev/null 2>>"$tmp/err" &&
    [ -f "$tmp/q/model.safetensors" ] && pass "quantize --force before --device (and first) accepted" ||
    fail "quantize --force: $(cat "$tmp/err")"
# row 8: options the command or its mode does not use
expect "search --scores refuses scoring options" "search: --method is not used with --scores" \
    $AQ search --scores "$tmp/s.h5" --budget 5 --method gradient --format nvfp4 --gpus 2
expect "search --scores refuses --gpus" "search: --gpus is not used with --scores" $AQ search --scores "$tmp/s.h5" --budget 5 --gpus 2
expect "search --scores refuses --device" "search: --device is not used with --scores" $AQ search --scores "$tmp/s.h5" --budget 5 --device cpu
expect "search --scores refuses --data without --verify" "search: --data is not used with --scores without --verify" \
    $AQ search --scores "$tmp/s.h5" --budget 5 --data $I
expect "search --scores refuses --quantizer without --verify" "search: --quantizer is not used with --scores without --verify" \
    $AQ search --scores "$tmp/s.h5" --budget 5 --quantizer gptq
$AQ search --scores "$tmp/s.h5" --budget 5 --verify --data $I --num-samples 1 >/dev/null 2>"$tmp/err" &&
    pass "search --scores --verify takes --data" || fail "search --scores --verify --data: $(cat "$tmp/err")"
expect "unknown option names it and the command" "search: unknown option '--bogus'" $AQ search --scores "$tmp/s.h5" --budget 5 --bogus
expect "an option of another command" "info: unknown option '--force'" $AQ info $F --force
expect "option given twice" "option --budget given twice" $AQ search --scores "$tmp/s.h5" --budget 5 --budget 6
expect "value missing" "option --budget needs a value" $AQ search --scores "$tmp/s.h5" --budget
expect "an option as a value" "option --out needs a value (got the option --force)" \
    $AQ quantize $F --recipe "$tmp/r.json" --out --force
expect "enum value" "--cost must be memory or active (got 'flops')" $AQ search --scores "$tmp/s.h5" --budget 5 --cost flops
expect "double range" "option --budget = '17' must be a number in (0, 16]" $AQ search --scores "$tmp/s.h5" --budget 17
expect "--emit NAME" "--emit 'yaml=x' must be llmcompressor=FILE or modelopt=FILE" \
    $AQ search --scores "$tmp/s.h5" --budget 5 --emit yaml=x
$AQ eval $F --data $I --recipe "$tmp/r.json" --logits "$tmp/l.npy" >/dev/null 2>&1 && [ -s "$tmp/l.npy" ] &&
    pass "eval --logits with --recipe writes the quantized model's logits" || fail "eval --logits with --recipe"
expect "eval --disabled-layers without --format" "eval: --disabled-layers is not used without --format" \
    $AQ eval $F --data $I --disabled-layers '*'
expect "gen --num-samples without --ids" "gen: --num-samples is not used without --ids" $AQ gen "$tmp/g" --num-samples 3
expect "score --gptq-pipeline says why" "scores always quantize with the basic pipeline" \
    $AQ score $F --data $I --method kl --gptq-pipeline basic
expect "missing --method" "score: --method is required (kl or gradient)" $AQ score $F --data $I
expect "missing --data" "score: --data is required" $AQ score $F --method kl
expect "missing MODEL" "quantize: MODEL folder missing" $AQ quantize --recipe "$tmp/r.json" --out "$tmp/q2"
# the GPU options parse in every build, as before; without a device --gpus is refused when the run starts
$AQ score $F --data $I --method kl --num-samples 1 --device cpu --batch-size 2 --gpu-gemm bf16 --json "$tmp/b.json" \
    >/dev/null 2>"$tmp/err" && pass "score --batch-size --gpu-gemm accepted with --device cpu" ||
    fail "score GPU options on the CPU: $(cat "$tmp/err")"
expect "score --gpus on the CPU" "--gpus 2: no CUDA device in use" $AQ score $F --data $I --method kl --device cpu --gpus 2

# ---- row 6: outputs never alias inputs or each other ----
cp $I "$tmp/i.npy"
sum=$(md5sum <"$tmp/s.h5")
expect "search --out = --scores" "--out $tmp/s.h5 and --scores $tmp/s.h5 name the same file" \
    $AQ search --scores "$tmp/s.h5" --budget 5 --out "$tmp/s.h5"
ln -s "$tmp/s.h5" "$tmp/link.h5"
expect "search --h5 is a link to --scores" "an output may not overwrite an input" \
    $AQ search --scores "$tmp/s.h5" --budget 5 --h5 "$tmp/link.h5"
mkdir -p "$tmp/d"
expect "another spelling of --scores" "an output may not overwrite an input" \
    $AQ search --scores "$tmp/s.h5" --budget 5 --emit modelopt="$tmp/d/../s.h5"
[ "$(md5sum <"$tmp/s.h5")" = "$sum" ] && pass "the scores are untouched" || fail "the scores changed"
expect "eval --logits = --data" "an output may not overwrite an input" $AQ eval $F --data "$tmp/i.npy" --logits "$tmp/i.npy"
expect "score --json = --checkpoint" "an output may not overwrite another output" \
    $AQ score $F --data $I --method kl --json "$tmp/X" --checkpoint "$tmp/X"
expect "score --json = --out" "an output may not overwrite another output" \
    $AQ score $F --data $I --method kl --json "$tmp/X" --out "$tmp/./X"
expect "search --out = --emit" "an output may not overwrite another output" \
    $AQ search --scores "$tmp/s.h5" --budget 5 --out "$tmp/R" --emit modelopt="$tmp/R"
cp -r $F "$tmp/m"
expect "quantize --out = MODEL --force" "--out $tmp/m and MODEL $tmp/m name the same file" \
    $AQ quantize "$tmp/m" --recipe "$tmp/r.json" --out "$tmp/m" --force
expect "quantize --out = MODEL/ --force" "an output may not overwrite an input" \
    $AQ quantize "$tmp/m" --recipe "$tmp/r.json" --out "$tmp/m/" --force
cmp -s $F/model.safetensors "$tmp/m/model.safetensors" && pass "quantize --out MODEL: the model is untouched" ||
    fail "quantize --out MODEL: the model changed"
cp "$tmp/r.json" "$tmp/q/r.json"
expect "quantize --recipe inside --out --force" "holds the input --recipe" \
    $AQ quantize $F --recipe "$tmp/q/r.json" --out "$tmp/q" --force
mkdir -p "$tmp/g2" && echo text >"$tmp/g2/tokenizer.json"
expect "gen OUT_DIR holding --corpus" "OUT_DIR $tmp/g2 holds the input --corpus" $AQ gen "$tmp/g2" --corpus "$tmp/g2/tokenizer.json"
expect "gen --ids = --corpus" "an output may not overwrite an input" $AQ gen "$tmp/g" --corpus "$tmp/i.npy" --ids "$tmp/i.npy"
$AQ score $F --data $I --method kl --num-samples 1 --json - --out "$tmp/s2.h5" 2>/dev/null | python3 -c "import json,sys; json.load(sys.stdin)" &&
    pass "--json - (stdout) beside --out" || fail "--json - beside --out"
ls "$tmp"/*.tmp.* >/dev/null 2>&1 && fail "refused runs left temporaries" || pass "refused runs leave nothing"

# ---- --format: ModelOpt config names ----
$AQ score $F --data $I --method gradient --num-samples 1 --format NVFP4_DEFAULT_CFG,MXFP4_DEFAULT_CFG --json "$tmp/a.json" \
    >/dev/null 2>"$tmp/err" && $AQ score $F --data $I --method gradient --num-samples 1 --format nvfp4,mxfp4 \
    --json "$tmp/n.json" >/dev/null 2>&1 && python3 - "$tmp" <<'PY' && pass "--format NVFP4_DEFAULT_CFG,MXFP4_DEFAULT_CFG = nvfp4,mxfp4" || fail "ModelOpt names: $(cat "$tmp/err")"
import json, sys
d = sys.argv[1]
a, n = json.load(open(f"{d}/a.json")), json.load(open(f"{d}/n.json"))
assert [f["name"] for f in a["formats"]] == ["nvfp4", "mxfp4"] and a["formats"] == n["formats"]
assert [g["scores"] for g in a["groups"]] == [g["scores"] for g in n["groups"]]
PY
expect "FP8_DEFAULT_CFG is per-tensor: refused, saying so" "ModelOpt's FP8_DEFAULT_CFG has per-tensor FP8 weights" \
    $AQ score $F --data $I --method kl --format FP8_DEFAULT_CFG
$AQ score $F --data $I --method kl --format w3a3 2>"$tmp/err" >/dev/null
[ $? -eq 2 ] && grep -q "format 'w3a3' not found" "$tmp/err" && grep -q "w4a8_fp8" "$tmp/err" &&
    grep -q "NVFP4_DEFAULT_CFG (nvfp4)" "$tmp/err" && ! grep -q "aliases," "$tmp/err" &&
    pass "unknown format: lists the formats and the ModelOpt names" || fail "unknown format message: $(cat "$tmp/err")"
expect "aliases.json is not a format" "format 'aliases' not found" $AQ score $F --data $I --method kl --format aliases
python3 - <<'PY' && pass "aliases.json: each alias names a format file" || fail "aliases.json targets"
import json, os
a = json.load(open("configs/formats/aliases.json"))["modelopt"]
assert all(("format" in v) != ("differs" in v) for v in a.values())
assert all(os.path.isfile(f"configs/formats/{v['format']}.json") for v in a.values() if "format" in v)
PY

# Every option the code reads is declared in a command's table: args_str & co. return nothing for an
# undeclared name (shared parsers read options some commands lack), so a forgotten row would make an
# option silently unusable.
python3 - <<'PY' && pass "every option the code reads is declared in autoq.c's tables" || fail "options read but never declared"
import glob, re, sys
read = set()
for f in glob.glob("*/*.c") + glob.glob("*/*.cu"):
    if f.startswith("tests/") or f.startswith("bench/"):
        continue
    read |= set(re.findall(r'args_(?:str|flag|int|double|multi|refuse)\(\s*[a-z&>-]+,\s*"(--[a-z0-9-]+)"', open(f).read()))
decl = set(re.findall(r'"(--[a-z0-9-]+)",[\s\\]*OPT_', open("autoq.c").read() + open("engine/args.c").read()))
missing = sorted(read - decl)
if missing:
    print("read but not declared:", missing)
    sys.exit(1)
PY
