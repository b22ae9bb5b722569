//! Runs the C conformance suite (c_tests/conformance.c) from `cargo test`:
//! the `cc` crate compiles it against the libmapi32.so that cargo built for
//! this test run, through the generated header, and the suite must pass.

use std::path::{Path, PathBuf};
use std::process::Command;

/// target/<profile>/deps, where this test binary lives. `cargo test` builds
/// the cdylib there for this run; only `cargo build` copies it one level up,
/// so the copy in target/<profile> may be stale.
fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().expect("target/<profile>/deps").to_path_buf()
}

#[test]
fn c_conformance_suite_passes() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib_dir = deps_dir();
    assert!(lib_dir.join("libmapi32.so").exists(), "cargo did not build the cdylib in {}", lib_dir.display());
    let program = Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance");
    let run_dir = soname_link_dir(&lib_dir);

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
        // Old-style DT_RPATH outranks LD_LIBRARY_PATH, on which cargo puts
        // target/<profile> and its possibly stale copy of the library.
        .arg(format!("-Wl,--disable-new-dtags,-rpath,{}", run_dir.display()))
        .status()
        .expect("run the C compiler");
    assert!(status.success(), "compiling c_tests/conformance.c failed");

    let status = Command::new(&program).env("LD_LIBRARY_PATH", &run_dir).status().expect("run the C conformance suite");
    assert!(status.success(), "C conformance suite failed ({status}); its output is above");
}

/// A directory where the program finds the cdylib under its SONAME
/// (libmapi32.so.1, set by build.rs on ELF targets), the name the linker
/// records in it; cargo writes only libmapi32.so.
fn soname_link_dir(lib_dir: &Path) -> PathBuf {
    let soname = match option_env!("MAPI32_SONAME") {
        Some(soname) => soname,
        None => return lib_dir.to_path_buf(),
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("soname");
    std::fs::create_dir_all(&dir).expect("create the soname link directory");
    let link = dir.join(soname);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(lib_dir.join("libmapi32.so"), &link).expect("link the cdylib under its soname");
    dir
}
