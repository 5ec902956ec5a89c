# Streamed layers (README "Streaming"): --gpu-memory's bad uses everywhere; on a GPU, kl and gradient
# under a cap small enough to stream the layers (mid: some resident, two engine batches per streamed batch
# where they fit), one just above the smallest plan (low: in-flight states spilled to host memory) and the
# smallest plan's own size as its exit-2 message names it (min), against the resident run: kl scores
# bit-identical (the same arithmetic per pass), gradient within 1e-6 relative (the fp64 sums of a streamed
# batch's windows add in another order), per-window scores the same way, the engine's own allocations under
# the cap (the free-memory peak counts other processes on the GPU too); on qwen3-tiny (int8 and bf16 hi + lo
# with an emulated format), the MoE fixture and a generated model of the Qwen3-0.6B shape (head_dim 128: the
# fused attention). kl also without spills (AUTOQ_STREAM_SPILL=0: every state on the GPU, so its smallest
# plan is the two layer slots and every state): on qwen3-tiny six layers' bytes below the resident run, on the
# MoE fixture its dense layer's; none on the two-layer 0.6B shape (two slots hold both layers: only spills
# stream it below resident). Then the data-parallel back end on this GPU, search --verify, GPTQ scores (codes
# streamed with their layers) and quantize's GPTQ pipeline (its pool in host memory) under a cap. Then the
# hybrid families (generated qwen3.5-small, qwen3.5-moe-small, qwen3-next-small: Gated DeltaNet and gated
# attention layers taking turns in the carved slots, shared experts, Qwen3-Next's fused projections and a dense
# layer among sparse ones): kl and gradient with two engine batches per streamed batch (mid) and with spilled
# states (low, which must spill), kl without spills at its smallest plan (min), against the resident run as
# above, and the engine's allocations within the planner's count of them (its planned peak less its 256 MiB
# for the CUDA libraries' workspaces). The hybrid section passed on one H100 (56 checks).
# Skipped, visibly, without a GPU. About 70 runs of autoq, meant to take under 2 minutes on one H100.
# STREAM_ONLY="SECTION ...": only those sections of the GPU part (tiny, moe, keep, multi, verify, gptq,
# quantize, gen06, hybrid; all when unset), e.g. STREAM_ONLY=hybrid (bench/gpu_session.sh). verify, gptq and
# multi take their caps from the tiny section's probes: without tiny, its resident runs and probes run alone.
SUITE=gpu-stream
source tests/lib.sh
# KEEP_LOGS=DIR: every run's log copied there at the end (a GPU run's post-mortem)
[ -n "${KEEP_LOGS:-}" ] && trap 'cp "$tmp"/*.log "$KEEP_LOGS"/ 2>/dev/null; rm -rf "$tmp"' EXIT
M=${AUTOQ_TINY:-../shared/models/qwen3-tiny}
D=tests/fixtures/qwen3_tiny_ids.npy
moe=tests/fixtures/qwen3-moe-tiny
moe_ids=tests/fixtures/qwen3_moe_tiny_ids.npy
expect "--gpu-memory needs a size" "a size such as" "$AQ" score $moe --data $moe_ids --method kl --gpu-memory 4X
expect "--gpu-memory needs a GPU" "no CUDA device in use" \
    "$AQ" score $moe --data $moe_ids --method kl --device cpu --gpu-memory 1GiB
expect "eval --gpu-memory needs a GPU" "no CUDA device in use" \
    "$AQ" eval $moe --data $moe_ids --num-samples 1 --format w4a8 --device cpu --gpu-memory 1GiB
# the hybrid families stream (no refusal of their own but GPTQ's, which runs on the CPU for them)
F=tests/fixtures
expect "--gpu-memory on a hybrid model without a GPU: the common refusal" "no CUDA device in use" \
    "$AQ" score $F/qwen3_5-tiny --data $F/qwen3_5_tiny_ids.npy --method kl --device cpu --gpu-memory 1GiB
expect "--gpu-memory with --quantizer gptq on a hybrid model (its GPTQ runs on the CPU)" \
    "runs on the CPU, which --gpu-memory does not cap" \
    "$AQ" score $F/qwen3-next-tiny --data $F/qwen3_next_tiny_ids.npy --method kl --quantizer gptq --gpu-memory 1GiB
