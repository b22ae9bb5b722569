#!/bin/sh
# Runs every case of misuse.c under valgrind (memcheck) and built with
# ASan, against the libmapi32.so the programs were linked with (SPEC §3,
# "Memory and the tools"). Each misuse must be reported by both tools, in
# the words each uses for it (two reads only memcheck can see, below);
# `clean` and `remote-free-idle-owner` must be reported by neither.
#
#   run.sh PLAIN ASAN   PLAIN: misuse.c built plainly (for valgrind);
#                       ASAN: built with -fsanitize=address
set -eu

plain=$1
asan=$2
valgrind=${VALGRIND:-valgrind}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=0

fail() {
    echo "tools: FAIL $*" >&2
    sed 's/^/    /' "$log" | head -20 >&2
    failed=1
}

# A build that silently dropped ASan would pass nothing but `clean`; say so.
nm "$asan" | grep -q ' __asan_init$' || {
    echo "tools: $asan is not built with ASan" >&2
    exit 1
}

# case, what memcheck says of it
for pair in past-root:'Invalid write' past-root-16:'Invalid write' past-child:'Invalid write' \
    past-child-16:'Invalid write' past-big-child:'Invalid write' freed-root:'Invalid read' \
    freed-child:"block of size 64 free'd" past-guest-child:'Invalid write' freed-guest-child:'Invalid read' \
    freed-killed-root:'Invalid read' read-after-remote-free:'Invalid read' read-after-move:'Invalid read'; do
    what=${pair%%:*}
    says=${pair#*:}
    status=0
    "$valgrind" -q --error-exitcode=99 "$plain" "$what" >"$log" 2>&1 || status=$?
    if [ "$status" -eq 99 ] && grep -q "$says" "$log"; then
        echo "tools: valgrind reports $what"
    else
        fail "valgrind did not report $what (exit $status)"
    fi
    status=0
    "$asan" "$what" >"$log" 2>&1 || status=$?
    if [ "$status" -ne 0 ] && grep -q 'ERROR: AddressSanitizer: use-after-poison' "$log"; then
        echo "tools: ASan reports $what"
    else
        fail "ASan did not report $what (exit $status)"
    fi
done

# Children of a tree another thread freed while its owner and the maker of
# its guest children sit idle (or a thread that reallocated its root, and
# made a child after that): memcheck is told of them by the free itself
# (the tree's pool). ASan is told of a child only when the thread that made
# it releases its chunk, at that thread's next call: it cannot see these
# reads (src/region/track.rs), so they are valgrind's alone.
for what in read-child-after-remote-free read-guest-child-after-remote-free read-child-after-moved-tree-freed; do
    status=0
    "$valgrind" -q --error-exitcode=99 "$plain" "$what" >"$log" 2>&1 || status=$?
    if [ "$status" -eq 99 ] && grep -q 'Invalid read' "$log"; then
        echo "tools: valgrind reports $what"
    else
        fail "valgrind did not report $what (exit $status)"
    fi
done

# The same trees, with no misuse: their children were freed with them, so
# memcheck's leak check at exit must not count them lost, in any kind. (It
# may list glibc's own blocks of the idle threads, possibly lost: none was
# made by a MAPI call.)
status=0
"$valgrind" -q --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
    "$plain" remote-free-idle-owner >"$log" 2>&1 || status=$?
if [ "$status" -eq 0 ] && ! grep -q 'MAPIAllocate' "$log"; then
    echo "tools: valgrind finds no leak in remote-free-idle-owner"
else
    fail "valgrind reported remote-free-idle-owner (exit $status)"
fi
status=0
"$asan" remote-free-idle-owner >"$log" 2>&1 || status=$?
if [ "$status" -eq 0 ] && ! grep -q 'AddressSanitizer' "$log"; then
    echo "tools: ASan finds nothing in remote-free-idle-owner"
else
    fail "ASan reported remote-free-idle-owner (exit $status)"
fi

status=0
"$valgrind" -q --error-exitcode=99 "$plain" clean >"$log" 2>&1 || status=$?
if [ "$status" -eq 0 ] && ! grep -q '==[0-9]*==' "$log"; then
    echo "tools: valgrind finds nothing in clean"
else
    fail "valgrind reported clean (exit $status)"
fi
status=0
"$asan" clean >"$log" 2>&1 || status=$?
if [ "$status" -eq 0 ] && ! grep -q 'AddressSanitizer' "$log"; then
    echo "tools: ASan finds nothing in clean"
else
    fail "ASan reported clean (exit $status)"
fi

exit $failed
