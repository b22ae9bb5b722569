#!/bin/sh
# Builds Rust's standard library for TARGET with Debian 12's rustc 1.63 and
# lays it out as a sysroot, for the 32-bit builds (mk/windows32.mk,
# mk/linux32.mk): Debian ships std for x86_64 Linux and Windows only, but its
# rustc has LLVM for every target and rust-src has std's source.
#
# usage: build-std-1.63.sh TARGET DIR
#   then: rustc --sysroot DIR/sysroot --target TARGET ...
#
# Cargo's -Zbuild-std does the work (RUSTC_BOOTSTRAP=1 lets the stable
# compiler and Debian's cargo 0.66 accept it). It wants the Rust source's
# root workspace and lock file, which rust-src lacks: scripts/std-1.63/ has
# them (the lock is `cargo generate-lockfile -Zminimal-versions` of std's
# 1.63 manifests: the oldest versions they accept are the ones 1.63 was
# released with, or close to it), and __CARGO_TESTS_ONLY_SRC_ROOT points
# cargo at a directory that joins them to Debian's library/. std's own
# dependencies (compiler_builtins, hashbrown, libc, ...) come from crates.io
# by the sparse protocol, into a CARGO_HOME of this build's own (an older
# cargo's registry cache is better kept apart from rustup's). Takes 1 to 3
# minutes on 2 idle cores, 3 to 6 on 2 busy cores.
#
# Environment: RUSTC (/usr/bin/rustc), DEBIAN_CARGO (/usr/bin/cargo),
# RUST_SRC (the rust-src root, /usr/lib/rustlib/src/rust).
set -eu
target=$1
dir=$2
rustc=${RUSTC:-/usr/bin/rustc}
cargo=${DEBIAN_CARGO:-/usr/bin/cargo}
rust_src=${RUST_SRC:-/usr/lib/rustlib/src/rust}
here=$(cd "$(dirname "$0")" && pwd)

[ -f "$rust_src/library/std/Cargo.toml" ] || { echo "build-std: no std source in $rust_src (apt-get install rust-src)" >&2; exit 1; }
[ -x "$cargo" ] || { echo "build-std: $cargo not found (apt-get install cargo)" >&2; exit 1; }
case $("$rustc" --version) in
"rustc 1.63."*) ;;
*) echo "build-std: $rustc is not rustc 1.63, which scripts/std-1.63/Cargo.lock is for" >&2; exit 1 ;;
esac

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
root=$dir/rust-src
probe=$dir/probe
libdir=$dir/sysroot/lib/rustlib/$target/lib

mkdir -p "$root" "$probe/src"
ln -sfn "$rust_src/library" "$root/library"
cp "$here/std-1.63/Cargo.toml" "$here/std-1.63/Cargo.lock" "$root/"
# Cargo builds std as the dependency of a crate: an empty one.
cat >"$probe/Cargo.toml" <<'EOF'
[package]
name = "sysroot-probe"
version = "0.0.0"
edition = "2021"
EOF
echo '#![no_std]' >"$probe/src/lib.rs"

# From scratch, so that no rlib of an earlier build is copied beside its
# successor (rustc refuses two candidates for one crate).
rm -rf "$dir/target"
# panic_unwind and test: the unit tests' harness; panic_abort: the library.
(cd "$probe" && __CARGO_TESTS_ONLY_SRC_ROOT=$root RUSTC=$rustc RUSTC_BOOTSTRAP=1 \
    RUSTC_WRAPPER="$here/std-1.63/rustc-wrapper.sh" \
    CARGO_REGISTRIES_CRATES_IO_PROTOCOL=sparse CARGO_TARGET_DIR=$dir/target CARGO_HOME=$dir/cargo-home \
    "$cargo" build -Zsparse-registry --release --target "$target" \
    -Zbuild-std=std,panic_abort,panic_unwind,test)

# Cargo may rewrite a lock it finds stale; this one must stay what was
# committed, or the std built is not the one reviewed.
cmp -s "$here/std-1.63/Cargo.lock" "$root/Cargo.lock" || {
    echo "build-std: cargo changed the std lock file; update scripts/std-1.63/Cargo.lock deliberately:" >&2
    diff "$here/std-1.63/Cargo.lock" "$root/Cargo.lock" >&2 || true
    exit 1
}

rm -rf "$libdir"
mkdir -p "$libdir"
cp "$dir/target/$target/release/deps/"*.rlib "$libdir/"
rm -f "$libdir"/libsysroot_probe-*.rlib
# The windows-gnu targets link every program and DLL between these two
# objects (unwinding frame registration), which cargo does not build.
case $target in
*-windows-gnu)
    for part in rsbegin rsend; do
        RUSTC_BOOTSTRAP=1 "$rustc" --target "$target" --emit=obj -O -o "$libdir/$part.o" \
            "$rust_src/library/rtstartup/$part.rs"
    done
    ;;
esac
# Cargo's build tree is ~350 MB and each build starts from scratch anyway.
rm -rf "$dir/target"
echo "build-std: std for $target in $dir/sysroot"
