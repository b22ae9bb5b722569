#!/bin/sh
# Builds the libc crate as an rlib with a plain rustc, without cargo, from
# Debian's librust-libc-dev source: the one dependency of the library, for
# the builds with Debian 12's rustc 1.63 (scripts/check-rust-1.63.sh, and
# mapi32.dll in mk/windows.mk).
# usage: build-libc-1.63.sh RUSTC OUT.rlib [TARGET] [LIBC_SOURCE_DIR]
# RUSTC_SYSROOT, when set, is passed as --sysroot: the 32-bit targets' std
# is one scripts/build-std-1.63.sh built.
set -eu
rustc=$1
out=$2
target=${3:-}
libc_dir=${4:-$(ls -d /usr/share/cargo/registry/libc-0.2.* 2>/dev/null | sort -V | tail -n 1)}

[ -f "$libc_dir/src/lib.rs" ] || { echo "build-libc: libc source not found (apt-get install librust-libc-dev)" >&2; exit 1; }

# The cfgs libc's own build script sets for any rustc >= 1.63.
libc_cfgs="--cfg libc_priv_mod_use --cfg libc_union --cfg libc_const_size_of --cfg libc_align
  --cfg libc_int128 --cfg libc_core_cvoid --cfg libc_packedN --cfg libc_cfg_target_vendor
  --cfg libc_non_exhaustive --cfg libc_long_array --cfg libc_ptr_addr_of
  --cfg libc_underscore_const_names --cfg libc_const_extern_fn"
# shellcheck disable=SC2086
"$rustc" ${RUSTC_SYSROOT:+--sysroot "$RUSTC_SYSROOT"} ${target:+--target "$target"} --edition 2015 --crate-type rlib --crate-name libc $libc_cfgs \
    --cfg 'feature="std"' -O --cap-lints allow "$libc_dir/src/lib.rs" -o "$out"
