#!/bin/sh
# Prints the Wine architecture a PE file (DLL or program) is for: win64 for
# x86-64, win32 for i386. The scripts beside this one pick their Wine, their
# prefix and their registry view by it.
#
# usage: pe_arch.sh FILE
set -eu

file=${1:-}
[ -f "$file" ] || { echo "pe_arch: no file at '$file'" >&2; exit 2; }
[ "$(head -c 2 "$file")" = MZ ] || { echo "pe_arch: $file is not a PE file" >&2; exit 2; }
# The PE header's offset is stored at 0x3c; its machine field follows the
# 4-byte "PE\0\0" signature.
pe_offset=$(od -An -tu4 -j60 -N4 "$file" | tr -d ' ')
machine=$(od -An -tx2 -j$((pe_offset + 4)) -N2 "$file" | tr -d ' ')
case "$machine" in
8664) echo win64 ;;
014c) echo win32 ;;
*) echo "pe_arch: $file is for machine 0x$machine, neither x86-64 nor i386" >&2; exit 2 ;;
esac
