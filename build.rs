//! Generates include/mapix.h from the Rust source with cbindgen.
//!
//! The header always goes to `$OUT_DIR/mapix.h`, which the `header_is_current`
//! test compares with the committed `include/mapix.h`. `make header` sets
//! `MAPI32_WRITE_HEADER=1` to write the committed file itself.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for input in ["src/scode.rs", "src/ffi.rs", "cbindgen.toml"] {
        println!("cargo:rerun-if-changed={input}");
    }
    println!("cargo:rerun-if-env-changed=MAPI32_WRITE_HEADER");
    // The C harness in tests/c_harness.rs compiles for the same target.
    println!("cargo:rustc-env=MAPI32_TARGET={}", env::var("TARGET").expect("cargo sets TARGET"));

    let header = generate_header(&manifest_dir, &out_dir);
    fs::write(out_dir.join("mapix.h"), &header).expect("write $OUT_DIR/mapix.h");
    if env::var_os("MAPI32_WRITE_HEADER").map_or(false, |v| v == "1") {
        fs::write(manifest_dir.join("include/mapix.h"), &header).expect("write include/mapix.h");
    }
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
