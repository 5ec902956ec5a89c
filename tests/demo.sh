#!/usr/bin/env bash
# make demo [MODEL=dir DATA=file]: the main job end to end. Without MODEL it
# generates a small seeded Qwen3 checkpoint and calibration data first.
set -euo pipefail
model=${1:-}
data=${2:-}
out=demo-out
mkdir -p "$out"
if [ -z "$model" ]; then
    model=$out/model
    ./autoq gen "$model" --preset tiny --seed 1 --ids "$out/calib.npy" --num-samples 8 --seq-len 128
    data=${data:-$out/calib.npy}
fi
[ -n "$data" ] || { echo "make demo: MODEL given without DATA" >&2; exit 2; }
set -x
./autoq info "$model"
./autoq eval "$model" --data "$data" --num-samples 4
