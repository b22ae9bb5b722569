#!/bin/sh
# `make install` into a temporary DESTDIR, then what a user of the installed
# library does: build a C client with only `pkg-config --cflags --libs
# mapi32` and run it; link it statically too; then `make uninstall`.
# PREFIX differs from DESTDIR so that a staging path leaking into mapi32.pc
# (or a file missing from the stage) is caught; LIBDIR and INCLUDEDIR are
# not their defaults, so that each is seen to be honoured. The installed
# libraries must be of a sane size: stripped, and the archive without LLVM
# bitcode.
# usage: install_check.sh MAKE CC    (run from the top of the source tree)
set -eu
make=$1 cc=$2
prefix=/opt/mapi32-install-check
dirs="PREFIX=$prefix LIBDIR=$prefix/lib/multiarch INCLUDEDIR=$prefix/share/include"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
libdir=$stage$prefix/lib/multiarch
includedir=$stage$prefix/share/include
docdir=$stage$prefix/share/doc/libmapi32
failed=0
fail() { echo "install-check: $*" >&2; failed=1; }

# shellcheck disable=SC2086
$make --no-print-directory -s install DESTDIR="$stage" $dirs >/dev/null

# The files, their modes and the links between them.
real=$(cd "$libdir" && ls libmapi32.so.*.*.* 2>/dev/null || true)
case "$real" in
    libmapi32.so.1.[0-9]*.[0-9]*) ;;
    *) fail "expected one libmapi32.so.1.<minor>.<patch> in LIBDIR, found '$real'" ;;
esac
mode() { stat -c %a "$1" 2>/dev/null || echo missing; }
[ -n "$real" ] && [ "$(mode "$libdir/$real")" = 755 ] || fail "LIBDIR/$real is not mode 755"
[ "$(readlink "$libdir/libmapi32.so.1" || true)" = "$real" ] || fail "libmapi32.so.1 does not link to $real"
[ "$(readlink "$libdir/libmapi32.so" || true)" = libmapi32.so.1 ] || fail "libmapi32.so does not link to libmapi32.so.1"
[ "$(mode "$libdir/libmapi32.a")" = 644 ] || fail "libmapi32.a is not installed with mode 644"
[ "$(mode "$includedir/mapi32/mapix.h")" = 644 ] || fail "INCLUDEDIR/mapi32/mapix.h is not installed with mode 644"
pc=$libdir/pkgconfig/mapi32.pc
[ "$(mode "$pc")" = 644 ] || fail "LIBDIR/pkgconfig/mapi32.pc is not installed with mode 644"
[ -f "$pc" ] && grep -qx "prefix=$prefix" "$pc" || fail "mapi32.pc does not say prefix=$prefix"
[ -f "$pc" ] && grep -q "$stage" "$pc" && fail "mapi32.pc names the staging directory $stage"
soname=$(readelf -d "$libdir/libmapi32.so.1" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
[ "$soname" = libmapi32.so.1 ] || fail "the installed library's SONAME is '$soname'"
for doc in LICENSE-MIT LICENSE-APACHE CHANGELOG.md; do
    [ "$(mode "$docdir/$doc")" = 644 ] && cmp -s "$doc" "$docdir/$doc" ||
        fail "PREFIX/share/doc/libmapi32/$doc is not installed with mode 644"
done
[ "$failed" = 0 ] || exit 1

# Sizes: debug info and bitcode made them 4.2 MiB and 21 MiB. readelf, not
# nm or objdump, for the archive (see exports_check.sh).
size_at_most() { # FILE MAX_BYTES WHAT
    size=$(stat -L -c %s "$1")
    [ "$size" -le "$2" ] || fail "$3 is $size bytes, more than $2"
}
size_at_most "$libdir/libmapi32.so.1" $((1024 * 1024)) "the installed libmapi32.so"
size_at_most "$libdir/libmapi32.a" $((8 * 1024 * 1024)) "the installed libmapi32.a"
readelf -SW "$libdir/libmapi32.so.1" | grep -Eq ' \.(debug_[a-z]+|symtab) ' &&
    fail "the installed libmapi32.so keeps debug info or its symbol table"
readelf -SW "$libdir/libmapi32.a" | grep -Eq ' \.(debug_[a-z]+|llvmbc|llvmcmd) ' &&
    fail "the installed libmapi32.a keeps debug info or LLVM bitcode"
[ "$failed" = 0 ] || exit 1

# A client built with pkg-config alone. PKG_CONFIG_LIBDIR: only this stage's
# .pc files; PKG_CONFIG_SYSROOT_DIR: pkg-config prefixes the stage to the
# paths it prints, as for any staged or cross sysroot.
export PKG_CONFIG_LIBDIR="$libdir/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$stage"
unset PKG_CONFIG_PATH
flags=$(pkg-config --cflags --libs mapi32)
echo "install-check: pkg-config --cflags --libs mapi32: $flags"
# shellcheck disable=SC2086
$cc -std=c99 -Wall -Wextra -Wpedantic -Werror c_tests/installed_client.c -o "$stage/client" $flags
needed=$(readelf -d "$stage/client" | sed -n 's/.*(NEEDED).*\[\(libmapi32[^]]*\)\].*/\1/p')
[ "$needed" = libmapi32.so.1 ] || fail "the client needs '$needed', not libmapi32.so.1"
loaded=$(LD_LIBRARY_PATH="$libdir" ldd "$stage/client" | sed -n 's/.*libmapi32.so.1 => \([^ ]*\).*/\1/p')
[ "$loaded" = "$libdir/libmapi32.so.1" ] || fail "the client loads libmapi32.so.1 from '$loaded', not the stage"
LD_LIBRARY_PATH="$libdir" "$stage/client" || fail "the client built with pkg-config failed"

# The same client against libmapi32.a, with the libraries Libs.private lists.
private=$(pkg-config --static --libs-only-l mapi32 | sed 's/-lmapi32//')
# shellcheck disable=SC2086
$cc -std=c99 -Wall -Wextra -Wpedantic -Werror $(pkg-config --cflags mapi32) c_tests/installed_client.c \
    "$libdir/libmapi32.a" $private -o "$stage/client-static"
readelf -d "$stage/client-static" | grep -q 'NEEDED.*libmapi32' && fail "the static client still needs libmapi32.so"
"$stage/client-static" || fail "the client linked with libmapi32.a failed"

# shellcheck disable=SC2086
$make --no-print-directory -s uninstall DESTDIR="$stage" $dirs >/dev/null
left=$(cd "$stage" && find ./opt -type f -o -type l)
[ -z "$left" ] || fail "make uninstall left: $(echo $left)"

[ "$failed" = 0 ] || exit 1
echo "install-check: make install into DESTDIR (stripped, licences in share/doc), a pkg-config client," \
    "a static client and make uninstall all work"
