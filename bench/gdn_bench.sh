#!/bin/bash
# One Qwen3.5-35B-A3B Gated DeltaNet layer's core on the GPU, 8 windows of 512 tokens: autoq's plain kernels
# (before) and fast ones (after), forward and backward, beside flash-linear-attention's Triton
# chunk_gated_delta_rule on the same shapes in the same call (bench/gdn_fla.py).
#   bash bench/gdn_bench.sh [windows] [T] [samples]
# FLA_WHL: wheel paths (fla-core, einops) to install with pip --no-deps (into a temporary folder, not the
# environment) when fla does not import.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
make -s -j"${JOBS:-16}" "$BUILD/bench/gdn_bench" || exit 1
"$BUILD/bench/gdn_bench" "${1:-8}" "${2:-512}" "${3:-10}"
# fla goes into a private folder when it has to be installed: transformers switches its Qwen3-Next / Qwen3.5
# layers to fla's kernels wherever fla imports, which would change every other torch reference on this machine.
FLA_PATH=""
if ! python3 -c 'import fla.ops.gated_delta_rule' 2>/dev/null && [ -n "${FLA_WHL:-}" ]; then
    FLA_PATH=$(mktemp -d)
    trap 'rm -rf "$FLA_PATH"' EXIT
    # shellcheck disable=SC2086 # FLA_WHL: several paths
    pip install -q --no-deps --target "$FLA_PATH" $FLA_WHL >/dev/null 2>&1 || echo "gdn_bench: pip install of FLA_WHL failed"
fi
if PYTHONPATH="$FLA_PATH${PYTHONPATH:+:$PYTHONPATH}" python3 -c 'import fla.ops.gated_delta_rule' 2>/dev/null; then
    PYTHONPATH="$FLA_PATH${PYTHONPATH:+:$PYTHONPATH}" python3 bench/gdn_fla.py "${1:-8}" "${2:-512}" "${3:-10}"
else
    echo "SKIP fla: flash-linear-attention does not import (set FLA_WHL to its wheels)"
fi
