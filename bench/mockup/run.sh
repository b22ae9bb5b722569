#!/bin/sh
# The whole measurement of the registry-v3 mock-up (README.md):
#   ./run.sh [RUNS]      default 3
# builds every variant, runs test.c, then RUNS full benchmark runs of each
# variant (variants interleaved run by run, so the machine's drift falls on
# all alike), and callgrind's instruction counts. Raw outputs go to
# out/runs/; the summary (median over the runs of each run's median ratio,
# with the lowest and highest) is printed and saved as out/summary.md.
set -eu
cd "$(dirname "$0")"
runs=${1:-3}
variants="v3 noval chunk64 cache cache256 cache64x8 lazy floor" # the Makefile's VARIANTS
make -s all
./out/test
for v in chunk64 cache cache256 cache64x8 lazy; do
    LD_LIBRARY_PATH=out/$v ./out/test >/dev/null || { echo "run.sh: test fails under $v" >&2; exit 1; }
done
mkdir -p out/runs
rm -f out/runs/*.txt
r=1
while [ "$r" -le "$runs" ]; do
    for v in $variants; do
        echo "run $r: $v"
        ./out/"$v"/bench >out/runs/"$v"-"$r".txt
    done
    r=$((r + 1))
done

# One line per variant and row: the ratios of the runs, their median, low, high.
summary() { # column: 5 = mock/malloc, 6 = mock/talloc, 3 = mock-up ns
    for v in $variants; do
        for row in 'pair64' 'tree17' 'wide 1k' 'wide 100k' 'wide 1M' 'trace' 'memory: live 32-byte roots' \
            'memory: live 32-byte children' 'memory: live 32-byte root + 1 child'; do
            cat out/runs/"$v"-*.txt | grep -F "| $row " | awk -F'|' -v col="$1" -v v="$v" -v row="$row" '
                { x = $(col + 1); gsub(/[ B+×]/, "", x); a[n++] = x + 0 }
                END {
                    for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
                    m = n % 2 ? a[int(n / 2)] : (a[n / 2 - 1] + a[n / 2]) / 2
                    printf "| %s | %s | %.2f | %.2f–%.2f |\n", v, row, m, a[0], a[n - 1]
                }'
        done
    done
}
{
    echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "mock-up / malloc (memory rows: mock-up − malloc, bytes), median of $runs runs and [low–high]:"
    echo
    echo "| variant | row | median | low–high |"
    echo "|---|---|---:|---:|"
    summary 5
    echo
    echo "mock-up / talloc:"
    echo
    echo "| variant | row | median | low–high |"
    echo "|---|---|---:|---:|"
    summary 6 | grep -E '\| (pair64|tree17) '
    echo
    echo "instructions per unit (callgrind):"
    echo
    ./count.sh $variants
} | tee out/summary.md
