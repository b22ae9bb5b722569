#!/bin/sh
# Checks MAPI32_DEBUG (SPEC §4) on c_tests/debug_client.c: silent when unset,
# one line per misuse with `warn`, that line then abort() with `abort`, and
# a report of the live roots at exit with `leaks`.
# usage: debug_check.sh PATH/TO/debug_client
set -u
client=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

check() { # name, condition...
    name=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
        echo "PASS $name"
    else
        failed=$((failed + 1))
        echo "FAIL $name"
        sed 's/^/  stderr: /' "$work/err"
    fi
}

# Runs the client with MAPI32_DEBUG set to $1 (unset if "-"); keeps its
# stdout, stderr and exit status.
run() {
    if [ "$1" = "-" ]; then
        env -u MAPI32_DEBUG "$client" >"$work/out" 2>"$work/err"
    else
        MAPI32_DEBUG=$1 "$client" >"$work/out" 2>"$work/err"
    fi
    status=$?
}

# The library's lines only (a shell may add its own "Aborted" notice).
lines() { grep -c '^libmapi32:' "$work/err"; }
has() { grep -q -- "$1" "$work/err"; }

run -
check debug_unset_is_silent [ "$status" -eq 0 -a "$(lines)" -eq 0 ]
run ""
check debug_empty_is_silent [ "$status" -eq 0 -a "$(lines)" -eq 0 ]

run warn
check debug_warn_one_line_per_misuse [ "$status" -eq 0 -a "$(lines)" -eq 5 ]
check debug_warn_names_free_of_child has "^libmapi32: MAPIFreeBuffer(0x[0-9a-f]*): a child block"
check debug_warn_names_double_free [ "$(grep -c '^libmapi32: MAPIFreeBuffer(0x[0-9a-f]*): not a live root' "$work/err")" -eq 2 ]
check debug_warn_names_unknown_parent has "^libmapi32: MAPIAllocateMore(0x[0-9a-f]*): not a live block"
check debug_warn_names_null_out has "^libmapi32: MAPIAllocateBuffer(0x0*): the output pointer is NULL"
check debug_warn_has_no_leak_report sh -c "! grep -q 'still live' '$work/err'"

run abort
check debug_abort_stops_at_first_misuse [ "$status" -ne 0 -a "$(lines)" -eq 1 ]
check debug_abort_is_sigabrt [ "$status" -eq 134 ]
check debug_abort_line_comes_first has "^libmapi32: MAPIFreeBuffer(0x[0-9a-f]*): a child block"

run leaks
root=$(sed -n 's/^root \(0x[0-9a-f]*\) leaked.*/\1/p' "$work/out")
leaked=$(sed -n 's/.* leaked \(0x[0-9a-f]*\)$/\1/p' "$work/out")
check debug_leaks_counts_roots_and_bytes has "^libmapi32: 2 root(s) still live at exit, 1164 bytes with their children$"
check debug_leaks_lists_largest_first sh -c "sed -n 2p '$work/err' | grep -q 'root 0x0*${root#0x} of 1000 bytes, 1124 bytes with its children'"
check debug_leaks_lists_every_root sh -c "sed -n 3p '$work/err' | grep -q 'root 0x0*${leaked#0x} of 40 bytes, 40 bytes with its children'"
check debug_leaks_alone_warns_nothing [ "$(lines)" -eq 3 ]

run " warn , leaks "
check debug_words_combine [ "$status" -eq 0 -a "$(lines)" -eq 8 ]

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
