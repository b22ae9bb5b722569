#!/bin/sh
# Builds the library and runs its unit tests with Debian 12's rustc 1.63, the
# one compiler here with a Windows standard library (for mapi32.dll), so that
# code needing a newer Rust is caught when it is written.
#
# Cargo is not used: Debian's cargo cannot build cbindgen (the build script
# only makes the header, which the 1.63 build does not need). libc comes from
# Debian's librust-libc-dev source, built here by hand.
# usage: check-rust-1.63.sh [RUSTC] [LIBC_SOURCE_DIR]
set -eu
rustc=${1:-/usr/bin/rustc}
libc_dir=${2:-$(ls -d /usr/share/cargo/registry/libc-0.2.* 2>/dev/null | sort -V | tail -n 1)}
root=$(cd "$(dirname "$0")/.." && pwd)

"$rustc" --version | grep -q '^rustc 1\.63\.' || { echo "check-rust-1.63: $rustc is not rustc 1.63" >&2; exit 1; }
[ -f "$libc_dir/src/lib.rs" ] || { echo "check-rust-1.63: libc source not found (apt-get install librust-libc-dev)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The cfgs libc's own build script sets for any rustc >= 1.63.
libc_cfgs="--cfg libc_priv_mod_use --cfg libc_union --cfg libc_const_size_of --cfg libc_align
  --cfg libc_int128 --cfg libc_core_cvoid --cfg libc_packedN --cfg libc_cfg_target_vendor
  --cfg libc_non_exhaustive --cfg libc_long_array --cfg libc_ptr_addr_of
  --cfg libc_underscore_const_names --cfg libc_const_extern_fn"
# shellcheck disable=SC2086
"$rustc" --edition 2015 --crate-type rlib --crate-name libc $libc_cfgs --cfg 'feature="std"' \
    -O --cap-lints allow "$libc_dir/src/lib.rs" -o "$work/liblibc.rlib"
"$rustc" --edition 2021 --crate-type rlib,cdylib --crate-name mapi32 -C panic=abort -O -D warnings \
    --extern libc="$work/liblibc.rlib" -L "$work" "$root/src/lib.rs" --out-dir "$work"
"$rustc" --edition 2021 --test --crate-name mapi32 -D warnings \
    --extern libc="$work/liblibc.rlib" -L "$work" "$root/src/lib.rs" -o "$work/unit"
"$work/unit" --quiet
echo "check-rust-1.63: $("$rustc" --version) builds libmapi32 and passes its unit tests"
