#!/bin/sh
# mapi32.dll exports exactly what mapi32.def lists, at its ordinals; each
# stdcall-decorated name is the same function as its plain name; and the
# plain names are exactly exports.txt's, the ABI of libmapi32.so too. For a
# 32-bit x86 DLL, also that every export is stdcall: it pops its arguments.
# usage: exports_check.sh mapi32.dll mapi32.def exports.txt [OBJDUMP]
set -eu
dll=$1
def=$2
exports=$3
objdump=${4:-objdump}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# "ordinal rva name" for each name the DLL exports.
"$objdump" -p "$dll" >"$work/headers"
awk '
    /^Export Address Table -- Ordinal Base/ { base = $NF; in_table = 1; next }
    in_table && /^\t\[ *[0-9]+\] \+base\[ *[0-9]+\] [0-9a-f]+ Export RVA$/ {
        line = $0; gsub(/[][+]/, " ", line); split(line, f, " ")
        rva[f[1]] = f[4]; next
    }
    /^\[Ordinal\/Name Pointer\] Table/ { in_table = 0; in_names = 1; next }
    in_names && /^\t\[ *[0-9]+\] / {
        line = $0; sub(/^\t\[ */, "", line); index_ = line + 0; sub(/^[0-9]+\] /, "", line)
        print base + index_, rva[index_], line; next
    }
    in_names && /^$/ { in_names = 0 }
' "$work/headers" | sort -k 3 >"$work/dll"

# "ordinal name target" for each line of the .def's EXPORTS section.
sed -e 's/;.*//' "$def" | awk '
    /^EXPORTS/ { on = 1; next }
    on && NF {
        name = $1; target = $1; ordinal = ""
        for (i = 2; i <= NF; i++) {
            if ($i == "=") { target = $(i + 1); i++ }
            else if ($i ~ /^@[0-9]+$/) ordinal = substr($i, 2)
        }
        print ordinal, name, target
    }
' | sort -k 2 >"$work/def"

failed=0
fail() {
    echo "exports-check: $*" >&2
    failed=1
}

awk '{ print $1, $3 }' "$work/dll" >"$work/dll_names"
awk '{ print $1, $2 }' "$work/def" >"$work/def_names"
if ! cmp -s "$work/dll_names" "$work/def_names"; then
    fail "$dll does not export what $def lists (ordinal name; < DLL, > .def):"
    diff "$work/dll_names" "$work/def_names" >&2 || true
fi

# Each alias shares its target's address.
while read -r ordinal name target; do
    [ "$name" = "$target" ] && continue
    alias_rva=$(awk -v n="$name" '$3 == n { print $2 }' "$work/dll")
    target_rva=$(awk -v n="$target" '$3 == n { print $2 }' "$work/dll")
    [ -n "$alias_rva" ] && [ "$alias_rva" = "$target_rva" ] ||
        fail "$name (@$ordinal) is not the same function as $target ($alias_rva vs $target_rva)"
done <"$work/def"

# The plain names are the ABI of exports.txt.
grep -v '^#' "$exports" | sed '/^$/d' | sort >"$work/abi"
awk '$2 == $3 { print $2 }' "$work/def" | sort >"$work/plain"
if ! cmp -s "$work/abi" "$work/plain"; then
    fail "the plain names of $def differ from $exports (< exports.txt, > .def):"
    diff "$work/abi" "$work/plain" >&2 || true
fi

# The decorated names native mapi32.dll exports.
for decorated in MAPIAllocateBuffer@8 MAPIAllocateMore@12 MAPIFreeBuffer@4 MAPIReallocateBuffer@12; do
    grep -q " $decorated\$" "$work/dll_names" || fail "$dll lacks $decorated"
done

# On x86 a stdcall function returns with `ret $N`, N the bytes of its
# arguments, where a cdecl one leaves them to the caller (plain `ret`): a
# caller of the other convention then runs with a shifted stack. The DLL's
# symbol table names each export's code _name@N (mingw's stdcall
# decoration); every ret in that code must pop N bytes.
convention=""
if grep -q 'file format pei-i386' "$work/headers"; then
    "$objdump" -d --no-show-raw-insn "$dll" | awk '
        /^[0-9a-f]+ <.*>:$/ { name = substr($2, 2, length($2) - 3); next }
        /\tret/ { sub(/.*\tret[lw]? */, ""); print name, ($0 == "" ? "none" : $0) }
    ' >"$work/rets"
    for name in $(cat "$work/plain"); do
        symbol=$(awk -v n="$name" 'index($1, "_" n "@") == 1 { print $1; exit }' "$work/rets")
        if [ -z "$symbol" ]; then
            fail "$name: no stdcall-decorated code (_$name@N) in $dll's symbols: not stdcall, or the DLL is stripped"
            continue
        fi
        expected=$(printf '$0x%x' "${symbol##*@}")
        wrong=$(awk -v s="$symbol" -v e="$expected" '$1 == s && $2 != e { print $2 }' "$work/rets" | sort -u)
        [ -z "$wrong" ] || fail "$symbol returns with ret $(echo $wrong), not ret $expected: not stdcall"
    done
    convention=", every one stdcall"
fi

[ "$failed" -eq 0 ] || exit 1
echo "exports-check: mapi32.dll exports the $(wc -l <"$work/plain") names of exports.txt and $(($(wc -l <"$work/dll") - $(wc -l <"$work/plain"))) stdcall-decorated aliases, at the ordinals of mapi32.def$convention"