skip_without_model "$M"
skip_without_gpu "streamed layers" "$AQ" score $moe --data $moe_ids --num-samples 1 --method kl --device cuda \
    --json "$tmp/probe.json"

# want SECTION: whether STREAM_ONLY selects it
want() { [ -z "${STREAM_ONLY:-}" ] || [[ " $STREAM_ONLY " == *" $1 "* ]]; }

# same A B TOL: every score of A within TOL (relative) of B's, every score finite, and the same of the
# per-window scores (groups/window_scores) when both hold them; TOL 0: bit-identical
same() {
    python3 - "$1" "$2" "$3" <<'PY'
import sys
import h5py, numpy as np
with h5py.File(sys.argv[1]) as a, h5py.File(sys.argv[2]) as b:
    sa, sb = a["groups/score"][:], b["groups/score"][:]
    wa = a["groups/window_scores"][:] if "groups/window_scores" in a else None
    wb = b["groups/window_scores"][:] if "groups/window_scores" in b else None
tol = float(sys.argv[3])
def worst(x, y):
    m = np.isfinite(y) & (y != 0)
    return float(np.max(np.abs(x[m] - y[m]) / np.abs(y[m]))) if m.any() else 0.0
ok = sa.shape == sb.shape and np.isfinite(sa[np.isfinite(sb)]).all() and worst(sa, sb) <= tol
msg = f"worst relative difference {worst(sa, sb):.3g} over {np.isfinite(sb).sum()} scores"
if wa is None or wb is None or wa.shape != wb.shape:
    ok, msg = False, msg + f", per-window scores missing or unlike ({wa is not None}, {wb is not None})"
else:
    ok &= worst(wa, wb) <= tol and np.allclose(wa.sum(axis=-1).reshape(sa.shape), sa, rtol=1e-9, atol=0,
                                               equal_nan=True)
    msg += f", per window {worst(wa, wb):.3g} over {wa.size}"
print(msg)
sys.exit(0 if ok else 1)
PY
}

# bytes LOG PATTERN: the first "(N bytes" figure of the line matching PATTERN; bytes2: the second
bytes() { grep -F "$2" "$1" | sed -n 's/[^(]*(\([0-9]*\) bytes.*/\1/p' | head -1; }
bytes2() { grep -F "$2" "$1" | sed -n 's/.*(\([0-9]*\) bytes.*(\([0-9]*\) bytes.*/\2/p' | head -1; }

