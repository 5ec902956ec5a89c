#!/usr/bin/env bash
# search --bootstrap end to end (README §7, §8): per-window scores written by score, the confidence in the
# recipe JSON and HDF5, determinism by seed, and exit 2 on a scores file without per-window scores.
set -u
SUITE=bootstrap
. "$(dirname "$0")/lib.sh"
TB="$(dirname "$AQ")/tests/test_bootstrap"
"$TB" --write "$tmp/w.h5" "$tmp/nw.h5" || fail "writing the small case"

run() { $AQ search --scores "$tmp/w.h5" --budget 5.34 --bits modelopt --bootstrap 40 "$@"; }
run --bootstrap-seed 5 --out "$tmp/a.json" --h5 "$tmp/a.h5" >"$tmp/out" 2>&1 || fail "search --bootstrap: $(cat "$tmp/out")"
run --bootstrap-seed 5 --out "$tmp/b.json" >/dev/null 2>&1
run --bootstrap-seed 6 --out "$tmp/c.json" >/dev/null 2>&1
cmp -s "$tmp/a.json" "$tmp/b.json" && ! cmp -s "$tmp/a.json" "$tmp/c.json" && pass "deterministic by seed" ||
    fail "same seed must repeat, another differ"
grep -q "NOISY" "$tmp/out" && grep -q "whole recipe comes back in" "$tmp/out" && pass "table flags noisy decisions" ||
    fail "bootstrap table: $(cat "$tmp/out")"
python3 - "$tmp" <<'PY' && pass "recipe JSON and HDF5 carry the bootstrap" || fail "bootstrap JSON / HDF5"
import json, sys
import h5py
r = json.load(open(sys.argv[1] + "/a.json"))
b = r["bootstrap"]
assert b["resamples"] == 40 and b["seed"] == 5 and b["stable_threshold"] == 0.8
for g in r["groups"]:
    gb = g["bootstrap"]
    assert abs(sum(gb["choice_frequency"].values()) - 1) < 1e-9
    assert gb["choice_agreement"] == gb["choice_frequency"][g["choice"]]
    assert gb["noisy"] == (gb["choice_agreement"] < 0.8)
    for lo, hi in gb["score_interval"].values():
        assert 0 <= lo <= hi
with h5py.File(sys.argv[1] + "/a.h5") as f:
    assert f["groups/window_scores"].shape == (3, 2, 3) and f.attrs["format_version"] == 2
    assert f["bootstrap/score_interval"].shape == (3, 2, 2) and f["bootstrap/choice_frequency"].shape == (3, 3)
    assert list(f["bootstrap/noisy"][:]) == [int(g["bootstrap"]["noisy"]) for g in r["groups"]]
PY
expect "--bootstrap needs per-window scores" "holds no per-window scores" \
    $AQ search --scores "$tmp/nw.h5" --budget 6 --bootstrap 10
$AQ search --scores "$tmp/nw.h5" --budget 6 >/dev/null 2>&1 && pass "files without per-window scores still search" ||
    fail "search of a version-1 style file"

# score keeps each window's contribution; their sum is the score (up to rounding)
M=tests/fixtures/qwen3-vl-tiny
$AQ score $M --data tests/fixtures/qwen3_vl_tiny_ids.npy --num-samples 3 --seq-len 16 --method kl --format w4a8,fp8 \
    --device cpu --out "$tmp/s.h5" >/dev/null 2>&1 || fail "score"
python3 - "$tmp/s.h5" <<'PY' && pass "score writes window scores summing to the scores" || fail "window scores"
import sys
import h5py, numpy as np
with h5py.File(sys.argv[1]) as f:
    w, s = f["groups/window_scores"][:], f["groups/score"][:]
    assert w.shape == s.shape + (3,), (w.shape, s.shape)
    assert np.allclose(w.sum(axis=2), s, rtol=1e-12, atol=0) and (w >= 0).all()
PY

# The checker tests/test_gpu_windows.sh runs on GPU scores, on the CPU's: the MoE fixture with one format (its
# /groups/score is [groups], its window scores [groups, 1, windows]) and two, kl and gradient; and it must
# reject a file whose totals are not its windows' sums.
E=tests/fixtures/qwen3-moe-tiny
for method in kl gradient; do
    for fm in w4a8 w4a8,nvfp4; do
        $AQ score $E --data tests/fixtures/qwen3_moe_tiny_ids.npy --seq-len 32 --method $method --format $fm \
            --device cpu --out "$tmp/e.h5" >/dev/null 2>&1 || fail "MoE $method $fm score"
        python3 tests/window_check.py "$tmp/e.h5" "$tmp/e.h5" 0.02 >/dev/null &&
            pass "window_check: MoE $method $fm windows sum to the totals" || fail "window_check MoE $method $fm"
    done
