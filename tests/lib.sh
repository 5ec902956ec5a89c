# Sourced by tests/test_*.sh. SUITE prefixes every PASS/FAIL line that tests/run.sh counts.
AQ=${AQ:-./autoq}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass() { echo "PASS $SUITE: $1"; }
fail() { echo "FAIL $SUITE: $1"; }

# expect NAME FRAGMENT COMMAND...: the command must exit 2 with FRAGMENT in its message.
expect() {
    local name=$1 want=$2
    shift 2
    local out rc
    out=$("$@" 2>&1 >/dev/null)
    rc=$?
    if [ "$rc" -eq 2 ] && grep -qiF -- "$want" <<<"$out"; then pass "$name"; else fail "$name: exit $rc: $out (wanted exit 2 and '$want')"; fi
}
