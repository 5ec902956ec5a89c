#!/usr/bin/env bash
# Scores under round-to-nearest against scores under GPTQ (bench/README.md, "RTN or GPTQ scores"):
# per method the rank correlation of the two, and at budgets 4.5 / 4.8 / 6.0 the measured KL of the
# GPTQ-deployed model (sequential GPTQ, as llm-compressor ships it) for the recipe each picked.
# usage: bench/gptq_rtn.sh [MODEL] [DATA] [OUT_DIR]   (defaults: qwen3-tiny, calib.txt 8 x 256, /tmp/autoq-gptq)
set -eu
M=${1:-../shared/models/qwen3-tiny}
D=${2:-../shared/data/calib.txt}
OUT=${3:-/tmp/autoq-gptq}
AQ=${AQ:-./autoq}
W="--num-samples 8 --seq-len 256"
mkdir -p "$OUT"
for method in kl gradient; do
    for q in rtn gptq; do
        /usr/bin/time -f "$method $q: %e s" $AQ score $M --data $D $W --method $method --quantizer $q --device cpu \
            --out "$OUT/$method-$q.h5" --json "$OUT/$method-$q.json" >/dev/null 2>"$OUT/$method-$q.log"
        tail -1 "$OUT/$method-$q.log"
    done
    python3 - "$OUT" $method <<'PY'
import json, sys
sys.path.insert(0, "bench")
from rank_stats import spearman
out, method = sys.argv[1:]
s = {q: {g["name"]: g["score"] for g in json.load(open(f"{out}/{method}-{q}.json"))["groups"] if not g["disabled"]}
     for q in ("rtn", "gptq")}
names = sorted(s["rtn"])
a, b = [s["rtn"][n] for n in names], [s["gptq"][n] for n in names]
print(f"{method}: Spearman(rtn, gptq) = {spearman(a, b):.3f} over {len(names)} groups; "
      f"sum gptq / sum rtn = {sum(b) / sum(a):.3f}")
PY
    for b in 4.5 4.8 6.0; do
        for q in rtn gptq; do
            $AQ search --scores "$OUT/$method-$q.h5" --budget $b --verify --data $D $W --quantizer gptq \
                --out "$OUT/$method-$q-$b.json" 2>/dev/null | tail -1 |
                sed "s/^/$method scores from $q, deployed with gptq: /"
        done
    done
done