# check NAME MODEL IDS METHOD TOL KINDS ARGS...: the resident run, one probe (the smallest streamed plan and
# the resident one), then each cap of KINDS: min (the smallest plan's size, rounded up to a byte), mid (a
# third of the way from it to the resident one; two engine batches per streamed batch), low (a twentieth of
# the way: states spill, unless AUTOQ_STREAM_SPILL=0)
check() {
    local name=$1 model=$2 ids=$3 method=$4 tol=$5 kinds=$6
    shift 6
    local a=("$AQ" score "$model" --data "$ids" --method "$method" --device cuda "$@")
    if [ -n "${RES_FROM:-}" ] && [ -f "$tmp/$RES_FROM.res.h5" ]; then # the same resident run as RES_FROM's
        cp "$tmp/$RES_FROM.res.h5" "$tmp/$name.res.h5"
    elif ! "${a[@]}" --out "$tmp/$name.res.h5" >"$tmp/$name.res.out" 2>"$tmp/$name.res.log"; then
        fail "$name: the resident run: $(tail -n 2 "$tmp/$name.res.log")"
        return
    fi
    "${a[@]}" --gpu-memory 1 >/dev/null 2>"$tmp/$name.min.log"
    local lo hi
    lo=$(bytes "$tmp/$name.min.log" "needs at least")
    hi=$(bytes2 "$tmp/$name.min.log" "needs at least")
    if [ -z "$lo" ] || [ -z "$hi" ] || [ "$lo" -ge "$hi" ]; then
        fail "$name: plan sizes: smallest streamed '$lo', resident '$hi': $(tail -n 1 "$tmp/$name.min.log")"
        return
    fi
    local min=$((lo + 1)) mid=$((lo + (hi - lo) / 3)) low=$((lo + (hi - lo) / 20)) cap kind
    CAPS[$name.mid]=$mid
    CAPS[$name.low]=$low
    for kind in $kinds; do
        cap=${!kind}
        if ! AUTOQ_STREAM_BATCHES=$([ $kind = mid ] && echo 2 || echo 0) "${a[@]}" --gpu-memory "$cap" \
            --out "$tmp/$name.$kind.h5" >/dev/null 2>"$tmp/$name.$kind.log" ||
            ! grep -q "streaming layers from host memory" "$tmp/$name.$kind.log"; then
            fail "$name: --gpu-memory $cap did not stream: $(grep -v TFLOP "$tmp/$name.$kind.log" | tail -n 2)"
            continue
        fi
        grep -h "streaming layers\|streamed layers\|peak GPU" "$tmp/$name.$kind.log" | sed "s/^/# $name $kind: /"
        if [ $kind = low ] && [ -n "${WANT_SPILL:-}" ] && [ "${AUTOQ_STREAM_SPILL:-}" != 0 ]; then
            grep -q "the rest in pinned host memory" "$tmp/$name.$kind.log" &&
                pass "$name, low cap: in-flight states spilled to host memory" ||
                fail "$name, low cap: no state spilled: $(grep "streaming layers" "$tmp/$name.$kind.log")"
        fi
        local r al
        r=$(same "$tmp/$name.$kind.h5" "$tmp/$name.res.h5" "$tol") && pass "$name, $kind cap: $r" ||
            fail "$name, $kind cap: $r"
        al=$(bytes "$tmp/$name.$kind.log" "allocated by the engine")
        [ -n "$al" ] && [ "$al" -le "$cap" ] && pass "$name, $kind cap: the engine's $al bytes under $cap" ||
            fail "$name, $kind cap: the engine's allocations '$al' over $cap bytes"
        # PLAN_CHECK: the planner's count of the engine's own buffers (its planned peak less the 256 MiB it
        # allows the CUDA libraries' workspaces, which the engine does not allocate) covers what it allocated
        if [ -n "${PLAN_CHECK:-}" ]; then
            local pl
            pl=$(sed -n 's/.*planned peak [0-9.]* GiB (\([0-9]*\) bytes.*/\1/p' "$tmp/$name.$kind.log" | head -1)
            [ -n "$pl" ] && [ -n "$al" ] && [ "$al" -le $((pl - 268435456)) ] &&
                pass "$name, $kind cap: the engine's $al bytes within the plan's $((pl - 268435456)) for them" ||
                fail "$name, $kind cap: the engine's $al bytes over the plan's '$pl' less 256 MiB"
        fi
    done
}

declare -A CAPS # NAME.KIND: the caps check computed
# one window per engine batch, so the streamed run's engine batch is the resident one's; three windows: a
# streamed batch of two and one of one
# streamed batch of two and one of one. tiny-kl low: one spilled state alive after layer 0, used last there
# and first at layer 1 (in the other ring slot: the case that once wrote back the stale slot)
if want tiny; then
    check tiny-kl "$M" $D kl 0 "mid low min" --num-samples 3 --batch-size 1
    check tiny-gradient "$M" $D gradient 1e-6 "mid" --num-samples 3 --batch-size 1
    check tiny-kl-bf16x2 "$M" $D kl 0 "mid" --num-samples 3 --batch-size 1 --gpu-gemm bf16x2 --format w4a8,nvfp4
elif want verify || want gptq || want multi; then
    # their caps (CAPS) and multi's resident scores come from the tiny runs: without the tiny section (a lane of
    # bench/gpu_session.sh), only its resident runs and probes, no capped run
    check tiny-kl "$M" $D kl 0 "" --num-samples 3 --batch-size 1
    check tiny-gradient "$M" $D gradient 1e-6 "" --num-samples 3 --batch-size 1
fi
if want moe; then
    check moe-kl $moe $moe_ids kl 0 "low" --batch-size 1
    check moe-gradient $moe $moe_ids gradient 1e-6 "low" --batch-size 1
fi
# kl without spills: the size its refusal names streams (the message once named the spilling plan's)
if want keep; then
    AUTOQ_STREAM_SPILL=0 check tiny-kl-keep "$M" $D kl 0 "min mid" --num-samples 3 --batch-size 1
    AUTOQ_STREAM_SPILL=0 check moe-kl-keep $moe $moe_ids kl 0 "min" --batch-size 1
