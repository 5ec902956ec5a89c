# Sourced by tests/test_*.sh. SUITE prefixes every PASS/FAIL line that tests/run.sh counts.
AQ=${AQ:-./autoq}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass() { echo "PASS $SUITE: $1"; }
fail() { echo "FAIL $SUITE: $1"; }

# skip_without_model DIR: the suite skips (one SKIP line, exit 0) when DIR holds no config.json.
skip_without_model() {
    [ -f "$1/config.json" ] && return 0
    echo "SKIP $SUITE: $1 missing"
    exit 0
}

# skip_without_gpu WHAT COMMAND...: the suite skips when COMMAND (a one-window run on the GPU) fails: no CUDA
# device, or a build without nvcc.
skip_without_gpu() {
    local what=$1
    shift
    "$@" >/dev/null 2>&1 && return 0
    echo "SKIP $SUITE: $what on the GPU (no CUDA device, or built without nvcc)"
    exit 0
}

# expect NAME FRAGMENT COMMAND...: the command must exit 2 with FRAGMENT in its message.
expect() {
    local name=$1 want=$2
    shift 2
    local out rc
    out=$("$@" 2>&1 >/dev/null)
    rc=$?
    if [ "$rc" -eq 2 ] && grep -qiF -- "$want" <<<"$out"; then pass "$name"; else fail "$name: exit $rc: $out (wanted exit 2 and '$want')"; fi
}

# domain_scores MODEL [FORMATS]: two scoring domains (code, prose: 3 windows of 64 tokens each, $tmp/sa.npy,
# sb.npy) and their held-out windows ($tmp/ha.npy, hb.npy: 2 each) from the tiny calibration ids, and the domains'
# kl scores of FORMATS (w4a8, nvfp4 and fp8 unless given) on the CPU in $tmp/dom.h5 (search --objective max's
# tests).
domain_scores() {
    python3 - "$tmp" <<'PY' || fail "domain windows"
import sys
import numpy as np
a = np.load("tests/fixtures/calib200k_tiny.npy")[0] % 512
for name, at, n in (("sa", 0, 3), ("sb", 10000, 3), ("ha", 30000, 2), ("hb", 40000, 2)):
    np.save(f"{sys.argv[1]}/{name}.npy", a[at:at + 64 * n].reshape(n, 64).astype(np.int32))
PY
    $AQ score "$1" --data code="$tmp/sa.npy" --data prose="$tmp/sb.npy" --method kl --format "${2:-w4a8,nvfp4,fp8}" \
        --device cpu --out "$tmp/dom.h5" >/dev/null 2>&1 || fail "score with domains"
}
