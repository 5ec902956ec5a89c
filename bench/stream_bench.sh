#!/usr/bin/env bash
# Streamed layers against resident ones on one GPU (README "Streaming"), in one call:
#   the Qwen3-8B shape under --gpu-memory 4GiB and the Qwen3-30B-A3B shape under 16GiB (checkpoints written
#   by `autoq gen` into WORK), kl over KL_N windows and gradient over N windows of T tokens, each beside the
#   resident run of the same engine batch; per run the time, peak GPU memory, bytes copied host->GPU and
#   the copy time not hidden behind compute, and the streamed scores against the resident ones (largest
#   relative difference). Also the host->GPU bandwidth (PyTorch: pinned, and pageable) and, from the
#   resident runs, the compute per layer: what README "Streaming" computes the Qwen3-235B-A22B time from.
#   AQ=path/to/autoq bash bench/stream_bench.sh OUTDIR
# Environment: SHAPES ("8b:4GiB 30b-a3b:16GiB": preset:cap), LAYERS (the presets' depth), N (128), KL_N (16),
# T (512), B (4: --batch-size of both runs; a streamed run may halve it, and then the resident run of the
# comparison uses the same), WORK (/dev/shm/autoq-stream), PY (python3), PIN_COMPARE (1: each streamed
# run again with AUTOQ_STREAM_PIN=0, the copies through staging buffers instead of the page-locked mapping),
# LAYER_MAJOR (1: kl also in the layer-major order with every layer resident, AUTOQ_STREAM=1).
set -u
out=${1:?usage: AQ=path/to/autoq bash bench/stream_bench.sh OUTDIR}
AQ=${AQ:?set AQ to the autoq binary}
PY=${PY:-python3}
shapes=${SHAPES:-8b:4GiB 30b-a3b:16GiB}
n=${N:-128}
kl_n=${KL_N:-16}
T=${T:-512}
B=${B:-4}
work=${WORK:-/dev/shm/autoq-stream}
mkdir -p "$out" "$work" || exit 2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1

# host->GPU bandwidth: 1 GiB from pinned memory and from pageable memory
$PY - <<'PY' 2>&1 | tee "$out/bandwidth.txt"
import time, torch
n = 1 << 30
d = torch.empty(n, dtype=torch.uint8, device="cuda")
for name, h in (("pinned", torch.empty(n, dtype=torch.uint8).pin_memory()), ("pageable", torch.ones(n, dtype=torch.uint8))):
    d.copy_(h); torch.cuda.synchronize()
    t = time.time()
    for _ in range(3): d.copy_(h, non_blocking=True)
    torch.cuda.synchronize()
    print(f"bandwidth {name}: {3 * n / (time.time() - t) / 1e9:.1f} GB/s host->GPU")
PY

# run NAME ARGS...: one score run; its log, JSON and wall time under $out
run() {
    local name=$1
    shift
    local t0=$(date +%s.%N)
    "$AQ" score "$@" --json "$out/$name.json" >/dev/null 2>"$out/$name.log"
    local rc=$?
    awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f\n", b - a }' >"$out/$name.wall"
    [ $rc -eq 0 ] || echo "# $name failed (exit $rc): $(tail -2 "$out/$name.log")"
    return $rc
}

summary() { # NAME: time, peak, bytes moved, unhidden
    local f=$out/$1.log
    local s p h
    s=$(sed -n 's/.* tokens in \([0-9.]*\)s .*/\1/p' "$f" | tail -1)
    p=$(sed -n 's/.*peak GPU memory \([0-9.]*\) GiB.*/\1/p' "$f" | tail -1)
    h=$(sed -n 's/.*streamed layers: \(.*\)/\1/p' "$f" | tail -1)
    printf '%-28s %8ss (wall %6ss)  peak %6s GiB  %s\n' "$1" "${s:-?}" "$(cat "$out/$1.wall" 2>/dev/null)" "${p:-?}" \
        "${h:-resident}"
    grep -h "streaming layers\|engine batches of\|page-lock" "$f" | sed 's/^/    /'
}

compare() { # A B: the largest relative difference of A's scores from B's
    $PY - "$out/$1.json" "$out/$2.json" <<'PY'
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
s = [(x["score"], y["score"]) for x, y in zip(a["groups"], b["groups"]) if x["score"] is not None]
w = max(abs(x - y) / max(abs(y), 1e-300) for x, y in s)
print(f"    scores vs resident: largest relative difference {w:.3g} over {len(s)} groups"
      + (" (bit-identical)" if w == 0 else ""))
PY
}

for sc in $shapes; do
    preset=${sc%%:*}
    cap=${sc#*:}
    m=$work/$preset${LAYERS:+-$LAYERS}
    if [ ! -f "$m/config.json" ]; then
        echo "# gen --preset $preset${LAYERS:+ --layers $LAYERS} into $m"
        "$AQ" gen "$m" --preset "$preset" ${LAYERS:+--layers $LAYERS} --ids "$m.npy" --num-samples "$n" \
            --seq-len "$T" --quiet --force || { echo "# gen $preset failed"; continue; }
    fi
    for method in kl gradient; do
        k=$([ $method = kl ] && echo "$kl_n" || echo "$n")
        a=("$m" --data "$m.npy" --num-samples "$k" --method $method --device cuda)
        base=${preset}_${method}
        run "${base}_stream" "${a[@]}" --batch-size "$B" --gpu-memory "$cap"
        # the resident run at the engine batch the streamed one used
        b=$(sed -n 's/.*engine batches of \([0-9]*\) windows.*/\1/p' "$out/${base}_stream.log" | head -1)
        run "${base}_resident" "${a[@]}" --batch-size "${b:-$B}"
        summary "${base}_resident"
        summary "${base}_stream"
        [ -f "$out/${base}_stream.json" ] && [ -f "$out/${base}_resident.json" ] &&
            compare "${base}_stream" "${base}_resident"
        if [ -n "$b" ] && [ "$b" != "$B" ]; then # the resident run at --batch-size too: the fastest resident
            run "${base}_resident_b$B" "${a[@]}" --batch-size "$B"
            summary "${base}_resident_b$B"
        fi
        # compute per layer (resident): the run's time over its layers
        L=$($PY -c "import json; print(json.load(open('$m/config.json'))['num_hidden_layers'])")
        s=$(sed -n 's/.* tokens in \([0-9.]*\)s .*/\1/p' "$out/${base}_resident.log" | tail -1)
        [ -n "$s" ] && awk -v s="$s" -v L="$L" -v k="$k" \
            'BEGIN { printf "    resident compute per layer: %.4f s (%d layers, %d windows)\n", s / L, L, k }'
        if [ $method = kl ] && [ "${LAYER_MAJOR:-0}" = 1 ]; then # resident layers in the layer-major order
            AUTOQ_STREAM=1 run "${base}_resident_layer_major" "${a[@]}" --batch-size "${b:-$B}"
            summary "${base}_resident_layer_major"
            compare "${base}_resident_layer_major" "${base}_resident"
        fi
        if [ "${PIN_COMPARE:-0}" = 1 ]; then # the same streamed run through the staging buffers
            AUTOQ_STREAM_PIN=0 run "${base}_stream_staged" "${a[@]}" --batch-size "$B" --gpu-memory "$cap"
            summary "${base}_stream_staged"
        fi
    done
done
