#!/bin/sh
# make test's bench-smoke: the benchmark builds, runs every workload in its
# tiny --smoke mode and prints every row. Timings are not looked at: a
# benchmark reports, it does not assert.
set -eu
bench=$1
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$bench" --smoke >"$out" 2>&1 || { cat "$out"; echo "bench-smoke: the bench failed"; exit 1; }
failed=0
for row in 'pair64' 'tree17 (per tree)' 'wide 1k' 'wide 1/10 max' 'wide max' 'wide flatness' 'trace (per root)' \
    'tree17, 1 thread' 'tree17, 2 threads at once' 'tree17 2-thread speed-up' 'tree17 freed on another thread' \
    'memory: live 32-byte roots' 'memory: live 32-byte children' \
    'cross-thread free, 2 busy threads' 'cross-thread free, 8 busy threads' 'cross-thread free, 16 busy threads' \
    'cross-thread free, 64 busy threads' 'foreign-pointer free, 8 busy threads' 'double free, 8 busy threads' \
    'child free, 8 busy threads' "cross-thread free of an older thread's tree" \
    "MAPIAllocateMore on an older thread's tree" 'foreign-pointer free (per call)' 'trace, full replay (per root)' \
    'burst of 32-byte roots, then freed' 'burst of 32-byte children, then freed'; do
    grep -qF "| $row" "$out" || { echo "bench-smoke: no row \"$row\""; failed=1; }
done
[ "$failed" -eq 0 ] || { cat "$out"; exit 1; }
echo "bench-smoke: the bench builds and prints all 26 rows"
