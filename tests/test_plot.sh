#!/usr/bin/env bash
# bench/plot.py (make demo's plots): every group kind, a mixture-of-experts layer's experts group
# included, and one panel per scored format. Needs h5py and matplotlib.
set -u
SUITE=plot
. "$(dirname "$0")/lib.sh"
if ! python3 -c "import h5py, matplotlib" 2>/dev/null; then
    echo "SKIP plot: python3 lacks h5py or matplotlib (python3 -m pip install h5py matplotlib)"
    exit 0
fi
# qwen3-tiny's committed scores of all seven formats, searched with a sweep.
$AQ search --scores tests/fixtures/exports/tiny_formats_scores.h5 --budget 4.6 --sweep 4.2:8:1 --h5 "$tmp/tf.h5" >/dev/null 2>&1
out=$(python3 bench/plot.py "$tmp/tf.h5" "$tmp/tf" 2>&1)
grep -q "32 groups (qkv, o_proj, gate_up, down_proj) x 7 formats (w4a8, w8a8, fp8, nvfp4, mxfp4, w4a16, w4a8_fp8)" <<<"$out" &&
    [ -s "$tmp/tf-sensitivity.png" ] && [ -s "$tmp/tf-pareto.png" ] &&
    pass "seven formats: a panel each, every group" || fail "seven formats: $out"
# The MoE fixture: its sparse layers' experts groups are plotted beside attention and the dense layer.
$AQ score tests/fixtures/qwen3-moe-tiny --data tests/fixtures/qwen3_moe_tiny_ids.npy --method kl --format w4a8,w8a8 \
    --out "$tmp/moe.h5" >/dev/null 2>&1
$AQ search --scores "$tmp/moe.h5" --budget 6 --h5 "$tmp/moe_s.h5" >/dev/null 2>&1
out=$(python3 bench/plot.py "$tmp/moe_s.h5" "$tmp/moe" 2>&1)
grep -q "10 groups (qkv, o_proj, gate_up, down_proj, experts) x 2 formats (w4a8, w8a8)" <<<"$out" &&
    [ -s "$tmp/moe-sensitivity.png" ] && pass "MoE: the experts groups plotted" || fail "MoE plot: $out"
# A scores file without /search (one format, no_grouping's single linears as their own kinds).
$AQ score tests/fixtures/qwen3-vl-tiny --data tests/fixtures/qwen3_vl_tiny_ids.npy --method gradient --no-grouping \
    --out "$tmp/ng.h5" >/dev/null 2>&1
out=$(python3 bench/plot.py "$tmp/ng.h5" "$tmp/ng" 2>&1)
grep -q "14 groups (o_proj, down_proj, gate_proj, k_proj, q_proj, up_proj, v_proj) x 1 formats (w4a8)" <<<"$out" &&
    [ -s "$tmp/ng-sensitivity.png" ] && pass "no_grouping: each linear kind" || fail "no_grouping plot: $out"
# search --bootstrap: intervals as error bars, noisy decisions marked
"$(dirname "$AQ")/tests/test_bootstrap" --write "$tmp/bw.h5" "$tmp/bnw.h5" &&
    $AQ search --scores "$tmp/bw.h5" --budget 5.34 --bits modelopt --bootstrap 40 --h5 "$tmp/bs.h5" >/dev/null 2>&1
out=$(python3 bench/plot.py "$tmp/bs.h5" "$tmp/bs" 2>&1)
grep -q "bootstrap: 95% intervals drawn, [1-9][0-9]* noisy decision(s) marked" <<<"$out" && [ -s "$tmp/bs-sensitivity.png" ] &&
    pass "bootstrap: intervals and noisy decisions" || fail "bootstrap plot: $out"