fi

# The data-parallel back end (--gpus N: a thread per GPU, each streaming its own copy by one plan, the sums
# all-reduced) on this one GPU (AUTOQ_TEST_MULTI=1): the one-GPU streamed run's scores
multi_check() { # NAME METHOD TOL CAP
    local name=$1 method=$2 tol=$3 cap=$4 r
    if [ -z "$cap" ]; then
        fail "$name: no cap (the probe above failed)"
    elif AUTOQ_TEST_MULTI=1 "$AQ" score "$M" --data $D --method "$method" --device cuda --num-samples 3 \
        --batch-size 1 --gpus 1 --gpu-memory "$cap" --out "$tmp/$name.h5" >/dev/null 2>"$tmp/$name.log" &&
        grep -q "GPU 0: streamed layers" "$tmp/$name.log"; then
        grep -h "GPU 0" "$tmp/$name.log" | sed "s/^/# $name: /"
        r=$(same "$tmp/$name.h5" "$tmp/tiny-$method.res.h5" "$tol") && pass "$name: $r" || fail "$name: $r"
    else
        fail "$name: $(grep -v TFLOP "$tmp/$name.log" | tail -n 2)"
    fi
}
if want multi; then
    multi_check multi-kl kl 0 "${CAPS[tiny-kl.low]:-}"
    multi_check multi-gradient gradient 1e-6 "${CAPS[tiny-gradient.mid]:-}"
fi

# search --verify under a cap: the scores stream (bit-identical kl), so the recipe is the resident run's; its
# measurement (--device auto: on the CUDA engine, streamed, where the scoring's cap holds it, else on the CPU
# engine with a warning; tests/test_gpu_measure.sh checks both against each other) within 5%
v=("$AQ" search "$M" --data $D --num-samples 2 --batch-size 1 --method kl --budget 6 --verify --device auto)
tiny_cap=${CAPS[tiny-kl.low]:-}
if ! want verify; then
    :
elif [ -z "$tiny_cap" ]; then
    fail "search --verify under --gpu-memory: no cap (tiny-kl's probe failed)"
elif "${v[@]}" --out "$tmp/v.res.json" >/dev/null 2>"$tmp/v.res.log" &&
    "${v[@]}" --gpu-memory "$tiny_cap" --out "$tmp/v.str.json" >/dev/null 2>"$tmp/v.str.log"; then
    grep -q "streaming layers from host memory" "$tmp/v.str.log" &&
        python3 - "$tmp/v.res.json" "$tmp/v.str.json" <<'PY' &&
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
ma, mb = a.pop("measured"), b.pop("measured")
sys.exit(a != b or abs(ma["kl"] - mb["kl"]) > 0.05 * ma["kl"] or abs(ma["nll_delta"] - mb["nll_delta"]) > 0.05 * abs(ma["nll_delta"]) + 1e-4)
PY
        pass "search --verify under --gpu-memory: the resident run's recipe, measured KL and NLL within 5%" ||
        fail "search --verify under --gpu-memory: $(diff "$tmp/v.res.json" "$tmp/v.str.json" | head -5)"
else
    fail "search --verify under --gpu-memory: $(grep -hv TFLOP "$tmp/v.res.log" "$tmp/v.str.log" | tail -n 2)"
fi

# GPTQ scores under a cap (the caps of the runs above: GPTQ's codes make every layer larger, so they stream
# with fewer resident): the given codes follow their layer into its slot; the same scores as resident GPTQ
gptq_check() { # NAME METHOD TOL CAP
    local name=$1 method=$2 tol=$3 cap=$4
    local a=("$AQ" score "$M" --data $D --method "$method" --device cuda --num-samples 3 --batch-size 1
        --quantizer gptq --format w4a8)
    if [ -z "$cap" ]; then
        fail "$name: no cap (the probe above failed)"
    elif ! "${a[@]}" --out "$tmp/$name.res.h5" >/dev/null 2>"$tmp/$name.res.log" ||
        ! "${a[@]}" --gpu-memory "$cap" --out "$tmp/$name.str.h5" >/dev/null 2>"$tmp/$name.str.log" ||
        ! grep -q "streaming layers from host memory" "$tmp/$name.str.log"; then
        fail "$name: $(grep -v TFLOP "$tmp/$name.str.log" "$tmp/$name.res.log" | tail -n 3)"
    else
        grep -h "streaming layers\|streamed layers" "$tmp/$name.str.log" | sed "s/^/# $name: /"
        local r
        r=$(same "$tmp/$name.str.h5" "$tmp/$name.res.h5" "$tol") && pass "$name under $cap bytes: $r" ||
            fail "$name under $cap bytes: $r"
    fi
}
if want gptq; then
    gptq_check gptq-kl kl 0 "${CAPS[tiny-kl.mid]:-}"
    gptq_check gptq-gradient gradient 1e-6 "${CAPS[tiny-gradient.mid]:-}"
