#!/usr/bin/env bash
# Runs every test binary and shell test; prints the closing "N passed, N failed" line.
set -u
build=${1:-build}
log=$(mktemp)
status=0
for t in "$build"/tests/test_*; do
    [ -x "$t" ] || continue
    echo "== $(basename "$t")"
    "$t" 2>&1 | tee -a "$log" || true
    # A crash or non-zero exit without a FAIL line still counts as a failure.
    rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ] && ! grep -q "^FAIL" "$log"; then echo "FAIL $(basename "$t"): exit status $rc" | tee -a "$log"; fi
done
for t in tests/test_*.sh; do
    [ -f "$t" ] || continue
    echo "== $(basename "$t")"
    bash "$t" 2>&1 | tee -a "$log" || true
done
pass=$(grep -c '^PASS' "$log")
fail=$(grep -c '^FAIL' "$log")
skip=$(grep -c '^SKIP' "$log")
rm -f "$log"
[ "$fail" -eq 0 ] || status=1
[ "$pass" -gt 0 ] || status=1
echo "$pass passed, $fail failed, $skip skipped"
exit $status
