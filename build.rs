//! Generates include/mapix.h from the Rust source with cbindgen.
//!
//! The header always goes to `$OUT_DIR/mapix.h`, which the `header_is_current`
//! test compares with the committed `include/mapix.h`. `make header` sets
//! `MAPI32_WRITE_HEADER=1` to write the committed file itself.
//!
//! On ELF targets it also gives libmapi32.so its SONAME, libmapi32.so.<abi-major>
//! (Cargo.toml's `[package.metadata.mapi32]`): cargo sets none for a cdylib.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for input in ["src/scode.rs", "src/ffi.rs", "cbindgen.toml", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={input}");
    }
    println!("cargo:rerun-if-env-changed=MAPI32_WRITE_HEADER");
    // The C harness in tests/c_harness.rs compiles for the same target.
    println!("cargo:rustc-env=MAPI32_TARGET={}", env::var("TARGET").expect("cargo sets TARGET"));

    set_soname(&manifest_dir);

    let header = generate_header(&manifest_dir, &out_dir);
    fs::write(out_dir.join("mapix.h"), &header).expect("write $OUT_DIR/mapix.h");
    if env::var_os("MAPI32_WRITE_HEADER").map_or(false, |v| v == "1") {
        fs::write(manifest_dir.join("include/mapix.h"), &header).expect("write include/mapix.h");
    }
}

/// Links the cdylib with `-soname libmapi32.so.<abi-major>`, so that programs
/// record that name (DT_NEEDED) and keep working across compatible updates.
///
/// Only on ELF targets, whose linkers (GNU ld, gold, lld, mold) all take
/// `-soname`. No version script is passed for the exports: rustc already
/// gives the linker its own, which names every `#[no_mangle]` item global and
/// hides the rest (Rust's internals included), and a second script's
/// `local: *` cannot hide a name the first one lists (tried with GNU ld 2.40).
/// `make exports-check` holds the result to the committed exports.txt instead.
fn set_soname(manifest_dir: &Path) {
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let elf = ["linux", "android", "freebsd", "netbsd", "openbsd", "dragonfly"];
    if !elf.contains(&target_os.as_str()) {
        return;
    }
    let soname = format!("libmapi32.so.{}", abi_major(manifest_dir));
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    // tests/c_harness.rs links the C suite against the cdylib under this name.
    println!("cargo:rustc-env=MAPI32_SONAME={soname}");
}

/// `abi-major` from Cargo.toml's `[package.metadata.mapi32]`; the Makefile
/// reads the same line.
fn abi_major(manifest_dir: &Path) -> u32 {
    let manifest = fs::read_to_string(manifest_dir.join("Cargo.toml")).expect("read Cargo.toml");
    manifest
        .lines()
        .find_map(|line| line.strip_prefix("abi-major")?.trim_start().strip_prefix('=')?.trim().parse().ok())
        .expect("Cargo.toml sets abi-major = <number> in [package.metadata.mapi32]")
}

fn generate_header(manifest_dir: &Path, out_dir: &Path) -> Vec<u8> {
    let config = cbindgen::Config::from_file(manifest_dir.join("cbindgen.toml")).expect("read cbindgen.toml");
    // cbindgen only emits `extern "C"` functions. The exports are
    // `extern "system"`, which is the C convention on every target this
    // header supports (it refuses 32-bit Windows), so give cbindgen a copy
    // that spells the ABI its way.
    let ffi = fs::read_to_string(manifest_dir.join("src/ffi.rs")).expect("read src/ffi.rs");
    let ffi_for_cbindgen = out_dir.join("ffi_for_cbindgen.rs");
    fs::write(&ffi_for_cbindgen, ffi.replace("extern \"system\"", "extern \"C\"")).expect("write ffi copy");

    let mut header = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(manifest_dir.join("src/scode.rs"))
        .with_src(ffi_for_cbindgen)
        .generate()
        .expect("cbindgen could not generate mapix.h")
        .write(&mut header);
    header
}
