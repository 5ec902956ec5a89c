#!/usr/bin/env bash
# search --refine measured on the CUDA engine (README §7) against the CPU engine, on qwen3-tiny and the MoE
# fixture (formats w4a8,nvfp4,mxfp4,fp8,w4a16): the recipes both measured agree within 5% relative KL (the GPU's
# unquantized GEMMs take bf16 hi + lo inputs), and the refined recipe is the same (or measures within 5%).
# With AUTOQ_REFINE_TABLE=1 it also measures qwen3-tiny, the VL and the MoE fixture at 4.25, 4.5, 4.8 and 5.5
# bits, plain against refined KL and seconds per measured recipe on each engine (refine_table.txt in
# $AUTOQ_REFINE_OUT when set). Skipped, visibly, without a GPU.
set -u
SUITE=gpu_refine
. "$(dirname "$0")/lib.sh"
FMT=w4a8,nvfp4,mxfp4,fp8,w4a16
V=tests/fixtures/qwen3-vl-tiny
E=tests/fixtures/qwen3-moe-tiny
M=${AUTOQ_TINY:-../shared/models/qwen3-tiny}
if ! $AQ score $V --data tests/fixtures/qwen3_vl_tiny_ids.npy --num-samples 1 --method kl --device cuda \
    --json "$tmp/probe.json" >/dev/null 2>&1; then
    echo "SKIP gpu_refine: search --refine on the GPU: no CUDA device"
    exit 0
fi
# held-out windows: the fixtures (vocabulary 512) 4 x 64 tokens of calib200k_tiny mod 512; qwen3-tiny 4 x 256
# tokens far from its scored ones (README "Measured refinement")
python3 - "$tmp" <<'PY' || fail "held-out windows"
import sys
import numpy as np
a = np.load("tests/fixtures/calib200k_tiny.npy")[0]
np.save(sys.argv[1] + "/held_fix.npy", (a[30000:30256] % 512).reshape(4, 64).astype(np.int32))
np.save(sys.argv[1] + "/held_tiny.npy", a[40000:41024].reshape(4, 256).astype(np.int32))
PY
models=()
table=("qwen3-moe-tiny $E tests/fixtures/qwen3_moe_tiny_ids.npy 64 held_fix cpu"
    "qwen3-vl-tiny $V tests/fixtures/qwen3_vl_tiny_ids.npy 64 held_fix cpu")
if [ -f "$M/config.json" ]; then
    models+=("qwen3-tiny $M tests/fixtures/qwen3_tiny_ids.npy 256 held_tiny cuda")
else
    echo "SKIP gpu_refine: qwen3-tiny: $M missing"
fi
# score NAME DIR IDS T DEVICE: 3 (fixtures) or 4 (qwen3-tiny) windows, kl, the five formats
score() {
    local n=3
    [ "$4" = 256 ] && n=4
    $AQ score "$2" --data "$3" --num-samples $n --seq-len "$4" --method kl --format $FMT --device "$5" \
        --out "$tmp/$1.h5" >/dev/null 2>"$tmp/err" || { fail "$1: score: $(tail -3 "$tmp/err")"; return 1; }
}
# refine NAME BUDGET HELD T DEVICE [OPTIONS]
refine() {
    local name=$1 b=$2 held=$3 T=$4 dev=$5
    shift 5
    local t0=$(date +%s.%N)
    $AQ search --scores "$tmp/$name.h5" --budget "$b" --refine --data "$tmp/$held.npy" --seq-len "$T" \
        --device "$dev" "$@" --out "$tmp/$name.$b.$dev.json" >"$tmp/out" 2>"$tmp/err" ||
        { fail "$name $b --device $dev: $(tail -3 "$tmp/err")"; return 1; }
    python3 -c "import sys; print(f'{sys.argv[1]}: whole search --refine {float(sys.argv[2]) - float(sys.argv[3]):.2f} s')" \
        "$name $b $dev" "$(date +%s.%N)" "$t0" >>"${AUTOQ_REFINE_OUT:-$tmp}/walls.txt"
}
for m in "${models[@]}" "${table[0]}"; do # qwen3-tiny and the MoE fixture
    read -r name dir ids T held sdev <<<"$m"
    score "$name" "$dir" "$ids" "$T" "$sdev" || continue
    refine "$name" 4.8 "$held" "$T" cpu --refine-rounds 2 --refine-candidates 4 &&
        refine "$name" 4.8 "$held" "$T" cuda --refine-rounds 2 --refine-candidates 4 || continue
    python3 tests/refine_compare.py "$tmp/$name.4.8.cpu.json" "$tmp/$name.4.8.cuda.json" 0.05 "$name 4.8" &&
        pass "$name: refine measured on the GPU equals the CPU's within 5%" || fail "$name: GPU refine against CPU"
