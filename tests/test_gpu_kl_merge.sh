# kl merged across groups (AUTOQ_KL_MERGE=1, scoring/score_merge.cu) through the command line against the
# default resident kl on one GPU: every group's score and every window's, the expert coverage, and the plan
# on stderr; a short last batch (3 windows, batches of 2), waves and small merged batches forced. Skipped,
# visibly, without a CUDA device.
SUITE=gpu-kl-merge
source tests/lib.sh
skip_without_gpu "kl" "$AQ" score tests/fixtures/qwen3-moe-tiny --data tests/fixtures/qwen3_moe_tiny_ids.npy \
    --method kl --device cuda --num-samples 1 --json "$tmp/probe.json"

# 3 windows each (a short last batch of the batches of 2): the MoE fixture's windows 1, 2, 1 (its window 0 holds
# a near-tied routing decision, tests/test_gpu.c), the hybrid one's 0, 1, 0
python3 - "$tmp" <<'PY' || fail "the windows"
import sys
import numpy as np
np.save(f"{sys.argv[1]}/moe.npy", np.load("tests/fixtures/qwen3_moe_tiny_ids.npy")[[1, 2, 1]])
np.save(f"{sys.argv[1]}/hyb.npy", np.load("tests/fixtures/qwen3_5_moe_tiny_ids.npy")[[0, 1, 0]])
PY
tiny=${AUTOQ_TINY:-../shared/models/qwen3-tiny}

# same A B TOL: groups' and windows' scores within TOL (relative, on scores >= 1% of the largest), coverage equal
same() {
    python3 - "$1" "$2" "$3" <<'PY'
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
tol = float(sys.argv[3])
rel = lambda x, y: abs(x - y) / max(abs(x), abs(y), 1e-300)
pairs = [(x["score"], y["score"]) for x, y in zip(a["groups"], b["groups"]) if x["score"] is not None]
top = max(abs(x) for x, _ in pairs)
w = max(rel(x, y) for x, y in pairs if abs(x) >= 0.01 * top)
ww = 0
for x, y in zip(a["groups"], b["groups"]):
    for f, v in (x.get("window_scores") or {}).items():
        for p, q in zip(v, y["window_scores"][f]):
            if abs(p) >= 0.01 * top / len(v):
                ww = max(ww, rel(p, q))
ok = w <= tol and ww <= tol and len(a["groups"]) == len(b["groups"])
if "coverage" in a:
    ok = ok and {k: v["tokens"] for k, v in a["coverage"].items()} == {k: v["tokens"] for k, v in b["coverage"].items()}
print(f"worst relative difference {w:.3g} (groups), {ww:.3g} (windows), tolerance {tol}")
sys.exit(0 if ok else 1)
PY
}

run() { # NAME MODEL IDS GEMM TOL [env...]
    local name=$1 model=$2 ids=$3 gemm=$4 tol=$5
    shift 5
    "$AQ" score "$model" --data "$ids" --method kl --format w4a8 --device cuda --num-samples 3 --batch-size 2 \
        --gpu-gemm "$gemm" --json "$tmp/base.json" >/dev/null 2>&1 || { fail "$name: the default run"; return; }
    env AUTOQ_KL_MERGE=1 "$@" "$AQ" score "$model" --data "$ids" --method kl --format w4a8 --device cuda \
        --num-samples 3 --batch-size 2 --gpu-gemm "$gemm" --json "$tmp/merged.json" >/dev/null 2>"$tmp/merged.log" ||
        { fail "$name: the merged run: $(tail -2 "$tmp/merged.log")"; return; }
    grep -q "kl merged across groups" "$tmp/merged.log" || { fail "$name: no merged plan on stderr"; return; }
    local out
    if out=$(same "$tmp/base.json" "$tmp/merged.json" "$tol"); then pass "$name: $out"; else fail "$name: $out"; fi
}

run "qwen3-moe-tiny bf16x2, automatic plan" tests/fixtures/qwen3-moe-tiny "$tmp/moe.npy" bf16x2 1e-6
run "qwen3-moe-tiny bf16, batches of 3 windows, waves of 2 passes" tests/fixtures/qwen3-moe-tiny "$tmp/moe.npy" \
    bf16 1e-3 AUTOQ_KL_MERGE_BATCH=3 AUTOQ_KL_MERGE_WAVE=2
run "qwen3_5-moe-tiny bf16x2, batches of 2 windows, waves of 3 passes" tests/fixtures/qwen3_5-moe-tiny \
    "$tmp/hyb.npy" bf16x2 1e-6 AUTOQ_KL_MERGE_BATCH=2 AUTOQ_KL_MERGE_WAVE=3
if [ -f "$tiny/config.json" ]; then
    run "qwen3-tiny fp16, automatic plan" "$tiny" tests/fixtures/qwen3_tiny_ids.npy fp16 1e-6
else
    echo "SKIP $SUITE: qwen3-tiny fp16 (model missing)"
fi
