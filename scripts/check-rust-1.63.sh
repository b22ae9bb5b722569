#!/bin/sh
# Builds the library and runs its unit tests with Debian 12's rustc 1.63, the
# one compiler here with a Windows standard library (for mapi32.dll), so that
# code needing a newer Rust is caught when it is written.
#
# Cargo is not used, so that no registry is needed: libc comes from Debian's
# librust-libc-dev source, built here by hand. (`make rust-1.63` also runs
# tools/check-locked-rust-version.sh, for the versions Cargo.lock pins.)
# usage: check-rust-1.63.sh [RUSTC] [LIBC_SOURCE_DIR]
set -eu
rustc=${1:-/usr/bin/rustc}
libc_dir=${2:-$(ls -d /usr/share/cargo/registry/libc-0.2.* 2>/dev/null | sort -V | tail -n 1)}
root=$(cd "$(dirname "$0")/.." && pwd)

"$rustc" --version | grep -q '^rustc 1\.63\.' || { echo "check-rust-1.63: $rustc is not rustc 1.63" >&2; exit 1; }
[ -f "$libc_dir/src/lib.rs" ] || { echo "check-rust-1.63: libc source not found (apt-get install librust-libc-dev)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sh "$root/scripts/build-libc-1.63.sh" "$rustc" "$work/liblibc.rlib" "" "$libc_dir"
"$rustc" --edition 2021 --crate-type rlib,cdylib --crate-name mapi32 -C panic=abort -O -D warnings \
    --extern libc="$work/liblibc.rlib" -L "$work" "$root/src/lib.rs" --out-dir "$work"
"$rustc" --edition 2021 --test --crate-name mapi32 -D warnings \
    --extern libc="$work/liblibc.rlib" -L "$work" "$root/src/lib.rs" -o "$work/unit"
"$work/unit" --quiet
echo "check-rust-1.63: $("$rustc" --version) builds libmapi32 and passes its unit tests"
