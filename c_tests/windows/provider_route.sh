#!/bin/sh
# The provider route under Wine: Wine's builtin mapi32.dll stays the
# program's mapi32.dll, and libmapi32, registered as the default mail
# client's DLLPathEx (register_provider.sh), serves its MAPIAllocateBuffer,
# MAPIAllocateMore and MAPIFreeBuffer.
#
# usage: provider_route.sh DIR    DIR holds mapi32.dll and provider_route_client.exe
#
# Two runs of the client, each a wine process of its own under a timeout:
#   registered    every check of provider_route_client.exe passes, and
#                 MAPI32_DEBUG reaches libmapi32 through the builtin
#   unregistered  after register_provider.sh remove (checked: the value and
#                 the file are gone) and with the DLL put back unregistered,
#                 the same client must fail, its one probe block being
#                 Wine's own (8 bytes off 16-byte alignment, not counted by
#                 libmapi32): the checks see the route, not something that
#                 passes anyway
#
# A private WINEPREFIX is made in a temporary directory and removed at the
# end, with its wineserver. Environment: WINE (the wine64 loader),
# WINESERVER, CASE_TIMEOUT (seconds a run may take, default 20).
set -eu

dir=${1:-}
for file in mapi32.dll provider_route_client.exe; do
    [ -f "$dir/$file" ] || { echo "provider_route: $dir/$file not found (make windows)" >&2; exit 2; }
done
here=$(cd "$(dirname "$0")" && pwd)

find_wine() {
    for candidate in "${WINE:-}" wine64 /usr/lib/wine/wine64 wine; do
        [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 && { command -v "$candidate"; return; }
    done
    echo "provider_route: no wine64 found (apt-get install wine64)" >&2
    exit 2
}
wine=$(find_wine)
wineserver=${WINESERVER:-$(dirname "$wine")/wineserver}
[ -x "$wineserver" ] || wineserver=$(command -v wineserver || true)
[ -n "$wineserver" ] || { echo "provider_route: no wineserver found next to $wine" >&2; exit 2; }
case_timeout=${CASE_TIMEOUT:-20}

work=$(mktemp -d)
cleanup() {
    WINEPREFIX="$work/prefix" timeout 30 "$wineserver" -k >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export WINEPREFIX="$work/prefix" WINEDEBUG=-all WINEARCH=win64 WINE="$wine"
unset DISPLAY WAYLAND_DISPLAY MAPI32_DEBUG || true
# The builtin, whatever the caller's overrides say.
export WINEDLLOVERRIDES=mapi32=b

# Mono and Gecko are not wanted, and asking for them would wait for a download.
WINEDLLOVERRIDES="mscoree,mshtml=" timeout 300 "$wine" wineboot -i >"$work/wineboot.log" 2>&1 || {
    echo "provider_route: wineboot failed:" >&2
    cat "$work/wineboot.log" >&2
    exit 1
}
timeout 30 "$wineserver" -p >/dev/null 2>&1 || true
echo "provider_route: $("$wine" --version 2>/dev/null || echo wine), prefix made"

# The path register_provider.sh registers: the client is told it, and
# checks that the DLL loaded is that file.
dll_win='C:\Program Files\libmapi32\libmapi32.dll'
mkdir "$work/run"
cp "$dir/provider_route_client.exe" "$work/run/"

# client OUTPUT [ENV=VALUE...]: runs the client; status in $status, its
# stdout in OUTPUT, its stderr in OUTPUT.err, both without CRs.
client() {
    output=$1
    shift
    status=0
    (cd "$work/run" && env "$@" timeout -k 5 "$case_timeout" "$wine" provider_route_client.exe "$dll_win") \
        >"$output.raw" 2>"$output.err.raw" || status=$?
    tr -d '\r' <"$output.raw" >"$output"
    tr -d '\r' <"$output.err.raw" >"$output.err"
}

failed=0
# verdict NAME RESULT OUTPUT: one line; a failure with the run's output.
verdict() {
    if [ "$2" = pass ]; then
        printf 'PASS %s\n' "$1"
    else
        printf 'FAIL %s: %s\n' "$1" "$2"
        [ "$3" = /dev/null ] || sed 's/^/    /' "$3" "$3.err"
        failed=$((failed + 1))
    fi
}

sh "$here/register_provider.sh" add "$dir/mapi32.dll"
warn_line='^libmapi32: MAPIFreeBuffer(0x[0-9a-f]*): '
client "$work/registered" MAPI32_DEBUG=warn
if [ "$status" -ne 0 ] || ! grep -q '^PASS provider_route$' "$work/registered"; then
    result="exit status $status"
elif ! grep -q "$warn_line" "$work/registered.err"; then
    result="no MAPI32_DEBUG=warn line on stderr for the free of a child"
else
    result=pass
fi
grep '^libmapi32 counted' "$work/registered" | sed 's/^/provider_route: /' || true
verdict provider_route_registered "$result" "$work/registered"

sh "$here/register_provider.sh" remove
if WINEDEBUG=-all "$wine" reg query 'HKLM\Software\Clients\Mail' /s /reg:64 2>/dev/null | grep -q DLLPathEx ||
    [ -e "$WINEPREFIX/drive_c/Program Files/libmapi32/libmapi32.dll" ]; then
    result="DLLPathEx or the DLL is still there"
else
    result=pass
fi
verdict provider_route_removed "$result" /dev/null
# The DLL back in its place, unregistered: the client can still read its
# counters, and must see that nothing reaches them.
mkdir -p "$WINEPREFIX/drive_c/Program Files/libmapi32"
cp "$dir/mapi32.dll" "$WINEPREFIX/drive_c/Program Files/libmapi32/libmapi32.dll"
client "$work/unregistered"
probe='^  a block from the builtin: address % 16 = 8, libmapi32.s live roots +0$'
if [ "$status" -ne 1 ] || ! grep -q '^FAIL provider_route' "$work/unregistered"; then
    result="the client did not fail as it should (exit status $status)"
elif ! grep -q "$probe" "$work/unregistered"; then
    result="the builtin's own block was not what Wine's allocator gives"
else
    result=pass
fi
verdict provider_route_fails_unregistered "$result" "$work/unregistered"

echo "provider_route: $((3 - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
