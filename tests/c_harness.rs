//! Runs the C conformance suite (c_tests/conformance.c) from `cargo test`:
//! the `cc` crate compiles it against the libmapi32.so that cargo built for
//! this test run, through the generated header, and the suite must pass.

use std::path::{Path, PathBuf};
use std::process::Command;

/// target/<profile>: the test binary runs from target/<profile>/deps.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps").to_path_buf()
}

#[test]
fn c_conformance_suite_passes() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib_dir = profile_dir();
    assert!(lib_dir.join("libmapi32.so").exists(), "cargo did not build the cdylib in {}", lib_dir.display());
    let program = Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance");

    let compiler = cc::Build::new()
        .target(env!("MAPI32_TARGET"))
        .host(env!("MAPI32_TARGET"))
        .opt_level(1)
        .cargo_metadata(false)
        .get_compiler();
    let status = compiler
        .to_command()
        .args(["-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-pthread"])
        .arg("-I")
        .arg(manifest.join("include"))
        .arg(manifest.join("c_tests/conformance.c"))
        .arg("-o")
        .arg(&program)
        .arg(format!("-L{}", lib_dir.display()))
        .arg("-lmapi32")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .status()
        .expect("run the C compiler");
    assert!(status.success(), "compiling c_tests/conformance.c failed");

    let status = Command::new(&program).status().expect("run the C conformance suite");
    assert!(status.success(), "C conformance suite failed ({status}); its output is above");
}
