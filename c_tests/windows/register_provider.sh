#!/bin/sh
# Puts libmapi32 under Wine's builtin mapi32.dll, in one Wine prefix, as the
# default mail client's Extended MAPI library, or takes it out again.
#
# usage: register_provider.sh add DLL   copy DLL (libmapi32's mapi32.dll) into
#                                       the prefix as libmapi32.dll, register it
#        register_provider.sh path DLL  the Windows path `add` copies DLL to
#        register_provider.sh remove    undo `add`, for either width
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
# The DLL's width decides the rest: a 32-bit mapi32.dll (a 32-bit program's)
# loads only a 32-bit DLLPathEx, and reads the 32-bit registry view, which in
# a 64-bit prefix is a tree of its own (Software\Wow6432Node): a 64-bit DLL
# is registered with reg.exe's /reg:64, a 32-bit one with /reg:32 and copied
# to C:\Program Files (x86) where the prefix has one.
#
# Environment: WINEPREFIX (default ~/.wine), WINE (the wine loader: wine64
# for a 64-bit prefix, whatever the DLL).
set -eu

key='HKLM\Software\Clients\Mail'
own_client=libmapi32
here=$(cd "$(dirname "$0")" && pwd)

wine=$(sh "$here/find_wine.sh" win64) || exit 2
prefix=${WINEPREFIX:-$HOME/.wine}

# use_width win64|win32: sets the registry view and where the DLL goes.
use_width() {
    case "$1" in
    win64) view=/reg:64 program_files='Program Files' ;;
    win32)
        view=/reg:32 program_files='Program Files'
        [ -d "$prefix/drive_c/Program Files (x86)" ] && program_files='Program Files (x86)'
        ;;
    esac
    dll_win="C:\\$program_files\\libmapi32\\libmapi32.dll"
    dll_dir="$prefix/drive_c/$program_files/libmapi32"
}

# reg.exe in the view of use_width. Quiet unless it fails.
reg() {
    if ! out=$(WINEDEBUG=-all "$wine" reg "$@" "$view" 2>&1); then
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
    LC_ALL=C WINEDEBUG=-all "$wine" reg query "$query_key" "$@" "$view" 2>/dev/null | tr -d '\r' |
        sed -n 's/^    .*    REG_\(EXPAND_\)\{0,1\}SZ    //p' | sed '/^(value not set)$/d' | head -n 1
}

case "${1:-}" in
add | path)
    dll=${2:-}
    [ -f "$dll" ] || { echo "register_provider: no DLL at '$dll' (make windows)" >&2; exit 2; }
    [ -d "$prefix/drive_c" ] || { echo "register_provider: no Wine prefix at $prefix (run wineboot)" >&2; exit 2; }
    use_width "$(sh "$here/pe_arch.sh" "$dll")"
    if [ "$1" = path ]; then
        printf '%s\n' "$dll_win"
        exit 0
    fi
    mkdir -p "$dll_dir"
    cp "$dll" "$dll_dir/libmapi32.dll"
    client=$(query "$key" /ve)
    if [ -z "$client" ]; then
        client=$own_client
        reg add "$key" /ve /t REG_SZ /d "$client" /f
    fi
    reg add "$key\\$client" /v DLLPathEx /t REG_SZ /d "$dll_win" /f
    echo "register_provider: $dll_win is DLLPathEx of mail client '$client' ($view) in $prefix"
    ;;
remove)
    removed=no
    for width in win64 win32; do
        use_width $width
        client=$(query "$key" /ve)
        # Only a registration of ours is taken out; another client's DLLPathEx stays.
        if [ -n "$client" ] && [ "$(query "$key\\$client" /v DLLPathEx)" = "$dll_win" ]; then
            if [ "$client" = "$own_client" ]; then
                reg delete "$key\\$client" /f
                reg delete "$key" /ve /f
            else
                reg delete "$key\\$client" /v DLLPathEx /f
            fi
            echo "register_provider: DLLPathEx of mail client '$client' ($view) removed in $prefix"
            removed=yes
        fi
        rm -f "$dll_dir/libmapi32.dll"
        rmdir "$dll_dir" 2>/dev/null || true
    done
    [ "$removed" = yes ] || echo "register_provider: libmapi32 was not registered in $prefix"
    ;;
*)
    echo "usage: $0 add DLL | path DLL | remove" >&2
    exit 2
    ;;
esac
