#!/usr/bin/env bash
# GPTQ over a generated Qwen3-8B-shaped checkpoint on one GPU, in one run: `autoq quantize --quantizer
# gptq` (every decoder linear W4A8, the sequential pipeline on the GPU) beside llm-compressor's own
# GPTQModifier (bench/llmc_gptq.py, same scheme, windows, dampening and activation order). Peak GPU
# memory of each process is sampled by nvidia-smi every 100 ms (process memory, what the card gives).
#   [PRESET=8b] [N=128] [AQ=./autoq] [PY=python3] bash bench/gptq_bench.sh OUTDIR
set -u
out=${1:-bench/out}
preset=${PRESET:-8b}
n=${N:-128}
AQ=${AQ:-./autoq}
PY=${PY:-python3}
m=${WORK:-/dev/shm/autoq-gptq}/$preset
mkdir -p "$out" "$m"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
[ -f "$m/config.json" ] || $AQ gen "$m" --preset "$preset" --seed 1 --ids "$m/ids.npy" --num-samples "$n" --seq-len 512 \
    >"$out/gen.log" 2>&1 || { tail -5 "$out/gen.log"; exit 1; }
peak() { # COMMAND...: runs it, prints the largest GPU memory in use (MiB) seen meanwhile, minus the idle reading
    local idle log
    idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
    log=$(mktemp)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$log" &
    local mon=$!
    "$@"
    local rc=$?
    kill $mon 2>/dev/null
    wait $mon 2>/dev/null
    echo "peak GPU memory $(sort -n "$log" | tail -1) MiB in use (idle $idle MiB)"
    rm -f "$log"
    return $rc
}
# every linear W4A8 (budget 4 in ModelOpt's bits), from a short gradient run
$AQ search "$m" --data "$m/ids.npy" --num-samples 4 --seq-len 512 --method gradient --device cuda --budget 4 \
    --bits modelopt --out "$out/all_w4a8.json" >"$out/search.log" 2>&1 || { tail -5 "$out/search.log"; exit 1; }
echo "== autoq quantize --quantizer gptq --device cuda, $n x 512"
t0=$(date +%s.%N)
peak $AQ quantize "$m" --recipe "$out/all_w4a8.json" --data "$m/ids.npy" --num-samples "$n" --seq-len 512 \
    --quantizer gptq --device cuda --out "$out/autoq_gptq" --force 2>"$out/autoq.log" || tail -5 "$out/autoq.log"
grep -E "gptq:" "$out/autoq.log"
echo "autoq wall $($PY -c "print(round($(date +%s.%N) - $t0, 1))") s including load and writing the checkpoint"
rm -rf "$out/autoq_gptq"
echo "== llm-compressor GPTQModifier, $n x 512"
# (its output to a log inside the measured command, so that peak's own line reaches the terminal)
peak sh -c 'timeout "$1" "$2" bench/llmc_gptq.py "$3" "$3/ids.npy" --num-samples "$4" --json "$5/llmc.json" >"$5/llmc.log" 2>&1' \
    sh "${LLMC_TIMEOUT:-420}" "$PY" "$m" "$n" "$out" ||
    { echo "llm-compressor: exit $? (timeout ${LLMC_TIMEOUT:-420} s?)"; grep -E "Error|error" "$out/llmc.log" | tail -3; }
[ -f "$out/llmc.json" ] && cat "$out/llmc.json"
