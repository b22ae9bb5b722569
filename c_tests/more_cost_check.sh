#!/bin/sh
# Proves MAPIAllocateMore is O(1) (SPEC §2) by counting instructions under
# callgrind: the cost per call while building 1,000 children and while
# building 100,000 must stay within MAX_RATIO of each other. A chain walk
# would make the second ~100 times the first.
# usage: more_cost_check.sh PATH/TO/more_cost
set -eu
program=$1
MAX_RATIO=${MAX_RATIO:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

per_call() {
    valgrind --tool=callgrind --callgrind-out-file="$work/out.$1" "$program" "$1" >/dev/null 2>"$work/log.$1" ||
        { cat "$work/log.$1" >&2; exit 1; }
    # The dump taken after the loop holds only the loop's instructions.
    totals=$(grep -h '^totals:' "$work"/out."$1".*)
    echo "$totals" | awk -v n="$1" '{ printf "%.1f\n", $2 / n }'
}

small=$(per_call 1000)
large=$(per_call 100000)
echo "MAPIAllocateMore instructions per call: $small at 1k children, $large at 100k children"
awk -v s="$small" -v l="$large" -v m="$MAX_RATIO" 'BEGIN {
    ratio = l / s
    printf "more_cost: ratio %.2f (limit %s) ... %s\n", ratio, m, (ratio <= m ? "ok" : "FAILED")
    exit !(ratio <= m)
}'
