#!/usr/bin/env bash
# The best recipe of the Qwen3-8B shape for 12, 16 and 24 GiB at 8k and 32k context, batch 8, on vLLM / Hopper
# (README, "KV cache and memory budgets"): gen --preset 8b into /dev/shm (random bf16 weights and token ids: the
# byte arithmetic and the solver are real, the sensitivities a random model's), one kl score on the GPU of the
# formats vLLM serves natively on sm90 (configs/targets/vllm.json: w4a16, w4a8_fp8, fp8, w8a8) and the FP8 KV
# cache, then one search per point with --target vllm --arch sm90 (one KV-cache format for every layer, as the
# profile's kv_cache_one_format_per_model says). Prints a Markdown table for the README. Estimated 2-3 minutes on one
# H100 (gen ~20 s, score ~1-2 min from earlier 8B kl timings, searches seconds); not run yet (README "Not done yet").
#   AQ=build/autoq bash bench/memory_budget_8b.sh [OUT_DIR]
#   (NUM_SAMPLES, SEQ_LEN, FORMATS, METHOD, DEVICE, PRESET to change them; PRESET=tiny DEVICE=cpu checks the script)
set -eu
AQ=${AQ:-build/autoq}
OUT=${1:-${OUT_DIR:-/dev/shm/memory_budget_8b}}
N=${NUM_SAMPLES:-4}
T=${SEQ_LEN:-512}
FORMATS=${FORMATS:-w4a16,w4a8_fp8,fp8,w8a8,kv_fp8} # vLLM sm90's native formats; its KV cache is bf16 or FP8
METHOD=${METHOD:-kl}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-8b}
mkdir -p "$OUT"
t0=$(date +%s)
[ -f "$OUT/qwen3-$PRESET/config.json" ] ||
    $AQ gen "$OUT/qwen3-$PRESET" --preset $PRESET --ids "$OUT/ids.npy" --num-samples "$N" --seq-len "$T" --force \
        >"$OUT/gen.log" 2>&1 || { tail -5 "$OUT/gen.log"; exit 1; }
t1=$(date +%s)
[ -f "$OUT/scores.h5" ] ||
    $AQ score "$OUT/qwen3-$PRESET" --data "$OUT/ids.npy" --method $METHOD --format "$FORMATS" --device $DEVICE \
        --out "$OUT/scores.h5" >"$OUT/score.log" 2>&1 || { tail -5 "$OUT/score.log"; exit 1; }
t2=$(date +%s)
for ctx in 8192 32768; do
    for gib in 12 16 24; do
        $AQ search --scores "$OUT/scores.h5" --memory-budget ${gib}GiB --context $ctx --batch 8 --target vllm --arch sm90 \
            --out "$OUT/r_${gib}_${ctx}.json" >"$OUT/s_${gib}_${ctx}.log" 2>&1 || true
    done
done
t3=$(date +%s)
echo "gen $((t1 - t0)) s, score $((t2 - t1)) s ($N x $T tokens, $FORMATS, $METHOD, $DEVICE), 6 searches $((t3 - t2)) s"
grep -E "score: (CUDA device|kl|gradient|peak GPU)" "$OUT/score.log" | sed 's/^/  /' || true
python3 - "$OUT" <<'PY'
import json, os, re, sys
d = sys.argv[1]
G = 1 << 30
print("| budget | context x batch | fits | linear groups | KV cache (per layer) | weights | KV cache | "
      "overhead | total | predicted kl |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for ctx in (8192, 32768):
    for gib in (12, 16, 24):
        r = f"{d}/r_{gib}_{ctx}.json"
        if not os.path.exists(r):
            log = open(f"{d}/s_{gib}_{ctx}.log").read()
            m = re.search(r"smallest feasible is \d+ bytes \(([0-9.]+) GiB\)", log)
            print(f"| {gib} GiB | {ctx // 1024}k x 8 | no: needs {m.group(1) if m else '?'} GiB | | | | | | | |")
            continue
        j = json.load(open(r))
        lin = [g["choice"] for g in j["groups"] if not g["name"].endswith("kv_cache")]
        kv = [g["choice"] for g in j["groups"] if g["name"].endswith("kv_cache")]
        order = sorted(set(lin), key=lambda c: (c == "bf16", -lin.count(c)))
        b = j["memory"]["bytes"]
        kvs = ", ".join(f"{kv.count(c)} {c}" for c in sorted(set(kv)))
        print(f"| {gib} GiB | {ctx // 1024}k x 8 | yes | {', '.join(f'{lin.count(c)} {c}' for c in order)} | {kvs} | "
              f"{(b['linears'] + b['other']) / G:.2f} GiB | {b['kv_cache'] / G:.2f} GiB | {b['overhead'] / G:.2f} GiB | "
              f"{b['total'] / G:.2f} GiB | {j['predicted_score']:.4g} |")
PY
