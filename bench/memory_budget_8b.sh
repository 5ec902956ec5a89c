#!/usr/bin/env bash
# The best recipe of the Qwen3-8B shape for 12, 16 and 24 GiB at 8k and 32k context, batch 8 (README, "KV cache
# and memory budgets"): gen --preset 8b (random bf16 weights and token ids: the byte arithmetic and the solver
# are real, the sensitivities are a random model's), gradient scores of w4a8, fp8 and kv_fp8 (the KV-cache
# formats score on the CPU engine: 16 cores, about 90 GiB of memory), one search per point with one KV-cache
# format for every layer (--kv-uniform, as vLLM serves it). Prints a Markdown table for the README.
#   AQ=build/autoq bash bench/memory_budget_8b.sh [OUT_DIR]     (NUM_SAMPLES, SEQ_LEN, FORMATS, PRESET to change them)
set -eu
AQ=${AQ:-build/autoq}
OUT=${1:-${OUT:-/tmp}/memory_budget_8b}
N=${NUM_SAMPLES:-4}
T=${SEQ_LEN:-256}
FORMATS=${FORMATS:-w4a8,fp8,kv_fp8} # vLLM on Hopper serves FP8 KV caches (NVFP4 ones need Blackwell)
PRESET=${PRESET:-8b} # tiny: a quick check of this script
mkdir -p "$OUT"
t0=$(date +%s)
[ -f "$OUT/qwen3-$PRESET/config.json" ] ||
    $AQ gen "$OUT/qwen3-$PRESET" --preset $PRESET --ids "$OUT/ids.npy" --num-samples "$N" --seq-len "$T" --force
t1=$(date +%s)
[ -f "$OUT/scores.h5" ] ||
    $AQ score "$OUT/qwen3-$PRESET" --data "$OUT/ids.npy" --method gradient --format "$FORMATS" --device cpu \
        --out "$OUT/scores.h5" >"$OUT/score.log" 2>&1 || { tail -5 "$OUT/score.log"; exit 1; }
t2=$(date +%s)
echo "gen $((t1 - t0)) s, score $((t2 - t1)) s ($N x $T tokens, $FORMATS, gradient, CPU)"
for ctx in 8192 32768; do
    for gib in 12 16 24; do
        $AQ search --scores "$OUT/scores.h5" --memory-budget ${gib}GiB --context $ctx --batch 8 --kv-uniform \
            --out "$OUT/r_${gib}_${ctx}.json" >"$OUT/s_${gib}_${ctx}.log" 2>&1 || true
    done
done
python3 - "$OUT" <<'PY'
import json, os, re, sys
d = sys.argv[1]
G = 1 << 30
print("| budget | context x batch | fits | linear groups w4a8 / fp8 / bf16 | KV cache per layer | "
      "linears + other | KV cache | total (overhead 1 GiB) | predicted gradient |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for ctx in (8192, 32768):
    for gib in (12, 16, 24):
        r = f"{d}/r_{gib}_{ctx}.json"
        if not os.path.exists(r):
            log = open(f"{d}/s_{gib}_{ctx}.log").read()
            m = re.search(r"smallest feasible is \d+ bytes \(([0-9.]+) GiB\)", log)
            print(f"| {gib} GiB | {ctx // 1024}k x 8 | no: needs {m.group(1) if m else '?'} GiB | | | | | | |")
            continue
        j = json.load(open(r))
        lin = [g["choice"] for g in j["groups"] if not g["name"].endswith("kv_cache")]
        kv = [g["choice"] for g in j["groups"] if g["name"].endswith("kv_cache")]
        b = j["memory"]["bytes"]
        kvs = ", ".join(f"{kv.count(c)} {c}" for c in ("kv_nvfp4", "kv_fp8", "bf16") if kv.count(c))
        print(f"| {gib} GiB | {ctx // 1024}k x 8 | yes | {lin.count('w4a8')} / {lin.count('fp8')} / {lin.count('bf16')} | "
              f"{kvs} | {(b['linears'] + b['other']) / G:.2f} GiB | {b['kv_cache'] / G:.2f} GiB | "
              f"{b['total'] / G:.2f} GiB | {j['predicted_score']:.4g} |")
PY
