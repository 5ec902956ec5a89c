#!/usr/bin/env bash
# Tokenization throughput on calib.txt, one core, autoq beside Hugging Face
# tokenizers in the same run (pip install tokenizers). Best of 5 each.
set -eu
AQ=${AQ:-./autoq}
text=${1:-../shared/data/calib.txt}
for tk in ../shared/data/qwen3-tokenizer/tokenizer.json ../shared/models/qwen3-tiny/tokenizer.json; do
    [ -f "$tk" ] || continue
    best=999
    for i in 1 2 3 4 5; do
        s=$(taskset -c 0 "$AQ" tokenize "$tk" --text "$text" 2>&1 >/dev/null | sed -n 's/.* in \([0-9.]*\)s.*/\1/p')
        best=$(python3 -c "print(min($best, $s))")
    done
    bytes=$(stat -c %s "$text")
    echo "autoq      $(basename "$(dirname "$tk")"): $(python3 -c "print(f'{$bytes/$best/1e6:.2f} MB/s ({$best:.3f} s)')")"
    if python3 -c "import tokenizers" 2>/dev/null; then
        RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false taskset -c 0 python3 - "$tk" "$text" <<'PY'
import sys, time
from tokenizers import Tokenizer
import tokenizers
tk = Tokenizer.from_file(sys.argv[1])
text = open(sys.argv[2], encoding="utf-8").read()
n = len(text.encode("utf-8"))
best = min((lambda t0: (tk.encode(text), time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(5))
print(f"hf {tokenizers.__version__:7s} {sys.argv[1].split('/')[-2]}: {n / best / 1e6:.2f} MB/s ({best:.3f} s)")
PY
    fi
done
