#!/usr/bin/env bash
# autoq tokenize and text --data: round trip, chat template, windows, bad input.
set -u
SUITE=tokenize
. "$(dirname "$0")/lib.sh"
# A tokenizer of our own (the demo's generator), so this runs without ../shared.
printf 'def add(a, b):\n    return a + b\n\nclass Point:\n    x = 0\n' >"$tmp/corpus.txt"
for i in 1 2 3 4 5 6; do cat README.md >>"$tmp/corpus.txt"; done
$AQ gen "$tmp/m" --preset tiny --corpus "$tmp/corpus.txt" 2>/dev/null || fail "gen with tokenizer"
TK=$tmp/m/tokenizer.json

printf 'Hello <|im_start|>world<|im_end|>\n  ünïcode 日本 👍🏽\r\n' >"$tmp/t.txt"
out=$($AQ tokenize "$TK" --text "$tmp/t.txt" --json --decode 2>/dev/null)
python3 -c "import json,sys; j=json.loads(sys.argv[1]); assert j['roundtrip'] and 510 in j['ids'] and 511 in j['ids']" "$out" &&
    pass "round trip and special tokens matched inside text" || fail "round trip: $out"
if python3 -c "import tokenizers" 2>/dev/null; then
    python3 - "$TK" "$tmp/t.txt" "$tmp/corpus.txt" "$AQ" <<'PY' && pass "generated tokenizer.json: ids identical to Hugging Face tokenizers" || fail "generated tokenizer vs HF"
import json, subprocess, sys
from tokenizers import Tokenizer
tk = Tokenizer.from_file(sys.argv[1])
for f in sys.argv[2:4]:
    got = json.loads(subprocess.run([sys.argv[4], "tokenize", sys.argv[1], "--text", f, "--json"], capture_output=True).stdout)["ids"]
    assert got == tk.encode(open(f, encoding="utf-8", newline="").read()).ids, f
PY
else
    echo "SKIP tokenize: generated tokenizer vs HF: python tokenizers not installed"
fi

# JSONL: "text" documents and "messages" (Qwen chat template), joined with EOS.
cat >"$tmp/d.jsonl" <<'J'
{"text": "first document"}

{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
J
printf '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n' >"$tmp/chat.txt"
a=$($AQ tokenize "$TK" --text "$tmp/chat.txt" --json 2>/dev/null | python3 -c "import json,sys; print(len(json.load(sys.stdin)['ids']))")
b=$($AQ tokenize "$TK" --text <(printf 'first document') --json 2>/dev/null | python3 -c "import json,sys; print(len(json.load(sys.stdin)['ids']))")
want=$((a + b + 1))
msg=$($AQ eval "$tmp/m" --data "$tmp/d.jsonl" --seq-len "$want" 2>&1 >/dev/null)
grep -q "$want tokens from 2 document(s) -> 1 windows of $want" <<<"$msg" && pass "jsonl text + messages joined with EOS" || fail "jsonl: $msg"
# Windows: consecutive from the start; --shuffle --seed is deterministic.
$AQ eval "$tmp/m" --data "$tmp/corpus.txt" --seq-len 32 --num-samples 3 --shuffle --seed 5 --json >"$tmp/e1" 2>/dev/null
$AQ eval "$tmp/m" --data "$tmp/corpus.txt" --seq-len 32 --num-samples 3 --shuffle --seed 5 --json >"$tmp/e2" 2>/dev/null
$AQ eval "$tmp/m" --data "$tmp/corpus.txt" --seq-len 32 --num-samples 3 --json >"$tmp/e3" 2>/dev/null
python3 -c "import json; a,b,c=[json.load(open('$tmp/e%d'%i))['nll'] for i in (1,2,3)]; assert a==b and a!=c" && pass "shuffle is deterministic per seed" || fail "shuffle"

# Bad input
printf 'good text \xff\xfe bad' >"$tmp/bad.txt"
expect "invalid UTF-8 names the byte offset" "invalid UTF-8 at byte offset 10" $AQ tokenize "$TK" --text "$tmp/bad.txt"
expect "invalid UTF-8 in --data" "invalid UTF-8 at byte offset 10" $AQ eval "$tmp/m" --data "$tmp/bad.txt" --seq-len 2
python3 -c "
import json; t=json.load(open('$TK')); t['model']['type']='WordPiece'; json.dump(t, open('$tmp/wp.json','w'))
t=json.load(open('$TK')); t['pre_tokenizer']={'type':'Metaspace'}; json.dump(t, open('$tmp/ms.json','w'))
t=json.load(open('$TK')); t['normalizer']={'type':'NFKC'}; json.dump(t, open('$tmp/nfkc.json','w'))"
expect "other model type" "model.type 'WordPiece' is not supported" $AQ tokenize "$tmp/wp.json" --text "$tmp/t.txt"
expect "other pre-tokenizer" "pre_tokenizer 'Metaspace' is not supported" $AQ tokenize "$tmp/ms.json" --text "$tmp/t.txt"
expect "other normalizer" "normalizer type 'NFKC' is not supported" $AQ tokenize "$tmp/nfkc.json" --text "$tmp/t.txt"
expect "text shorter than one window" "shorter than one window of --seq-len 4096" $AQ eval "$tmp/m" --data "$tmp/t.txt" --seq-len 4096
echo '{"txt": 1}' >"$tmp/bad.jsonl"
expect "jsonl line without text" "bad.jsonl:1: needs a string field 'text'" $AQ eval "$tmp/m" --data "$tmp/bad.jsonl"
expect "unsupported data type" "unsupported --data type" $AQ eval "$tmp/m" --data "$tmp/x.csv"
