#!/usr/bin/env bash
# autoq gen --corpus: the BPE trainer on a 2 MB text within a time limit, and a corpus that is not
# UTF-8 refused before any weights are written (the merges themselves: build/tests/test_bpe).
set -u
SUITE=bpe
. "$(dirname "$0")/lib.sh"
# 2 MB of text: README.md repeated (the trainer it replaced took minutes on this, 30 on a real 2 MB text).
while [ "$(stat -c %s "$tmp/c.txt" 2>/dev/null || echo 0)" -lt 2000000 ]; do cat README.md >>"$tmp/c.txt"; done
t0=$(date +%s)
timeout 120 $AQ gen "$tmp/m" --preset tiny --corpus "$tmp/c.txt" 2>"$tmp/err"
rc=$? el=$(($(date +%s) - t0))
[ $rc -eq 0 ] && python3 -c "import json,sys; assert len(json.load(open(sys.argv[1]))['model']['merges']) == 253" "$tmp/m/tokenizer.json" &&
    pass "gen --corpus: 2 MB trained in ${el}s (limit 120s), 253 merges" || fail "gen --corpus 2 MB: exit $rc after ${el}s: $(tail -2 "$tmp/err")"
printf 'fine text, then \xff\xfe a bad byte\n' >"$tmp/bad.txt"
expect "gen --corpus not UTF-8" "$tmp/bad.txt: not UTF-8 text (an invalid sequence at byte 16)" $AQ gen "$tmp/b" --preset tiny --corpus "$tmp/bad.txt"
[ ! -e "$tmp/b/model.safetensors" ] && pass "gen: a refused corpus leaves no weights" || fail "gen wrote weights before refusing the corpus"
