#!/bin/sh
# Puts libmapi32 under Wine's builtin mapi32.dll, in one Wine prefix, as the
# default mail client's Extended MAPI library, or takes it out again.
#
# usage: register_provider.sh add DLL   copy DLL (libmapi32's mapi32.dll) into
#                                       the prefix as libmapi32.dll, register it
#        register_provider.sh remove    undo `add`
#
# Wine's mapi32.dll, when a process loads it, reads the default value of
# HKLM\Software\Clients\Mail (the default mail client), loads the library
# named by that client's DLLPathEx and forwards MAPIAllocateBuffer,
# MAPIAllocateMore and MAPIFreeBuffer to it; its other exports stay Wine's
# (dlls/mapi32/util.c, load_mapi_providers). So `add` sets DLLPathEx on the
# default client, keeping the client's DLLPath (Simple MAPI: MAPISendMail and
# the like, winemapi.dll in a fresh prefix); where no client is set, it makes
# one named libmapi32 and sets it as the default.
#
# The copy must not be called mapi32.dll, wherever it lies: Wine then loads
# itself as the provider, and its MAPIAllocateBuffer calls itself until the
# stack overflows. It goes to C:\Program Files\libmapi32\libmapi32.dll and is
# registered by that full path: a bare name is looked for only next to the
# program, in system32 and on PATH.
#
# Environment: WINEPREFIX (default ~/.wine), WINE (the wine64 loader).
set -eu

key='HKLM\Software\Clients\Mail'
dll_win='C:\Program Files\libmapi32\libmapi32.dll'
own_client=libmapi32

find_wine() {
    for candidate in "${WINE:-}" wine64 /usr/lib/wine/wine64 wine; do
        [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 && { command -v "$candidate"; return; }
    done
    echo "register_provider: no wine64 found (apt-get install wine64)" >&2
    exit 2
}
wine=$(find_wine)
prefix=${WINEPREFIX:-$HOME/.wine}
dll_dir="$prefix/drive_c/Program Files/libmapi32"

# reg.exe, 64-bit registry view: the one a 64-bit mapi32.dll reads.
# Quiet unless it fails.
reg() {
    if ! out=$(WINEDEBUG=-all "$wine" reg "$@" /reg:64 2>&1); then
        printf 'register_provider: reg %s failed:\n%s\n' "$*" "$out" >&2
        return 1
    fi
}

# query KEY /ve | query KEY /v NAME: the value's data, or nothing when it is
# not set. reg.exe prints "    NAME    REG_SZ    DATA" with CRLF line ends,
# and for a default value never set, "(value not set)" as its data, in the
# locale's language: LC_ALL=C pins it.
query() {
    query_key=$1
    shift
    LC_ALL=C WINEDEBUG=-all "$wine" reg query "$query_key" "$@" /reg:64 2>/dev/null | tr -d '\r' |
        sed -n 's/^    .*    REG_\(EXPAND_\)\{0,1\}SZ    //p' | sed '/^(value not set)$/d' | head -n 1
}

case "${1:-}" in
add)
    dll=${2:-}
    [ -f "$dll" ] || { echo "register_provider: no DLL at '$dll' (make windows)" >&2; exit 2; }
    [ -d "$prefix/drive_c" ] || { echo "register_provider: no Wine prefix at $prefix (run wineboot)" >&2; exit 2; }
    mkdir -p "$dll_dir"
    cp "$dll" "$dll_dir/libmapi32.dll"
    client=$(query "$key" /ve)
    if [ -z "$client" ]; then
        client=$own_client
        reg add "$key" /ve /t REG_SZ /d "$client" /f
    fi
    reg add "$key\\$client" /v DLLPathEx /t REG_SZ /d "$dll_win" /f
    echo "register_provider: $dll_win is DLLPathEx of mail client '$client' in $prefix"
    ;;
remove)
    client=$(query "$key" /ve)
    # Only a registration of ours is taken out; another client's DLLPathEx stays.
    if [ -n "$client" ] && [ "$(query "$key\\$client" /v DLLPathEx)" = "$dll_win" ]; then
        if [ "$client" = "$own_client" ]; then
            reg delete "$key\\$client" /f
            reg delete "$key" /ve /f
        else
            reg delete "$key\\$client" /v DLLPathEx /f
        fi
        echo "register_provider: DLLPathEx of mail client '$client' removed in $prefix"
    else
        echo "register_provider: libmapi32 was not registered in $prefix"
    fi
    rm -f "$dll_dir/libmapi32.dll"
    rmdir "$dll_dir" 2>/dev/null || true
    ;;
*)
    echo "usage: $0 add DLL | remove" >&2
    exit 2
    ;;
esac