done
# Streamed layers (README "Streaming"): where the resident measurement does not fit, each recipe in one streamed
# pass. Against the resident refinement above: the same tries and refined recipe, every measured KL within 1e-9
# when forced to stream (AUTOQ_STREAM=1, the resident engine batch) and 1e-6 under a cap halfway between the
# smallest streamed plan and the resident one (the engine batch may be smaller there).
# same_refine RESIDENT.json STREAMED.json TOL [loose]: strict, the same tries in the same order and the same
# best; loose (another engine batch: rounding can reorder near-ties), the plain recipe and round 1's neighbours
# (ranked without a measurement) in both, the recipes measured by both within TOL, and the same
# refined recipe or refined KLs within TOL
same_refine() {
    python3 - "$@" <<'PY'
import json, sys
r, s = (json.load(open(p))["refine"] for p in sys.argv[1:3])
tol, loose = float(sys.argv[3]), len(sys.argv) > 4
assert r["device"] == s["device"] == "cuda" and not r["streamed"] and s["streamed"], (r["streamed"], s["streamed"])
key = lambda t: json.dumps(t["changes"], sort_keys=True)
if not loose:
    assert [key(t) for t in r["tries"]] == [key(t) for t in s["tries"]] and r["best"] == s["best"]
first = lambda x: {key(t) for t in x["tries"] if t["round"] <= 1 and t["kind"] in ("plain", "neighbour")}
assert first(r) == first(s), "round 1 differs"
skl = {key(t): t["measured_kl"] for t in s["tries"]}
common = [(t["measured_kl"], skl[key(t)]) for t in r["tries"] if key(t) in skl]
worst = max(abs(a - b) / max(abs(a), 1e-30) for a, b in common)
assert worst <= tol, f"worst relative KL difference {worst:.3g} > {tol}"
rb, sb = r["tries"][r["best"]], s["tries"][s["best"]]
assert key(rb) == key(sb) or abs(rb["measured_kl"] - sb["measured_kl"]) <= tol * rb["measured_kl"]
print(f"  {len(common)} recipes measured by both, worst relative KL difference {worst:.2e}")
PY
}
for m in "${models[@]}" "${table[0]}"; do
    read -r name dir ids T held sdev <<<"$m"
    [ -f "$tmp/$name.4.8.cuda.json" ] || continue
    cp "$tmp/$name.4.8.cuda.json" "$tmp/$name.res.json"
    AUTOQ_STREAM=1 refine "$name" 4.8 "$held" "$T" cuda --refine-rounds 2 --refine-candidates 4 &&
        grep -q "streams each recipe's layers" "$tmp/err" && same_refine "$tmp/$name.res.json" "$tmp/$name.4.8.cuda.json" 1e-9 &&
        pass "$name: refine streamed (forced) equals the resident refinement within 1e-9" ||
        fail "$name: refine streamed (forced) against resident"
    if $AQ search --scores "$tmp/$name.h5" --budget 4.8 --refine --data "$tmp/$held.npy" --seq-len "$T"         --device cuda --gpu-memory 1 --out "$tmp/none.json" >/dev/null 2>"$tmp/err"; then
        fail "$name: refine --gpu-memory 1 ran"
        continue
    fi
    need=$(sed -n 's/.*needs at least [0-9.]* GiB (\([0-9]*\) bytes); the resident one [0-9.]* GiB (\([0-9]*\) bytes).*/\1 \2/p' "$tmp/err")
    read -r lo hi <<<"$need"
    [ -n "${hi:-}" ] && [ ! -e "$tmp/none.json" ] && pass "$name: refine under --gpu-memory 1 is exit 2, naming the sizes" ||
        { fail "$name: refine --gpu-memory 1: $(tail -2 "$tmp/err")"; continue; }
    cap=$(((lo + hi) / 2))
    refine "$name" 4.8 "$held" "$T" cuda --refine-rounds 2 --refine-candidates 4 --gpu-memory $cap &&
        same_refine "$tmp/$name.res.json" "$tmp/$name.4.8.cuda.json" 1e-6 loose &&
        pass "$name: refine under --gpu-memory $cap (streamed) equals the resident refinement within 1e-6" ||
        fail "$name: refine under --gpu-memory $cap against resident"
