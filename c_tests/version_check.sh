#!/bin/sh
# SPEC §6: programs linked against Kopano's libmapi.so ask for the MAPI
# functions under the version node MAPI32_1, and LD_PRELOAD=libmapi32.so
# must take every such call without a word from the dynamic linker. (An
# unversioned libmapi32 gets the calls, though glibc may warn "no version
# information available"; one with another node silently gets none.)
#
# CLIENT is preload_client.c linked against a stub MAPI whose exports carry
# MAPI32_1 and whose every call fails (preload_stub.c, mapi32_1_stub.map).
# usage: version_check.sh CLIENT LIBMAPI32_SO [OBJDUMP]
set -eu
client=$1
lib=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
objdump=${3:-objdump}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
fail() { echo "version-check: $*" >&2; failed=1; }

# objdump -T: "... [(]NODE[)] NAME", the node in parentheses for a reference.
"$objdump" -T "$lib" >"$work/lib"
"$objdump" -T "$client" >"$work/client"
for name in MAPIAllocateBuffer MAPIAllocateMore MAPIFreeBuffer MAPIReallocateBuffer; do
    awk -v name="$name" '$NF == name && $(NF - 1) == "MAPI32_1" && $0 !~ /\*UND\*/' "$work/lib" | grep -q . ||
        fail "$lib does not define $name under MAPI32_1"
done
# The controls: the client asks for the versioned names, and the stub
# answers it when nothing is preloaded.
for name in MAPIAllocateBuffer MAPIAllocateMore MAPIFreeBuffer; do
    awk -v name="$name" '$NF == name && $(NF - 1) == "(MAPI32_1)"' "$work/client" | grep -q . ||
        fail "$client does not ask for $name@MAPI32_1, so it proves nothing"
done
if "$client" >/dev/null 2>&1; then
    fail "without LD_PRELOAD the client passed: it cannot tell the stub from libmapi32"
fi

echo "version-check: LD_PRELOAD=$lib $client"
LD_PRELOAD=$lib "$client" >"$work/out" 2>"$work/err" || {
    cat "$work/out" >&2
    fail "with LD_PRELOAD, calls to MAPI32_1 names did not all reach libmapi32"
}
[ -s "$work/err" ] && fail "the dynamic linker spoke on stderr: $(cat "$work/err")"

[ "$failed" = 0 ] || exit 1
echo "version-check: libmapi32 exports the MAPI functions under MAPI32_1 and, preloaded, takes every call silently"
