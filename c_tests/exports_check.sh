#!/bin/sh
# The library's ABI is exactly the committed list: `nm -D --defined-only` of
# libmapi32.so must name the symbols of exports.txt and nothing else (no Rust
# internals, no stray #[no_mangle] helper), the list may hold only MAPI names
# and mapi32_ extensions, and each listed function must be declared in
# mapix.h and defined in libmapi32.a, so every way of linking offers it.
# Each export carries the version node mapi32.map gives it, and that script
# names exactly these functions, every MAPI one under MAPI32_1 (SPEC §6:
# the node of Kopano's libmapi.so) and no extension there.
# usage: exports_check.sh EXPORTS_TXT MAPI32_MAP LIBMAPI32_SO LIBMAPI32_A MAPIX_H
set -eu
list=$1 map=$2 so=$3 archive=$4 header=$5
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
fail() { echo "exports-check: $*" >&2; failed=1; }

# The committed names: comments and blank lines dropped, sorted.
sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$list" | LC_ALL=C sort >"$work/expected"
[ -s "$work/expected" ] || fail "$list lists no symbol"
bad=$(grep -Ev '^(MAPI[A-Za-z0-9]+|mapi32_[a-z0-9_]+)$' "$work/expected" || true)
[ -z "$bad" ] || fail "$list may hold only MAPI... and mapi32_... names, not: $(echo $bad)"
dups=$(uniq -d "$work/expected")
[ -z "$dups" ] || fail "$list names twice: $(echo $dups)"

# "name node" for each global of the version script (its comments are whole
# lines of /* ... */).
awk '
    /^[[:space:]]*\/\*/ { comment = 1 }
    comment { if (/\*\//) comment = 0; next }
    /^[A-Za-z0-9_.]+[[:space:]]*\{/ { node = $1; global = 0; next }
    /global:/ { global = 1; next }
    /local:/ || /^[[:space:]]*\}/ { global = 0; next }
    global && NF { name = $1; sub(/;$/, "", name); print name, node }
' "$map" | LC_ALL=C sort >"$work/map"
cut -d' ' -f1 "$work/map" >"$work/map-names"
if ! diff -u "$work/expected" "$work/map-names" >"$work/diff"; then
    fail "$map does not give a node to exactly the names of $list (- listed only there, + only in $map):"
    tail -n +3 "$work/diff" | grep '^[-+]' >&2
fi
misplaced=$(awk '($1 ~ /^MAPI/) != ($2 == "MAPI32_1") { print $1 " in " $2 }' "$work/map")
[ -z "$misplaced" ] || fail "$map: MAPI functions, and only they, belong in MAPI32_1; not $(echo $misplaced)"

# "name node" for each symbol the shared library defines ("name@@NODE"; an
# unversioned name gets node "none"), without the nodes' own definitions,
# which nm lists as absolute symbols.
nm -D --defined-only "$so" >"$work/nm" || { echo "exports-check: nm -D failed on $so" >&2; exit 1; }
awk 'NF && $(NF - 1) != "A" { print $NF }' "$work/nm" |
    awk -F'@@?' '{ print $1, (NF > 1 ? $2 : "none") }' | LC_ALL=C sort -u >"$work/versioned"
cut -d' ' -f1 "$work/versioned" >"$work/actual"
if ! diff -u "$work/expected" "$work/actual" >"$work/diff"; then
    fail "$so does not export exactly $list (- listed but not exported, + exported but not listed):"
    tail -n +3 "$work/diff" | grep '^[-+]' >&2
elif ! diff -u "$work/map" "$work/versioned" >"$work/diff"; then
    fail "$so's version nodes are not those of $map (- $map, + $so):"
    tail -n +3 "$work/diff" | grep '^[-+]' >&2
fi

# readelf, not nm, for the archive: cargo's carries LLVM bitcode beside the
# machine code, and nm hands such objects to whatever LLVM plugin binutils
# finds, which may be too old to read them and then lists nothing.
readelf -sW "$archive" | awk '$5 == "GLOBAL" && $7 != "UND" { print $8 }' | LC_ALL=C sort -u >"$work/archive"
while read -r name; do
    grep -qx "$name" "$work/archive" || fail "$archive does not define $name"
    grep -Eq "[^A-Za-z0-9_]$name[[:space:]]*\(" "$header" || fail "$header does not declare $name"
done <"$work/expected"

[ "$failed" = 0 ] || exit 1
echo "exports-check: $so exports exactly the $(wc -l <"$work/expected") names of $list, under the nodes of $map"
