#!/usr/bin/env bash
# Per-window scores on the GPU back ends (README §6, §8): one GPU in batches of 2 windows, and with 2 GPUs
# data parallel and layer-sharded, for kl and gradient, dense (an int8 format and an emulated one) and MoE.
# Each run's per-window scores sum to its totals, and equal the CPU's per window within the GPU tolerance
# (2% on every entry at least 1% of its format's largest, --gpu-gemm bf16x2); search --bootstrap reads them.
set -u
SUITE=gpu_windows
. "$(dirname "$0")/lib.sh"
V=tests/fixtures/qwen3-vl-tiny
VD=tests/fixtures/qwen3_vl_tiny_ids.npy
E=tests/fixtures/qwen3-moe-tiny
ED=tests/fixtures/qwen3_moe_tiny_ids.npy
if ! $AQ score $V --data $VD --num-samples 1 --method kl --device cuda --json "$tmp/probe.json" >/dev/null 2>&1; then
    echo "SKIP gpu_windows: GPU per-window scores: no CUDA device"
    exit 0
fi
ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
compare() { # NAME CPU.h5 GPU.h5
    python3 - "$2" "$3" <<'PY' && pass "$1: per-window scores sum to the totals and equal the CPU's" || fail "$1"
import sys
import h5py, numpy as np
with h5py.File(sys.argv[1]) as c, h5py.File(sys.argv[2]) as g:
    wc, wg, sg = c["groups/window_scores"][:], g["groups/window_scores"][:], g["groups/score"][:]
    assert wg.shape == wc.shape, (wg.shape, wc.shape)
    assert np.allclose(wg.sum(axis=-1), sg, rtol=1e-9, atol=0), "windows do not sum to the totals"
    wc = wc.reshape(wc.shape[0], -1, wc.shape[-1]); wg = wg.reshape(wc.shape)
    for f in range(wc.shape[1]):
        big = wc[:, f, :] >= 0.01 * wc[:, f, :].max()
        rel = np.abs(wg[:, f, :] - wc[:, f, :])[big] / wc[:, f, :][big]
        assert rel.max() <= 0.02, f"format {f}: worst relative difference {rel.max():.3g}"
        print(f"  format {f}: {big.sum()} window scores compared, worst relative difference {rel.max():.2e}")
PY
}
for method in kl gradient; do
    S="--seq-len 64 --method $method --gpu-gemm bf16x2"
    $AQ score $V --data $VD $S --format w4a8,nvfp4 --device cpu --out "$tmp/v_cpu_$method.h5" >/dev/null 2>&1
    $AQ score $V --data $VD $S --format w4a8,nvfp4 --device cuda --batch-size 2 --out "$tmp/v_gpu_$method.h5" \
        >/dev/null 2>"$tmp/err" || fail "dense $method on the GPU: $(tail -2 "$tmp/err")"
    compare "dense $method, one GPU, batches of 2" "$tmp/v_cpu_$method.h5" "$tmp/v_gpu_$method.h5"
    $AQ score $E --data $ED $S --format w4a8 --device cpu --out "$tmp/e_cpu_$method.h5" >/dev/null 2>&1
    $AQ score $E --data $ED $S --format w4a8 --device cuda --batch-size 2 --out "$tmp/e_gpu_$method.h5" \
        >/dev/null 2>"$tmp/err" || fail "MoE $method on the GPU: $(tail -2 "$tmp/err")"
    compare "MoE $method, one GPU, batches of 2" "$tmp/e_cpu_$method.h5" "$tmp/e_gpu_$method.h5"
    if [ "$ngpu" -ge 2 ]; then
        for how in "--gpus 2" "--gpus 2 --shard-layers"; do
            $AQ score $V --data $VD $S --format w4a8,nvfp4 --device cuda --batch-size 1 $how --out "$tmp/v2.h5" \
                >/dev/null 2>"$tmp/err" || fail "dense $method $how: $(tail -2 "$tmp/err")"
            compare "dense $method $how" "$tmp/v_cpu_$method.h5" "$tmp/v2.h5"
        done
    else
        echo "SKIP gpu_windows: $method with --gpus 2 and --shard-layers: one GPU"
    fi
done
$AQ search --scores "$tmp/v_gpu_kl.h5" --budget 5 --bootstrap 20 >"$tmp/out" 2>&1 &&
    grep -q "bootstrap: 20 resamples" "$tmp/out" && pass "search --bootstrap on GPU scores" ||
    fail "bootstrap on GPU scores: $(tail -3 "$tmp/out")"