done
python3 - "$tmp/e.h5" "$tmp/e_bad.h5" <<'PY'
import shutil, sys
import h5py
shutil.copy(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], "r+") as f:
    f["groups/score"][0, 0] *= 1.001
PY
python3 tests/window_check.py "$tmp/e_bad.h5" >/dev/null 2>&1 && fail "window_check took totals off their windows' sums" ||
    pass "window_check rejects totals that are not their windows' sums"

# Calibration domains (README §7, §8): score --data NAME=FILE repeated, search --objective
"$TB" --write-domains "$tmp/d.h5" || fail "writing the domains case"
for o in max mean weights:code=0.8,prose=0.2; do
    $AQ search --scores "$tmp/d.h5" --budget 6.4 --bits modelopt --objective $o --out "$tmp/$o.json" --h5 "$tmp/$o.h5" \
        >"$tmp/o.$o" 2>&1 || fail "search --objective $o: $(cat "$tmp/o.$o")"
done
python3 - "$tmp" <<'PY' && pass "objectives: recipes and predicted loss per domain" || fail "objectives JSON"
import json, sys
t = sys.argv[1]
mx, mn = json.load(open(t + "/max.json")), json.load(open(t + "/mean.json"))
assert mx["objective"] == "max" and set(mx["predicted_loss"]) == {"code", "prose"}
assert abs(mx["predicted_score"] - max(mx["predicted_loss"].values())) < 1e-9
assert abs(mn["predicted_score"] - sum(mn["predicted_loss"].values()) / 2) < 1e-9
# max never has a worse worst domain than mean, mean never a worse average than max
assert max(mx["predicted_loss"].values()) <= max(mn["predicted_loss"].values()) + 1e-12
assert sum(mn["predicted_loss"].values()) <= sum(mx["predicted_loss"].values()) + 1e-12
PY
grep -q "objective max, predicted loss per window code" "$tmp/o.max" && pass "search prints each domain's loss" ||
    fail "domain losses line: $(cat "$tmp/o.max")"
expect "--objective needs domains" "needs a scores file with calibration domains" \
    $AQ search --scores "$tmp/w.h5" --budget 6 --objective max
expect "--objective names a known domain" "no domain 'chat'" \
    $AQ search --scores "$tmp/d.h5" --budget 6.4 --objective weights:chat=1
expect "--objective bad weight" "must be a finite number >= 0" \
    $AQ search --scores "$tmp/d.h5" --budget 6.4 --objective weights:code=-1
expect "several --data are NAME=FILE" "must each be NAME=FILE" \
    $AQ score $M --data tests/fixtures/qwen3_vl_tiny_ids.npy --data b=tests/fixtures/qwen3_vl_tiny_ids.npy --method kl
expect "domain names unique" "given twice" \
    $AQ score $M --data a=tests/fixtures/qwen3_vl_tiny_ids.npy --data a=tests/fixtures/qwen3_vl_tiny_ids.npy --method kl
$AQ score $M --data a=tests/fixtures/qwen3_vl_tiny_ids.npy --data bb=tests/fixtures/qwen3_vl_tiny_ids.npy --num-samples 2 \
    --seq-len 16 --method kl --format w4a8,fp8 --device cpu --out "$tmp/sd.h5" >/dev/null 2>&1 || fail "score with domains"
python3 - "$tmp/sd.h5" <<'PY' && pass "score --data NAME=FILE: one file, each domain's scores" || fail "domains file"
import sys
import h5py, numpy as np
with h5py.File(sys.argv[1]) as f:
    assert [n.decode() for n in f["domains/name"][:]] == ["a", "bb"] and list(f["domains/num_samples"][:]) == [2, 2]
    d, s, w = f["domains/score"][:], f["groups/score"][:], f["groups/window_scores"][:]
    assert f.attrs["num_samples"] == 4 and w.shape[2] == 4
    assert np.allclose(d.sum(axis=0), s, rtol=1e-12) and np.array_equal(d[0], d[1])  # the same windows twice
PY
$AQ search --scores "$tmp/sd.h5" --budget 6 --objective max --bootstrap 10 >"$tmp/sdo" 2>&1 &&
    grep -q "bootstrap: 10 resamples" "$tmp/sdo" && pass "bootstrap under --objective max (domains resampled apart)" ||
    fail "bootstrap with domains: $(cat "$tmp/sdo")"

# The scores JSON carries the domains and per-window scores as the HDF5 does (README §8)
$AQ score $M --data a=tests/fixtures/qwen3_vl_tiny_ids.npy --data bb=tests/fixtures/qwen3_vl_tiny_ids.npy --num-samples 2 \
    --seq-len 16 --method kl --format w4a8,fp8 --device cpu --disabled-layers '*layers.1.mlp*' --out "$tmp/sj.h5" \
    --json "$tmp/sj.json" >/dev/null 2>&1 || fail "score --json with domains"
