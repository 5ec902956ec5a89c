#!/bin/bash
# klmerge: kl merged across groups (AUTOQ_KL_MERGE=1, scoring/score_merge.cu). Builds autoq and test_gpu, runs
# the merged-vs-today checks of test_gpu (every fixture family, AUTOQ_GPU_TEST_MERGE=1), then times kl over 16
# windows of 512 tokens with and without AUTOQ_KL_MERGE=1 on the 30b-a3b preset (12 layers) and the
# qwen3.5-35b-a3b preset (8 layers): seconds, peak GPU memory, and the worst relative difference of the scores.
# Every step has a timeout; the whole stays within BUDGET seconds (steps that would not fit are skipped).
cd "$(dirname "$0")"
OUT=${OUT:-/tmp/klmerge-out}
mkdir -p "$OUT"
BUDGET=${BUDGET:-235}
T0=$(date +%s)
S="$OUT/summary.txt"
el() { echo $(($(date +%s) - T0)); }
say() { echo "[$(el)s] $*" | tee -a "$S"; }
# step NAME TIMEOUT CMD...: the command's output in $OUT/NAME.log, its status and seconds in the summary
step() {
    local name=$1 to=$2
    shift 2
    local left=$((BUDGET - $(el)))
    if [ "$left" -lt "${NEED:-8}" ]; then
        say "SKIP $name: out of time"
        return 99
    fi
    [ "$to" -gt "$left" ] && to=$left
    local a=$(date +%s.%N)
    timeout "$to" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    say "$name rc=$rc $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $a}") s"
    return $rc
}
say "start on $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null)"
step build 170 make -s -j16 autoq build/tests/test_gpu build/tests/test_merge_plan || {
    tail -30 "$OUT/build.log"
    exit 1
}
# the checkpoints (about 16 and 14 GB), generated on the CPU while the GPU tests run; in /dev/shm unless it
# has too little room
M=/dev/shm
[ "$(df -P -B1G "$M" 2>/dev/null | awk 'NR==2{print $4}')" -ge 36 ] 2>/dev/null || M=/tmp/klmerge-models
mkdir -p "$M"
say "models in $M"
rm -rf "$M/m30" "$M/m35"
(timeout 120 ./autoq gen $M/m30 --preset 30b-a3b --layers 12 --ids $M/ids.npy --num-samples 16 \
    --seq-len 512 --quiet >"$OUT/gen30.log" 2>&1
    echo "gen30 rc=$? at $(el)s" >>"$OUT/gen30.log") &
G30=$!
(timeout 120 ./autoq gen $M/m35 --preset qwen3.5-35b-a3b --layers 8 --ids $M/ids35.npy \
    --num-samples 16 --seq-len 512 --quiet >"$OUT/gen35.log" 2>&1
    echo "gen35 rc=$? at $(el)s" >>"$OUT/gen35.log") &
G35=$!
step test_merge_plan 20 build/tests/test_merge_plan
AUTOQ_GPU_TEST_MERGE=1 step test_gpu_merge 75 build/tests/test_gpu
say "test_gpu (merged part): $(grep -c ^PASS "$OUT/test_gpu_merge.log") PASS, $(grep -c ^FAIL "$OUT/test_gpu_merge.log") FAIL, $(grep -c ^SKIP "$OUT/test_gpu_merge.log") SKIP"
grep -E "^(FAIL|SKIP)|worst relative" "$OUT/test_gpu_merge.log" | cut -c1-240 | tee -a "$S"
wait $G30
cat "$OUT/gen30.log" | tail -2 | tee -a "$S"
# score NAME MODEL IDS [env...]: kl over 16 windows, its JSON in $OUT
score() {
    local name=$1 model=$2 ids=$3
    shift 3
    NEED=30 step "$name" 75 env "$@" ./autoq score "$model" --data "$ids" --num-samples 16 --method kl --json "$OUT/$name.json"
    grep -E "tokens/s|peak GPU memory|kl merged|GEMM inputs|TFLOP/s" "$OUT/$name.log" | sed "s/^/  $name: /" |
        cut -c1-260 | tee -a "$S"
}
compare() { # worst relative difference on groups >= 1% of the largest, and on all
    python3 - "$OUT/$1.json" "$OUT/$2.json" <<'PY' 2>&1 | tee -a "$S"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
sa = [g.get("score") for g in a["groups"]]
sb = [g.get("score") for g in b["groups"]]
pairs = [(x, y) for x, y in zip(sa, sb) if x is not None and y is not None]
top = max(abs(x) for x, _ in pairs)
rel = lambda x, y: abs(x - y) / max(abs(x), abs(y), 1e-300)
big = max((rel(x, y) for x, y in pairs if abs(x) >= 0.01 * top), default=0)
every = max((rel(x, y) for x, y in pairs), default=0)
print(f"  {sys.argv[2].split('/')[-1]} vs {sys.argv[1].split('/')[-1]}: worst relative difference {big:.3g} on groups "
      f">= 1% of the largest, {every:.3g} on all {len(pairs)}")
PY
}
if [ -f $M/m30/config.json ]; then
    score m30_today $M/m30 $M/ids.npy AUTOQ_KL_MERGE=0
    score m30_merged $M/m30 $M/ids.npy AUTOQ_KL_MERGE=1
    compare m30_today m30_merged
fi
wait $G35
cat "$OUT/gen35.log" | tail -2 | tee -a "$S"
rm -rf "$M/m30" # its memory back before the next model's upload
if [ -f $M/m35/config.json ]; then
    score m35_today $M/m35 $M/ids35.npy AUTOQ_KL_MERGE=0
    score m35_merged $M/m35 $M/ids35.npy AUTOQ_KL_MERGE=1
    compare m35_today m35_merged
    # the merged batch's size: 16 windows instead of 64 (time permitting)
    score m35_merged16 $M/m35 $M/ids35.npy AUTOQ_KL_MERGE=1 AUTOQ_KL_MERGE_BATCH=16
    compare m35_today m35_merged16
fi
rm -rf $M/m35 $M/ids.npy $M/ids35.npy
say "done"
