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
#                 Wine's own (one pointer off SPEC §2's alignment: 8 bytes
#                 off 16 on 64-bit, 4 off 8 on 32-bit; not counted by
#                 libmapi32): the checks see the route, not something that
#                 passes anyway
#
# DIR's DLL and client are 64-bit (mk/wine-route.mk) or 32-bit
# (mk/windows32.mk). Either way the prefix is a 64-bit one, the kind wine64
# makes by default and the one 32-bit MAPI programs mostly run in: a 32-bit
# client there runs under WoW64 with a registry view of its own, which
# register_provider.sh writes (/reg:32). A 32-bit run needs wine32 (Debian's
# wine64 alone runs no 32-bit program).
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
arch=$(sh "$here/pe_arch.sh" "$dir/mapi32.dll")
[ "$(sh "$here/pe_arch.sh" "$dir/provider_route_client.exe")" = "$arch" ] ||
    { echo "provider_route: $dir's mapi32.dll and provider_route_client.exe differ in width" >&2; exit 2; }

wine=$(sh "$here/find_wine.sh" win64) || exit 2
# wine64 hands a 32-bit program to the 32-bit loader beside it.
if [ "$arch" = win32 ] && [ ! -x "$(dirname "$wine")/wine" ]; then
    echo "provider_route: no 32-bit wine next to $wine" \
        "(dpkg --add-architecture i386; apt-get update; apt-get install wine32)" >&2
    exit 2
fi
wineserver=$(sh "$here/find_wine.sh" server "$wine") || exit 2
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
echo "provider_route: $("$wine" --version 2>/dev/null || echo wine), win64 prefix made, a $arch client"

# The path register_provider.sh registers: the client is told it, and
# checks that the DLL loaded is that file.
dll_win=$(sh "$here/register_provider.sh" path "$dir/mapi32.dll")
case "$arch" in
win64) view=/reg:64 wine_alignment='% 16 = 8' ;;
win32) view=/reg:32 wine_alignment='% 8 = 4' ;;
esac
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
# The DLL's place inside the prefix, from its Windows path.
dll_unix="$WINEPREFIX/drive_c/$(printf '%s\n' "${dll_win#C:\\}" | tr '\\' /)"
if WINEDEBUG=-all "$wine" reg query 'HKLM\Software\Clients\Mail' /s "$view" 2>/dev/null | grep -q DLLPathEx ||
    [ -e "$dll_unix" ]; then
    result="DLLPathEx or the DLL is still there"
else
    result=pass
fi
verdict provider_route_removed "$result" /dev/null
# The DLL back in its place, unregistered: the client can still read its
# counters, and must see that nothing reaches them.
mkdir -p "$(dirname "$dll_unix")"
cp "$dir/mapi32.dll" "$dll_unix"
client "$work/unregistered"
probe="^  a block from the builtin: address $wine_alignment, libmapi32.s live roots +0\$"
if [ "$status" -ne 1 ] || ! grep -q '^FAIL provider_route' "$work/unregistered"; then
    result="the client did not fail as it should (exit status $status)"
elif ! grep -q "$probe" "$work/unregistered"; then
    result="the builtin's own block was not what Wine's allocator gives"
else
    result=pass
fi
verdict provider_route_fails_unregistered "$result" "$work/unregistered"

echo "provider_route ($arch): $((3 - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