python3 - "$tmp/sj.h5" "$tmp/sj.json" <<'PY' && pass "scores JSON: domains and window scores equal the HDF5's" || fail "scores JSON domains"
import json, sys
import h5py, numpy as np
j = json.load(open(sys.argv[2]))
with h5py.File(sys.argv[1]) as f:
    fm = f.attrs["format"].decode().split(",")
    assert j["format_version"] == 2 and [(d["name"], d["num_samples"]) for d in j["domains"]] == [("a", 2), ("bb", 2)]
    w, d, dis = f["groups/window_scores"][:], f["domains/score"][:], f["groups/disabled"][:]
    assert dis.any()
    for g, grp in enumerate(j["groups"]):
        if dis[g]:
            assert all(v is None for v in grp["window_scores"].values())
            assert all(v is None for s in grp["domain_scores"].values() for v in s.values())
            continue
        for k, name in enumerate(fm):
            assert grp["window_scores"][name] == list(w[g, k]), (g, name)
            assert [grp["domain_scores"][dn][name] for dn in ("a", "bb")] == list(d[:, g, k])
PY

# A run resumed from --checkpoint keeps its per-window scores (bit-identical to an unbroken run's)
$AQ score $M --data tests/fixtures/qwen3_vl_tiny_ids.npy --seq-len 16 --method kl --format w4a8 --device cpu \
    --out "$tmp/ck_full.h5" >/dev/null 2>&1
sh -c '"$@" >/dev/null 2>&1; true' sh env AUTOQ_TEST_ABORT_AFTER=2 $AQ score $M --data tests/fixtures/qwen3_vl_tiny_ids.npy \
    --seq-len 16 --method kl --format w4a8 --device cpu --checkpoint "$tmp/ck.json" --out "$tmp/ck_res.h5" 2>/dev/null
$AQ score $M --data tests/fixtures/qwen3_vl_tiny_ids.npy --seq-len 16 --method kl --format w4a8 --device cpu \
    --checkpoint "$tmp/ck.json" --out "$tmp/ck_res.h5" >/dev/null 2>"$tmp/err" || fail "resume: $(cat "$tmp/err")"
python3 - "$tmp/ck_full.h5" "$tmp/ck_res.h5" <<'PY' && pass "resumed --checkpoint keeps per-window scores" ||
import sys
import h5py, numpy as np
with h5py.File(sys.argv[1]) as a, h5py.File(sys.argv[2]) as b:
    assert np.array_equal(a["groups/window_scores"][:], b["groups/window_scores"][:])
    assert np.array_equal(a["groups/score"][:], b["groups/score"][:])
PY
    fail "resumed window scores"
$AQ search --scores "$tmp/ck_res.h5" --budget 5 --bootstrap 5 >/dev/null 2>&1 && pass "bootstrap on resumed scores" ||
    fail "bootstrap on resumed scores"

# Domains with GPTQ: each domain's GPTQ weights come from its own windows, so its scores are a plain GPTQ
# score of that domain's file alone
python3 -c "import numpy as np, sys; a = np.load(sys.argv[1]); np.save(sys.argv[2], a[:1]); np.save(sys.argv[3], a[1:])" \
    tests/fixtures/qwen3_vl_tiny_ids.npy "$tmp/g1.npy" "$tmp/g2.npy"
G="--seq-len 16 --method kl --format w4a8 --device cpu --quantizer gptq"
$AQ score $M --data one="$tmp/g1.npy" --data two="$tmp/g2.npy" $G --out "$tmp/gd.h5" >/dev/null 2>"$tmp/err" ||
    fail "GPTQ domains: $(tail -2 "$tmp/err")"
$AQ score $M --data "$tmp/g1.npy" $G --out "$tmp/g1.h5" >/dev/null 2>&1
$AQ score $M --data "$tmp/g2.npy" $G --out "$tmp/g2.h5" >/dev/null 2>&1
python3 - "$tmp" <<'PY' && pass "GPTQ domains: per-domain GPTQ, each domain's scores its own run's" || fail "GPTQ domains"
import sys
import h5py, numpy as np
t = sys.argv[1]
with h5py.File(t + "/gd.h5") as f, h5py.File(t + "/g1.h5") as a, h5py.File(t + "/g2.h5") as b:
    assert f.attrs["quantizer"] == b"gptq"
    d = f["domains/score"][:]
    assert np.array_equal(d[0].ravel(), a["groups/score"][:].ravel())
    assert np.array_equal(d[1].ravel(), b["groups/score"][:].ravel())
    assert not np.array_equal(d[0], d[1])  # different data, different GPTQ weights
PY