done

# --objective max (each domain's held-out windows measured apart): the per-window KLs on the GPU against the CPU's
domain_scores "$V"
for dev in cpu cuda; do
    $AQ search --scores "$tmp/dom.h5" --budget 5 --objective max --refine --data code="$tmp/ha.npy" \
        --data prose="$tmp/hb.npy" --refine-rounds 2 --refine-candidates 2 --device $dev --out "$tmp/max.$dev.json" \
        >/dev/null 2>"$tmp/err" || fail "--objective max --device $dev: $(tail -3 "$tmp/err")"
done
python3 tests/refine_compare.py "$tmp/max.cpu.json" "$tmp/max.cuda.json" 0.05 "VL fixture, --objective max" &&
    python3 - "$tmp/max.cpu.json" "$tmp/max.cuda.json" <<'PY' && pass "--objective max: per-domain KL on the GPU equals the CPU's within 5%" ||
import json, sys
c, g = (json.load(open(p))["refine"]["tries"][0]["measured_kl_per_window"] for p in sys.argv[1:3])
for d in c:
    assert abs(g[d] - c[d]) <= 0.05 * c[d], (d, c[d], g[d])
print(f"  plain recipe per window: CPU {c}, GPU {g}")
PY
    fail "--objective max GPU against CPU"

# a GPTQ refinement stays on the CPU engine, and says so
$AQ score $E --data tests/fixtures/qwen3_moe_tiny_ids.npy --seq-len 64 --method kl --format w4a8,w8a8 --device cpu \
    --out "$tmp/int.h5" >/dev/null 2>&1
refine int 6 held_fix 64 cuda --refine-rounds 1 --refine-candidates 1 --quantizer gptq &&
    grep -q "measures on the CPU engine" "$tmp/err" &&
    python3 -c "import json, sys; assert json.load(open(sys.argv[1]))['refine']['device'] == 'cpu'" \
        "$tmp/int.6.cuda.json" && pass "--quantizer gptq: refine measures on the CPU" || fail "gptq refine device"

# --device auto measures on the GPU where one is visible (round-to-nearest recipes)
refine int 6 held_fix 64 auto --refine-rounds 1 --refine-candidates 1 &&
    python3 -c "import json, sys; assert json.load(open(sys.argv[1]))['refine']['device'] == 'cuda'" \
        "$tmp/int.6.auto.json" && pass "--device auto: refine measures on the GPU" || fail "auto refine device"

[ "${AUTOQ_REFINE_TABLE:-0}" = 1 ] || exit 0
out=${AUTOQ_REFINE_OUT:-$tmp}
: >"$out/refine_table.txt"
for m in "${models[@]}" "${table[@]}"; do # qwen3-tiny, the MoE fixture, the VL fixture
    read -r name dir ids T held sdev <<<"$m"
    [ -f "$tmp/$name.h5" ] || score "$name" "$dir" "$ids" "$T" "$sdev" || continue
    for b in 4.25 4.5 4.8 5.5; do
        refine "$name" $b "$held" "$T" cpu && refine "$name" $b "$held" "$T" cuda || continue
        cp "$tmp/$name.$b.cpu.json" "$tmp/$name.$b.cuda.json" "$out/" 2>/dev/null
        python3 tests/refine_compare.py "$tmp/$name.$b.cpu.json" "$tmp/$name.$b.cuda.json" 0.05 "$name $b" \
            >>"$out/refine_table.txt" 2>&1 || echo "  ($name $b: outside 5%)" >>"$out/refine_table.txt"
    done
done
cat "$out/refine_table.txt" "$out/walls.txt"