fi

# GPTQ's own pipeline under a cap (quantize): its windows' pool in pinned host memory when the pool would pass
# it, the same checkpoint byte for byte; a cap below its layer walk is exit 2
if want quantize; then
    "$AQ" search "$M" --data $D --num-samples 2 --method kl --budget 6 --device cpu --out "$tmp/r.json" >/dev/null 2>&1
    q=("$AQ" quantize "$M" --recipe "$tmp/r.json" --data $D --num-samples 4 --quantizer gptq --device cuda)
    if "${q[@]}" --gpu-memory 1TiB --out "$tmp/q.res" >/dev/null 2>"$tmp/q.res.log"; then
        walk=$(bytes "$tmp/q.res.log" "the layer walk holds")
        pool=$(bytes2 "$tmp/q.res.log" "the layer walk holds")
        if [ -n "$walk" ] && [ -n "$pool" ] &&
            "${q[@]}" --gpu-memory $((walk + pool / 2)) --out "$tmp/q.str" >/dev/null 2>"$tmp/q.str.log" &&
            grep -q "waits in pinned host memory" "$tmp/q.str.log"; then
            same_dir=1
            for f in "$tmp"/q.res/*; do cmp -s "$f" "$tmp/q.str/$(basename "$f")" || same_dir=0; done
            [ $same_dir = 1 ] && pass "quantize --quantizer gptq, the pool in host memory: the same checkpoint" ||
                fail "quantize --quantizer gptq under --gpu-memory: the checkpoints differ"
        else
            fail "quantize --quantizer gptq under --gpu-memory: $(cat "$tmp/q.res.log" "$tmp/q.str.log" | tail -n 2)"
        fi
        expect "quantize: a cap below GPTQ's layer walk" "too small for GPTQ" \
            "${q[@]}" --gpu-memory 1 --out "$tmp/q.small"
    else
        fail "quantize --quantizer gptq: $(tail -n 2 "$tmp/q.res.log")"
    fi
fi

# the 0.6B shape, head_dim 128
g=$tmp/g06
if ! want gen06; then
    :
elif "$AQ" gen "$g" --preset 0.6b --layers 2 --ids "$tmp/g06.npy" --num-samples 2 --seq-len 128 --quiet; then
    check gen06-kl "$g" "$tmp/g06.npy" kl 0 "low" --batch-size 1
else
    fail "gen --preset 0.6b --layers 2"
fi

# last (the runs before it are the older checks): the hybrid families, 4 layers each (3 Gated DeltaNet, 1 gated
# full attention), 3 windows of 64 tokens. One window per engine batch, as above; w4a8 (an int8 GEMM per group)
# and the hybrids' default bf16 hi + lo GEMM inputs. kl bit-identical to the resident run, gradient within 1e-6.
if want hybrid; then
    for p in qwen3.5-small qwen3.5-moe-small qwen3-next-small; do
        h=$tmp/$p
        if ! "$AQ" gen "$h" --preset $p --ids "$h.npy" --num-samples 3 --seq-len 64 --quiet; then
            fail "gen --preset $p"
            continue
        fi
        WANT_SPILL=1 PLAN_CHECK=1 check $p-kl "$h" "$h.npy" kl 0 "mid low" --batch-size 1 --format w4a8
        WANT_SPILL=1 PLAN_CHECK=1 check $p-gradient "$h" "$h.npy" gradient 1e-6 "mid low" --batch-size 1 --format w4a8
        RES_FROM=$p-kl PLAN_CHECK=1 AUTOQ_STREAM_SPILL=0 check $p-kl-keep "$h" "$h.npy" kl 0 "min" --batch-size 1 \
            --format w4a8
    done
fi
