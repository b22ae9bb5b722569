#!/bin/sh
# "No input makes the library panic" (STYLE.md, the boundary), held by the
# machine code: in the release libmapi32.so, nothing reachable from an export
# or from the crate's own functions (its load-time constructor and fork
# handlers are reached through no export) may lead to a Rust panic routine.
# panic=abort is only the backstop.
#
# The .so carries std's panic machinery either way (std is linked in); what
# matters is whether our code can get there. The walk follows every symbol an
# instruction names: direct calls and jumps, addresses loaded with lea, calls
# through the GOT (rustc calls even local functions that way), and the
# function pointers inside any data object so referenced (vtables, tables of
# handlers). It over-approximates: a reference counts as a call.
# usage: check-no-panic.sh LIBMAPI32_SO EXPORTS_TXT
set -eu
library=$1
exports=$2
OBJDUMP=${OBJDUMP:-objdump}
NM=${NM:-nm}
READELF=${READELF:-readelf}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$NM" -S -C --defined-only "$library" >"$work/symbols"
"$READELF" -rW "$library" >"$work/relocations"
"$OBJDUMP" -d -C --no-show-raw-insn "$library" >"$work/disassembly"

awk -v exports="$exports" '
function hex(digits,    value, i) {
    value = 0
    for (i = 1; i <= length(digits); i++) value = value * 16 + index("0123456789abcdef", substr(digits, i, 1)) - 1
    return value
}
# Fields from the nth on: demangled names contain spaces.
function rest(n,    text) {
    text = $0
    while (--n > 0) sub(/^[ \t]*[^ \t]+[ \t]+/, "", text)
    return text
}
# The symbol in "<name>" or "<name+0x1f>" at the end of a line.
function symbol(line) {
    line = substr(line, index(line, "<") + 1)
    sub(/>:?$/, "", line)
    sub(/\+0x[0-9a-f]+$/, "", line)
    return line
}
function refer(from, to) { refers[from] = refers[from] SUBSEP to }
# core::panicking::*, std::panicking::*, rust_begin_unwind, the unwrap and
# expect failures, the out-of-bounds and slice-index failures, alloc failures.
function is_panic(name) {
    return name ~ /panic|begin_unwind|unwrap_failed|expect_failed|_fail(_rt)?$|capacity_overflow|handle_alloc_error|assert_failed/
}

# nm -S: "address [size] type name".
FILENAME == ARGV[1] {
    if ($3 ~ /^[A-Za-z]$/) { size = hex($2); type = $3; name = rest(4) } else { size = 0; type = $2; name = rest(3) }
    address = hex($1)
    if (type ~ /[tTwWiI]/ || !(address in name_at)) name_at[address] = name
    if (type ~ /[dDbBrRvV]/ && size > 0) { data_start[++objects] = address; data_end[objects] = address + size; data_name[objects] = name }
    next
}
# readelf -r: each slot the loader fills with an address, and what it points to.
FILENAME == ARGV[2] && $3 ~ /^R_/ {
    slot = hex($1)
    if ($3 ~ /_RELATIVE$/) { target = name_at[hex($4)]; if (target == "") next }
    else if ($5 != "") { target = $5; sub(/@.*/, "", target) }
    else next
    slot_target[slot] = target
    for (i = 1; i <= objects; i++) if (data_start[i] <= slot && slot < data_end[i]) refer(data_name[i], target)
    next
}
FILENAME == ARGV[2] { next }
/^[0-9a-f]+ <.*>:$/ {
    current = symbol($0)
    defined[current] = 1
    if (current ~ /^<?mapi32::/) root[++roots] = current
    next
}
/\t[a-z]/ && /<[^>]*>$/ {
    target = symbol($0)
    # "# 510f8 <_DYNAMIC+0x2c0>": an address the instruction loads or calls
    # through; a GOT slot stands for the function it holds.
    if (match($0, /# [0-9a-f]+ </)) {
        address = hex(substr($0, RSTART + 2, RLENGTH - 4))
        if (address in slot_target) target = slot_target[address]
    }
    if (target != current) refer(current, target)
}
END {
    while ((getline line < exports) > 0)
        if (line !~ /^#/ && line != "") {
            if (!(line in defined)) { print "no-panic: export " line " not found in the library"; failed = 1 }
            root[++roots] = line
        }
    # Breadth first, so the path printed to each use of a panic routine is a
    # shortest one.
    for (i = 1; i <= roots; i++) if (!(root[i] in seen)) { seen[root[i]] = 1; queue[++tail] = root[i] }
    for (head = 1; head <= tail; head++) {
        name = queue[head]
        n = split(refers[name], targets, SUBSEP)
        for (i = 2; i <= n; i++) {
            if (is_panic(targets[i])) {
                if ((name, targets[i]) in reported) continue
                reported[name, targets[i]] = 1
                path = name
                for (step = name; step in parent; ) { step = parent[step]; path = step "\n    -> " path }
                print "no-panic: reaches a panic routine:\n    " path "\n    -> " targets[i]
                failed = 1
            } else if (!(targets[i] in seen)) {
                seen[targets[i]] = 1; parent[targets[i]] = name; queue[++tail] = targets[i]
            }
        }
    }
    if (!failed) print "no-panic: " tail " symbols reachable from the exports and the crate'"'"'s own functions; none is a panic routine"
    exit failed
}' "$work/symbols" "$work/relocations" "$work/disassembly"
