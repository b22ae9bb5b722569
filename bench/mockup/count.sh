#!/bin/sh
# Instructions per unit of work, from callgrind: each workload alone, warmed
# up, then N units counted inside bench's counted() (bench.c, --count).
#   count.sh VARIANT...      e.g. count.sh v3 noval cache
# Prints a Markdown table: instructions per pair64 pair, tree17 tree, wide
# child (trees of 1,000) and trace root, for each variant and for malloc
# and talloc (run once, under the first variant's bench).
set -eu
cd "$(dirname "$0")"
out=$(mktemp)
trap 'rm -f "$out"' EXIT

per_unit() { # bench workload side n
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=counted --callgrind-out-file="$out" \
        "$1" --count "$2" "$3" "$4" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p' |
        awk -v n="$4" '{ printf "%.1f", $1 / n }'
}

row() { # label bench side
    label=$1 bench=$2 side=$3
    printf '| %s' "$label"
    for w in "pair64 100000" "tree17 10000" "wide 200000" "trace 100000"; do
        # shellcheck disable=SC2086
        set -- $w
        printf ' | %s' "$(per_unit "$bench" "$1" "$side" "$2")"
    done
    printf ' |\n'
}

echo "| side | pair64 (per pair) | tree17 (per tree) | wide 1k (per child) | trace (per root) |"
echo "|---|---:|---:|---:|---:|"
first=$1
for v in "$@"; do
    row "mock-up $v" "out/$v/bench" mapi
done
row malloc "out/$first/bench" malloc
row talloc "out/$first/bench" talloc
