#!/bin/sh
# LD_PRELOAD substitutes libmapi32 for another MAPI library: a client linked
# against a stub MAPI (every call fails) must, run with
# LD_PRELOAD=libmapi32.so, have every call answered by libmapi32.
# As a control, the same client without the preload must fail, so the
# client really tells the two libraries apart.
# usage: preload_check.sh CLIENT LIBMAPI32_SO
set -eu
client=$1
lib=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
failed=0
fail() { echo "preload-check: $*" >&2; failed=1; }

needed=$(readelf -d "$client" | sed -n 's/.*(NEEDED).*\[\(.*\)\].*/\1/p')
echo "$needed" | grep -qx 'libothermapi.so' || fail "$client is not linked against the stub libothermapi.so"
echo "$needed" | grep -q 'libmapi32' && fail "$client is linked against libmapi32 itself"

if "$client" >/dev/null 2>&1; then
    fail "without LD_PRELOAD the client passed: it cannot tell the stub from libmapi32"
fi

echo "preload-check: LD_PRELOAD=$lib $client"
LD_PRELOAD=$lib "$client" || fail "with LD_PRELOAD=libmapi32.so, calls did not all reach libmapi32"

[ "$failed" = 0 ] || exit 1
echo "preload-check: LD_PRELOAD put libmapi32 in place of another MAPI library for every call"
