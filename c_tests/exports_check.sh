#!/bin/sh
# The library's ABI is exactly the committed list: `nm -D --defined-only` of
# libmapi32.so must name the symbols of exports.txt and nothing else (no Rust
# internals, no stray #[no_mangle] helper), the list may hold only MAPI names
# and mapi32_ extensions, and each listed function must be declared in
# mapix.h and defined in libmapi32.a, so every way of linking offers it.
# usage: exports_check.sh EXPORTS_TXT LIBMAPI32_SO LIBMAPI32_A MAPIX_H
set -eu
list=$1 so=$2 archive=$3 header=$4
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

# What the shared library defines, symbol names only ("name@@VERSION" → name).
nm -D --defined-only "$so" >"$work/nm" || { echo "exports-check: nm -D failed on $so" >&2; exit 1; }
awk 'NF { print $NF }' "$work/nm" | sed 's/@.*//' | LC_ALL=C sort -u >"$work/actual"
if ! diff -u "$work/expected" "$work/actual" >"$work/diff"; then
    fail "$so does not export exactly $list (- listed but not exported, + exported but not listed):"
    tail -n +3 "$work/diff" | grep '^[-+]' >&2
fi

# readelf, not nm, for the archive: its objects carry LLVM bitcode beside the
# machine code, and nm hands them to whatever LLVM plugin binutils finds,
# which may be too old to read them and then lists nothing.
readelf -sW "$archive" | awk '$5 == "GLOBAL" && $7 != "UND" { print $8 }' | LC_ALL=C sort -u >"$work/archive"
while read -r name; do
    grep -qx "$name" "$work/archive" || fail "$archive does not define $name"
    grep -Eq "[^A-Za-z0-9_]$name[[:space:]]*\(" "$header" || fail "$header does not declare $name"
done <"$work/expected"

[ "$failed" = 0 ] || exit 1
echo "exports-check: $so exports exactly the $(wc -l <"$work/expected") names of $list"
