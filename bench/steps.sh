# Sourced by the benches that run timed steps within one time budget (bench/moe_bench.sh,
# bench/hybrid_bench.sh). Needs: budget (seconds), t_start (date +%s at the start), out (OUTDIR), PY, AQ,
# dev (cuda or cpu).
left() { echo $((budget - ($(date +%s) - t_start))); }
# step NAME CAP CMD...: CMD under a time-out of CAP seconds or what is left of the budget, less 15 s
# for the report; stdout (dropped when QUIET_STDOUT=1) and stderr to OUTDIR/NAME.log, wall seconds to
# OUTDIR/NAME.wall. CMD runs directly under timeout, so a time-out ends CMD itself.
step() {
    local name=$1 cap=$2 t
    shift 2
    t=$(($(left) - 15))
    [ "$t" -gt "$cap" ] && t=$cap
    if [ "$t" -lt 10 ]; then
        echo "   $name: skipped, the time budget is spent"
        return 1
    fi
    local t0 rc
    t0=$(date +%s.%N)
    if [ "${QUIET_STDOUT:-0}" = 1 ]; then
        timeout -k 5 "$t" "$@" 2>"$out/$name.log" >/dev/null
    else
        timeout -k 5 "$t" "$@" >"$out/$name.log" 2>&1
    fi
    rc=$?
    $PY -c "print(round($(date +%s.%N) - $t0, 1))" >"$out/$name.wall"
    if [ $rc -ne 0 ]; then
        echo "   $name: exit $rc$([ $rc -eq 124 ] && echo " (time-out after ${t}s)"); last lines of $out/$name.log:"
        tail -3 "$out/$name.log" | cut -c1-300 | sed 's/^/      /'
    else
        echo "   $name: $(cat "$out/$name.wall") s"
    fi
    return $rc
}
# autoq scores to OUTDIR/NAME.json; its table (stdout) is dropped, its stderr kept in NAME.log
aq_score() { # NAME CAP MODEL IDS METHOD ARGS...
    local name=$1 cap=$2 m=$3 ids=$4 method=$5
    shift 5
    QUIET_STDOUT=1 step "$name" "$cap" "$AQ" score "$m" --data "$ids" --method "$method" --device "$dev" \
        --json "$out/$name.json" "$@"
}

