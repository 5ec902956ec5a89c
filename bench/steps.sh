# Sourced by the benches that run timed steps within one time budget (bench/moe_bench.sh,
# bench/hybrid_bench.sh). Needs: budget (seconds), t_start (date +%s at the start), out (OUTDIR), PY, AQ,
# dev (cuda or cpu).
left() { echo $((budget - ($(date +%s) - t_start))); }
# step NAME CAP CMD...: CMD under a time-out of CAP seconds or what is left of the budget, less 15 s
# for the report; stdout (dropped when QUIET_STDOUT=1) and stderr to OUTDIR/NAME.log, wall seconds to
# OUTDIR/NAME.wall. CMD runs directly under timeout, so a time-out ends CMD itself.
step() {
    local name=$1 cap=$2 t
    shift 2
    t=$(($(left) - 15))
    [ "$t" -gt "$cap" ] && t=$cap
    if [ "$t" -lt 10 ]; then
        echo "   $name: skipped, the time budget is spent"
        return 1
    fi
    local t0 rc
    t0=$(date +%s.%N)
    if [ "${QUIET_STDOUT:-0}" = 1 ]; then
        timeout -k 5 "$t" "$@" 2>"$out/$name.log" >/dev/null
    else
        timeout -k 5 "$t" "$@" >"$out/$name.log" 2>&1
    fi
    rc=$?
    $PY -c "print(round($(date +%s.%N) - $t0, 1))" >"$out/$name.wall"
    if [ $rc -ne 0 ]; then
        echo "   $name: exit $rc$([ $rc -eq 124 ] && echo " (time-out after ${t}s)"); last lines of $out/$name.log:"
        tail -3 "$out/$name.log" | cut -c1-300 | sed 's/^/      /'
    else
        echo "   $name: $(cat "$out/$name.wall") s"
    fi
    return $rc
}
# autoq scores to OUTDIR/NAME.json; its table (stdout) is dropped, its stderr kept in NAME.log
aq_score() { # NAME CAP MODEL IDS METHOD ARGS...
    local name=$1 cap=$2 m=$3 ids=$4 method=$5
    shift 5
    QUIET_STDOUT=1 step "$name" "$cap" "$AQ" score "$m" --data "$ids" --method "$method" --device "$dev" \
        --json "$out/$name.json" "$@"
}


# The set-up and the accuracy part that the mixture-of-experts shape benches share (bench/moe_bench.sh,
# bench/hybrid_bench.sh). Also needs: preset, acc_n, bench (this folder).
# bench_begin FULL_PRESET NAME GIB [FILE...]: removes the bench's result files from OUTDIR (the common ones and
# FILE..., so that a step that fails leaves no stale result for the report); the work folder into work (WORK,
# else /dev/shm/autoq-NAME when it has room for GIB GiB or the preset is not the full-size one, else
# /tmp/autoq-NAME); the largest PyTorch gradient batch tried into pt_batch (PT_BATCH, else 4; 8 on cards over
# 100 GB); prints the GPU and the set-up.
bench_begin() {
    local full=$1 name=$2 gib=$3 f free_gib gpu_gib
    shift 3
    for f in acc_gen gen torch acc_torch gradient_autoq kl_autoq gradient_torch kl_torch acc_gradient_torch \
        acc_kl_torch acc_{gradient,kl}_autoq_{bf16,bf16x2} "$@"; do
        rm -f "$out/$f.json" "$out/$f.log" "$out/$f.wall"
    done
    if [ -z "${WORK:-}" ]; then
        free_gib=$(df -k --output=avail /dev/shm 2>/dev/null | tail -1)
        free_gib=$((${free_gib:-0} / 1048576))
        if [ "$free_gib" -ge "$gib" ] || [ "$preset" != "$full" ]; then WORK=/dev/shm/autoq-$name; else WORK=/tmp/autoq-$name; fi
    fi
    work=$WORK
    mkdir -p "$work" || exit 2
    if [ "$dev" = cuda ]; then
        gpu_gib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1
        pt_batch=${PT_BATCH:-$([ "${gpu_gib:-0}" -gt 100000 ] && echo 8 || echo 4)}
    else
        pt_batch=${PT_BATCH:-4}
    fi
    echo "== work folder $work ($(df -h --output=avail "$work" | tail -1 | tr -d ' ') free), budget ${budget}s," \
        "$(nproc) cores, python $($PY -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' 2>&1 | tail -1)"
}

# bench_accuracy TORCH_SCRIPT: a 4-layer model of the preset's shape, autoq on the GPU (both --gpu-gemm modes)
# against float32 PyTorch (bench/TORCH_SCRIPT, TF32 off); ACCURACY=0 skips it.
bench_accuracy() {
    local acc=$work/acc4 method g
    [ "${ACCURACY:-1}" != 0 ] || return 0
    echo "== accuracy: $preset shape, 4 layers, $acc_n x 512 tokens, autoq against PyTorch float32"
    step acc_gen 120 "$AQ" gen "$acc" --preset "$preset" --layers 4 --seed 1 --ids "$work/acc_ids.npy" \
        --num-samples "$acc_n" --seq-len 512
    for method in gradient kl; do
        for g in bf16 bf16x2; do
            aq_score "acc_${method}_autoq_$g" 90 "$acc" "$work/acc_ids.npy" $method --gpu-gemm $g
        done
    done
    step acc_torch 180 "$PY" "$bench/$1" "$acc" "$work/acc_ids.npy" --method gradient,kl \
        --dtype float32 --device "$dev" --batch-size 4 --kl-batch-size 4 --out "$out/acc_{method}_torch.json"
    grep -h "^(b)" "$out/acc_torch.log" | cut -c1-300 | sed 's/^/   /'
    rm -rf "$acc" "$work/acc_ids.npy"
}
