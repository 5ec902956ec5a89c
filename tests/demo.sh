#!/usr/bin/env bash
# make demo [MODEL=dir DATA=file]: the main job end to end. Without MODEL it
# generates a small seeded Qwen3 checkpoint, a byte-level BPE tokenizer and
# calibration text (this repository's own README and C sources) first.
set -euo pipefail
model=${1:-}
data=${2:-}
out=demo-out
mkdir -p "$out"
if [ -z "$model" ]; then
    model=$out/model
    cat README.md engine/*.c kernels/*.c scoring/*.c search/*.c >"$out/calib.txt"
    ./autoq gen "$model" --preset tiny --seed 1 --corpus "$out/calib.txt"
    data=${data:-$out/calib.txt}
fi
[ -n "$data" ] || { echo "make demo: MODEL given without DATA" >&2; exit 2; }
set -x
./autoq info "$model"
./autoq eval "$model" --data "$data" --num-samples 8 --seq-len 128
./autoq score "$model" --data "$data" --num-samples 8 --seq-len 128 --method kl --out "$out/kl.h5" --json "$out/kl.json"
./autoq score "$model" --data "$data" --num-samples 8 --seq-len 128 --method gradient --out "$out/gradient.h5"
./autoq search --scores "$out/kl.h5" --budget 4.8 --sweep 4.5:8:0.5 --verify --data "$data" --num-samples 8 --seq-len 128 \
    --out "$out/recipe.json" --h5 "$out/search.h5" \
    --emit llmcompressor="$out/recipe.yaml" --emit modelopt="$out/quant_cfg.json"
{ set +x; } 2>/dev/null
if python3 -c "import h5py, matplotlib" 2>/dev/null; then
    python3 bench/plot.py "$out/search.h5" "$out/demo"
else # the plots are optional: say why there are none and how to get them
    echo "make demo: no plots ($out/demo-*.png): python3 lacks h5py or matplotlib; install them with:" >&2
    echo "    python3 -m pip install h5py matplotlib" >&2
fi
echo "demo outputs in $out/: recipe.json recipe.yaml quant_cfg.json kl.json kl.h5 gradient.h5 search.h5"
