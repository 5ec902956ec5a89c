#!/usr/bin/env bash
# Scores files carry their formats' definitions (issue 11); exports survive hostile names and
# failed writes leave nothing behind (issue 12). The HDF5 reader itself: tests/test_h5.c.
set -u
SUITE=outputs
. "$(dirname "$0")/lib.sh"
M=tests/fixtures/qwen3-vl-tiny
D=tests/fixtures/qwen3_vl_tiny_ids.npy
YJ="$(dirname "$AQ")/tests/test_outputs" # --yaml-json FILE: YAML as canonical JSON (libyaml)

# A custom format named like a built-in one (w4a8.json with 8-bit weights) and one of its own name.
mkdir -p "$tmp/fmt"
sed '0,/"num_bits": 4/s//"num_bits": 8/' configs/formats/w4a8.json >"$tmp/fmt/w4a8.json"
sed 's/"narrow_range": true/"narrow_range": false/g' configs/formats/w4a8.json >"$tmp/fmt/my.json"
$AQ score $M --data $D --method gradient --format "$tmp/fmt/w4a8.json,$tmp/fmt/my.json" --out "$tmp/c.h5" \
    --json "$tmp/c.json" >/dev/null 2>"$tmp/err" || fail "score with custom formats: $(cat "$tmp/err")"
rm -rf "$tmp/fmt" # search must use the stored definitions: nothing is left to reload
$AQ search --scores "$tmp/c.h5" --budget 6 --bits modelopt --out "$tmp/r.json" --emit llmcompressor="$tmp/r.yaml" \
    --emit modelopt="$tmp/q.json" >/dev/null 2>"$tmp/err" || fail "search with custom formats: $(cat "$tmp/err")"
"$YJ" --yaml-json "$tmp/r.yaml" >"$tmp/r.yaml.json" || fail "custom-format YAML does not parse"
python3 - "$tmp" <<'PY' && pass "custom formats: recipe, YAML, ModelOpt and bits use the stored definitions" || fail "custom formats"
import json, sys
d = sys.argv[1]
s, r, y, q = (json.load(open(f"{d}/{n}")) for n in ("c.json", "r.json", "r.yaml.json", "q.json"))
wbits = {f["name"]: f["definition"]["quant_cfg"]["*weight_quantizer"]["num_bits"] for f in r["formats"]}
assert wbits == {"w4a8": 8, "my": 4}, wbits
assert [f["bits"] for f in s["formats"]] == [8, 4] and s["format"] == "w4a8"
assert r["formats"][1]["definition"]["quant_cfg"]["*weight_quantizer"]["narrow_range"] is False
used = {g["choice"] for g in r["groups"]} - {"bf16"}
cg = y["quant_stage"]["quant_modifiers"]["GPTQModifier"]["config_groups"]
assert sorted(int(g["weights"]["num_bits"]) for g in cg.values()) == sorted(wbits[c] for c in used), (cg, used)
mo = {int(v["num_bits"]) for k, v in q["quant_cfg"].items() if k.endswith("weight_quantizer") and v.get("enable")}
assert mo == {wbits[c] for c in used}, mo
bits = {f["name"]: f["bits"] for f in r["formats"]}
cost = sum(g["params"] * (16 if g["choice"] == "bf16" else bits[g["choice"]]) for g in r["groups"] if not g["disabled"])
total = sum(g["params"] for g in r["groups"] if not g["disabled"])
assert abs(cost / total - r["effective_bits"]["candidates"]) < 1e-9 and r["effective_bits"]["candidates"] <= 6
PY
$AQ eval $M --data $D --recipe "$tmp/r.json" --json >/dev/null 2>"$tmp/err" &&
    pass "eval --recipe uses the recipe's stored definitions" || fail "eval --recipe: $(cat "$tmp/err")"

# Hostile --disabled-layers patterns and a hostile model folder name: the YAML parses, nothing is
# injected, every pattern round-trips and its regex selects what fnmatch selects.
pats=$'*lm_head*,*visual*,*it\'s*,*layers.[1].mlp*,*\\*,*new\nline*,*]x[*,*"q"*,*# c: [1]*'
evil="$tmp/evil'm: [x]"$'\n- injected: 1'
ln -s "$PWD/$M" "$evil"
$AQ score "$evil" --data $D --method kl --disabled-layers "$pats" --out "$tmp/n.h5" >/dev/null 2>"$tmp/err" ||
    fail "score with hostile names: $(cat "$tmp/err")"
$AQ search --scores "$tmp/n.h5" --budget 5 --out "$tmp/n.json" --emit llmcompressor="$tmp/n.yaml" \
    --emit modelopt="$tmp/nq.json" >/dev/null 2>"$tmp/err" || fail "search with hostile names: $(cat "$tmp/err")"
"$YJ" --yaml-json "$tmp/n.yaml" >"$tmp/n.yaml.json" && pass "YAML with hostile names parses (libyaml)" ||
    fail "YAML with hostile names does not parse"
PATS="$pats" python3 - "$tmp" <<'PY' && pass "hostile patterns round-trip and select what fnmatch selects" || fail "hostile patterns"
import fnmatch, json, os, re, sys
d = sys.argv[1]
pats = os.environ["PATS"].split(",")
y = json.load(open(f"{d}/n.yaml.json"))
assert list(y) == ["quant_stage"], list(y)
try:
    import yaml  # PyYAML where available: the parser llm-compressor uses
    assert yaml.safe_load(open(f"{d}/n.yaml")) is not None
except ImportError:
    pass
ign = y["quant_stage"]["quant_modifiers"]["GPTQModifier"]["ignore"]
assert ign[0] == "lm_head"
res = [p[3:] for p in ign[1:1 + len(pats)]]
names = ["lm_head", "model.visual.x", "it's", "xay", "a\\", "new\nline", "a]x[b", 'a"q"b', "x# c: [1]y", "model.layers.0.mlp.up_proj", "b", "[ab]"]
for p, r in zip(pats, res):
    for n in names:
        assert bool(re.match(r, n)) == fnmatch.fnmatchcase(n, p), (p, r, n)
q = json.load(open(f"{d}/nq.json"))["quant_cfg"]
assert all(q[p] == {"enable": False} for p in pats), list(q)
assert json.load(open(f"{d}/n.json"))["disabled_layers"] == os.environ["PATS"]
PY
head -1 "$tmp/n.yaml" | grep -q "^# autoq recipe for .*evil'm: \[x\]?- injected: 1: kl" && [ "$(grep -c '^#' "$tmp/n.yaml")" = 1 ] &&
    pass "a newline in the model folder stays inside the one comment line" || fail "comment line: $(head -2 "$tmp/n.yaml")"
expect "invalid UTF-8 pattern named, not dropped" "not valid UTF-8" \
    $AQ search $M --data $D --method kl --budget 5 --disabled-layers $'*\xff*' --out "$tmp/u.json"

# A failed HDF5 write exits cleanly and leaves no temporary file: a 2 KiB file-size limit makes it fail.
(
    ulimit -f 2
    trap '' XFSZ
    $AQ search --scores "$tmp/c.h5" --budget 6 --h5 "$tmp/big.h5" >/dev/null 2>"$tmp/err"
)
rc=$?
left=$(ls "$tmp"/big.h5* 2>/dev/null)
[ "$rc" -eq 1 ] && [ -z "$left" ] && grep -q "big.h5" "$tmp/err" && pass "failed HDF5 write: exit 1, nothing left behind" ||
    fail "failed HDF5 write: exit $rc, left '$left': $(cat "$tmp/err")"
expect "scores file is a directory" "not a regular file" $AQ search --scores "$tmp" --budget 6
