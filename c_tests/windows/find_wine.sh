#!/bin/sh
# Finds Wine for the scripts beside this one, so that each says the same
# thing when it is missing.
#
#   find_wine.sh win64          the 64-bit loader ($WINE, else wine64)
#   find_wine.sh win32          the 32-bit loader ($WINE, else wine32's
#                               /usr/lib/wine/wine: Debian's wine64 has no
#                               32-bit side, and `wine` alone does not
#                               promise one — it may be wine64 by that name)
#   find_wine.sh server LOADER  the wineserver beside LOADER ($WINESERVER,
#                               else beside it, else on PATH)
#
# Prints the path; on failure says what to install, on stderr, and exits 2.
set -eu

first_found() {
    for candidate in "$@"; do
        [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 && { command -v "$candidate"; return 0; }
    done
    return 1
}

case "${1:-}" in
win64)
    first_found "${WINE:-}" wine64 /usr/lib/wine/wine64 wine ||
        { echo "no wine64 found (apt-get install wine64)" >&2; exit 2; }
    ;;
win32)
    first_found "${WINE:-}" /usr/lib/wine/wine ||
        { echo "no 32-bit wine found (dpkg --add-architecture i386; apt-get update; apt-get install wine32)" >&2; exit 2; }
    ;;
server)
    loader=${2:?usage: find_wine.sh server LOADER}
    beside=$(dirname "$loader")/wineserver
    [ -x "$beside" ] || beside=
    first_found "${WINESERVER:-}" "$beside" wineserver ||
        { echo "no wineserver found next to $loader" >&2; exit 2; }
    ;;
*)
    echo "usage: find_wine.sh win64|win32|server LOADER" >&2
    exit 2
    ;;
esac
